"""The plain script a user might write instead of `imaging-agent contour` (issue 11's baseline).

    .venv/bin/python benchmarks/baseline_contour.py DICOM_DIR OUT_FILE

pydicom read, a Hounsfield threshold, the two largest air components that do not touch the
volume's border, hole filling slice by slice, and rt-utils writing one ROI "Lungs". No SEG, no
SR, no previews, no geometry checks, no QA: it is what `bench_contour.py` times our command
against, deliberately written the straightforward way, not tuned. rt-utils is a dev-only
dependency, used only by the benchmarks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
from rt_utils import RTStructBuilder
from scipy import ndimage

AIR_HU = -400  # lungs and outside air are below this; soft tissue, fluid and bone are above


def read_volume(folder: Path) -> tuple[np.ndarray, list[str]]:
    """HU volume (slices, rows, columns) sorted along the slice normal, and each slice's SOP Instance UID."""
    slices = [pydicom.dcmread(path) for path in sorted(folder.iterdir()) if path.is_file()]
    normal = np.cross(*np.reshape(np.asarray(slices[0].ImageOrientationPatient, dtype=float), (2, 3)))
    slices.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    volume = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices]
    )
    return volume, [str(ds.SOPInstanceUID) for ds in slices]


def lungs(volume: np.ndarray) -> np.ndarray:
    """The two largest air components not touching the image border, holes filled on each slice.

    Only the in-plane border: the air around the patient touches it, while the trachea leaves
    through the first or last slice and would take the lungs connected to it along.
    """
    labels, _ = ndimage.label(volume < AIR_HU)
    border = np.unique(np.concatenate([labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()]))
    sizes = np.bincount(labels.ravel())
    sizes[border] = 0
    sizes[0] = 0
    largest = np.argsort(sizes)[-2:]
    mask = np.isin(labels, largest[sizes[largest] > 0])
    return np.stack([ndimage.binary_fill_holes(plane) for plane in mask])


def main(folder: Path, out: Path) -> None:
    volume, uids = read_volume(folder)
    mask = lungs(volume)
    rtstruct = RTStructBuilder.create_new(dicom_series_path=str(folder))
    # rt-utils wants (rows, columns, slices) in its own slice order: match it by SOP Instance UID.
    order = {uid: k for k, uid in enumerate(uids)}
    planes = [mask[order[str(ds.SOPInstanceUID)]] for ds in rtstruct.series_data]
    rtstruct.add_roi(mask=np.stack(planes, axis=-1), name="Lungs", color=[0, 151, 206])
    rtstruct.save(str(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
