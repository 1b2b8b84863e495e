"""Engine `lung-threshold`: classical left/right lung segmentation of a CT volume, no weights.

Everything runs in a canonical view of the volume (axes superior, posterior, patient-left;
tools/imaging/orientation.py: axis swaps and flips only, so the masks map back voxel for
voxel), with sizes given in millimetres and converted per axis, so any pixel spacing, slice
order (head-first, feet-first) and axis-aligned orientation works; an oblique series is
viewed along the patient axes nearest to its own.
The topology is worked out on a working grid of about 1.4 mm (block means of the HU):

1. Air: below -400 HU, the midpoint between aerated lung (about -850) and soft tissue.
2. Body: the largest non-air 3D component, axial holes filled. Air outside it (room air,
   the table's hollow core, padding outside the reconstruction circle) is never lung.
3. Airways: the trachea is a small, round, pure-air section near the body's midline in the
   top slices; the airway tree is grown from it through lumen air (below the midpoint of
   air and lung), lowering that threshold if the growth leaks, and widened by its wall's
   partial volume. Removing it disconnects the lungs at the carina.
4. Lungs: the two largest remaining air regions that are not pure gas (bowel and stomach
   gas sit near -1000 HU, lung tissue does not). A region lying on both sides of the
   body's midline is two lungs touching at a junction line: it is split at its narrowest
   junction (watershed of the distance map from two cores). Further air regions of
   aerated lung tissue (median at most -750 HU, at most 15 % pure gas, at least 2 mL) within
   10 mm of a lung and on its side of the midline are parts of it cut off by disease (an
   apex behind scarring) and join it.
5. Full resolution, per lung: the threshold becomes the midpoint between the lungs' median
   HU and the tissue around them (the partial-volume boundary); a 3 mm closing takes in
   vessels touching the pleura; axial holes up to a vessel or bronchus section are filled,
   as are holes enclosed in 3D (nodules, masses). A larger axial hole is the dome of the
   diaphragm rising into a slice: it stays out where it is tissue or air, and is filled
   where its median is partial volume (between the midpoint and a quarter lung), the dome's
   cap seen through lung in a thick slice. Last, the edge as radiotherapy contours draw it:
   the in-plane ring (1 mm) of voxels just outside the midpoint that are still at least a
   quarter lung (below lung + 0.75 x (tissue - lung)); in-plane only, so it adds nothing
   where pixels are over 2 mm. Main bronchi and trachea stay out where they are not
   surrounded by lung.
6. Left and right come from patient coordinates via the DICOM geometry (LPS: larger x is
   the patient's left, PS3.3 C.7.6.2.1.1), never from array order.
7. A tumour enclosed by lung is lung here. When the study's RTSTRUCT in the PACS holds a GTV,
   the workflow takes it out of the lungs afterwards, as radiotherapy lung contours leave the
   GTV out (tools/segmentation/exclusion.py, for every engine alike); without one, QA
   (tools/segmentation/lung_qa.py) flags dense tissue in or next to a lung.

What the masks include and exclude, against RTOG/TG-263 lung definitions: parenchyma with
its small vessels, bronchi where lung surrounds them, nodules and masses enclosed by lung,
and dense lung wherever aerated lung surrounds it (in 3D) or a 3 mm closing reaches it;
excluded are the trachea and main bronchi, the mediastinum and hilar vessels outside the
lung's aerated edge, bowel and stomach gas, and the GTV when the study has one. Not handled by
shape: dense lung (atelectasis, consolidation) that touches the pleura over a wide front
stays out. QA announces it (``dense-excluded``, with its slices) where it fills a concavity
of the lung's surface, not where it lies as a flat dependent layer.

Against the clinic's manual contours of nsclc-lung1-001 (3 mm, head first; skipped manual
slice filled, benchmarks/bench_lungs.py): Dice left 0.980 / right 0.982, HD95 2.2 / 3.0 mm.

Confidence (per lung, in [0, 1]): the HU contrast at the lung's edge relative to that of
aerated lung against soft tissue, ``(median HU of the tissue 1-3 working voxels outside
the lung - median HU of the lung) / 800 HU``, clipped. Clean lung against chest wall and
mediastinum scores 0.95-1.0; lung whose edge runs through consolidation, effusion or
ground glass, where the threshold had to guess, scores lower. It is multiplied by 0.8
when joined lungs showed no narrowing and had to be cut at the body's midline.

Modules: grid.py (working grid, morphology), anatomy.py (steps 2-4), engine.py (steps 1, 5-7
and the confidence).
"""

from tools.segmentation.lung_threshold.engine import ENGINE_NAME, ENGINE_VERSION, LungThresholdEngine

__all__ = ["ENGINE_NAME", "ENGINE_VERSION", "LungThresholdEngine"]
