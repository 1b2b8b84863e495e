"""The lung engine against reference contours: Dice, HD95, mean surface distance, volumes, time,
and where the disagreement lies (missed and extra lung by HU band and by slice).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_lungs.py [--data DIR] [--case NAME ...]

Cases (under ../shared/data unless ``--data`` says otherwise; a missing one is skipped):
- nsclc-lung1-001: lung cancer CT, 3 mm, head first; reference = the clinic's MANUAL
  RTSTRUCT contours `Lung L` / `Lung R`, rasterised onto the CT grid with the project's
  even-odd pixel-centre rasteriser (tools/results/rtstruct.py ``rtstruct_masks``).
- totalsegmentator-example: lung bases at 3 mm isotropic (NIfTI); reference = the
  TotalSegmentator label map (automatic, not manual), lobes 10-11 left, 12-14 right.
- lidc-idri-0001: healthy-looking chest, feet first; no lung reference exists (LIDC marks
  nodules only), so only volumes and time are shown.

Surface metrics: tools/segmentation/metrics.py (true voxel spacing; HD95 the larger directed
95th percentile; MSD the symmetric mean). False negatives (reference lung the engine missed)
and false positives (engine lung outside the reference) are broken down by the CT's HU and
by slice, with each slice's patient z, so one sees what kind of tissue and which levels to fix.
A manual reference sometimes skips a slice (nsclc-lung1-001's `Lung L` at z = -552.5 mm):
such slices are filled by interpolation before scoring (``fill_missing_slices``) and named
in the output; the raw reference's Dice and HD95 are shown alongside.

The tables are printed and written to benchmarks/results/lungs.md (git-ignored).
Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tools.imaging.geometry import Geometry  # noqa: E402
from tools.imaging.orientation import array_axis_spacing  # noqa: E402
from tools.imaging.volume import Volume, assemble_volume, read_series_dir  # noqa: E402
from tools.segmentation.exclusion import Exclusion, without  # noqa: E402
from tools.segmentation.lung_threshold import ENGINE_VERSION, LungThresholdEngine  # noqa: E402
from tools.segmentation.metrics import agreement, fill_missing_slices  # noqa: E402
from tools.segmentation.qa import assess  # noqa: E402

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data"
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "lungs.md"
KEYS = ("left-lung", "right-lung")
# HU bands of the disagreement: pure air / aerated lung / dense lung (ground glass, partial
# volume) / soft tissue (atelectasis, consolidation, tumour, vessels) / contrast, bone.
HU_BANDS = ((-np.inf, -900.0), (-900.0, -500.0), (-500.0, -100.0), (-100.0, 100.0), (100.0, np.inf))
WORST_SLICES = 5
# NIfTI's RAS+ world to DICOM's LPS: flip x and y.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Case:
    name: str
    volume: Volume
    references: dict[str, np.ndarray]
    """per lung key, the reference mask on the volume's grid; empty when there is none"""
    reference_kind: str
    gtv: np.ndarray | None = None
    manual: bool = False
    """a hand-drawn reference: its skipped slices are filled before scoring (raw figures shown too)"""


# ---------------------------------------------------------------- cases


def _nsclc(folder: Path) -> Case:
    import pydicom

    from tools.results.rtstruct import rtstruct_masks

    volume = assemble_volume(read_series_dir(folder / "dicom"))
    masks = rtstruct_masks(pydicom.dcmread(folder / "rtstruct.dcm"), volume)
    return Case(
        name=folder.name,
        volume=volume,
        references={"left-lung": masks["Lung L"], "right-lung": masks["Lung R"]},
        reference_kind="manual RTSTRUCT (clinic)",
        gtv=masks.get("GTV-1"),
        manual=True,
    )


def _nifti_volume(path: Path) -> Volume:
    """A NIfTI CT as a Volume: array (k, j, i) from NIfTI's (i, j, k), geometry in LPS."""
    import nibabel as nib

    image = nib.load(path)
    affine = image.affine
    array = np.asarray(image.dataobj).astype(np.int16).transpose(2, 1, 0)
    columns = [RAS_TO_LPS @ affine[:3, axis] for axis in range(3)]
    geometry = Geometry(
        origin=tuple(float(v) for v in RAS_TO_LPS @ affine[:3, 3]),  # type: ignore[arg-type]
        spacing=tuple(float(np.linalg.norm(c)) for c in columns),  # type: ignore[arg-type]
        direction=tuple(tuple(float(v) for v in c / np.linalg.norm(c)) for c in columns),  # type: ignore[arg-type]
        shape=array.shape,  # type: ignore[arg-type]
    )
    return Volume(
        array=array, geometry=geometry, series_instance_uid=f"nifti:{path.name}", study_instance_uid="nifti",
        frame_of_reference_uid="nifti", modality="CT", sop_instance_uids=[f"{path.name}#{k}" for k in range(array.shape[0])],
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    )


def _totalseg(folder: Path) -> Case:
    import nibabel as nib

    volume = _nifti_volume(folder / "example_ct_sm.nii.gz")
    labels = np.asarray(nib.load(folder / "example_seg.nii.gz").dataobj).transpose(2, 1, 0)
    return Case(
        name=folder.name,
        volume=volume,
        references={"left-lung": np.isin(labels, (10, 11)), "right-lung": np.isin(labels, (12, 13, 14))},
        reference_kind="TotalSegmentator label map (automatic)",
    )


def _lidc(folder: Path) -> Case:
    volume = assemble_volume(read_series_dir(folder / "dicom"))
    return Case(name=folder.name, volume=volume, references={}, reference_kind="none (volumes and time only)")


LOADERS: dict[str, tuple[Callable[[Path], Case], str]] = {
    "nsclc-lung1-001": (_nsclc, "rtstruct.dcm"),
    "totalsegmentator-example": (_totalseg, "example_seg.nii.gz"),
    "lidc-idri-0001": (_lidc, "dicom"),
}


# ---------------------------------------------------------------- measuring


def _slice_z(volume: Volume) -> np.ndarray:
    """Patient z (mm) of each slice's centre."""
    n = volume.array.shape[0]
    ijk = np.array([[0.0, 0.0, float(k)] for k in range(n)])
    return volume.geometry.index_to_patient(ijk)[:, 2]


def _band_rows(hu: np.ndarray, missed: np.ndarray, extra: np.ndarray, voxel_ml: float) -> list[str]:
    rows = []
    for low, high in HU_BANDS:
        band = (hu >= low) & (hu < high)
        rows.append(
            f"| {_band_name(low, high)} | {np.count_nonzero(missed & band) * voxel_ml:.1f} "
            f"| {np.count_nonzero(extra & band) * voxel_ml:.1f} |"
        )
    return rows


def _band_name(low: float, high: float) -> str:
    if np.isinf(low):
        return f"< {high:.0f} HU"
    if np.isinf(high):
        return f">= {low:.0f} HU"
    return f"{low:.0f} to {high:.0f} HU"


def _worst_slices(missed: np.ndarray, extra: np.ndarray, z: np.ndarray, voxel_ml: float) -> str:
    """The slices with the most disagreement: 'z mm (k): -missed/+extra mL'."""
    fn = np.count_nonzero(missed, axis=(1, 2)) * voxel_ml
    fp = np.count_nonzero(extra, axis=(1, 2)) * voxel_ml
    worst = np.argsort(fn + fp)[::-1][:WORST_SLICES]
    return ", ".join(f"z {z[k]:.0f} mm (k {k}): -{fn[k]:.1f}/+{fp[k]:.1f}" for k in worst if fn[k] + fp[k] > 0)


def _run_case(case: Case, lines: list[str]) -> None:
    volume = case.volume
    started = time.perf_counter()
    result = LungThresholdEngine().segment(volume, ["lungs"])
    seconds = time.perf_counter() - started
    masks = {s.structure.key: s.mask for s in result.structures}
    spacing = array_axis_spacing(volume.geometry)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    shape = "x".join(str(n) for n in volume.array.shape)
    lines += [
        f"## {case.name}",
        "",
        f"{shape} voxels of {spacing[1]:.2f} x {spacing[2]:.2f} x {spacing[0]:.2f} mm; reference: {case.reference_kind}; "
        f"engine {ENGINE_VERSION}: {seconds:.2f} s.",
        "",
        "| lung | Dice | HD95 (mm) | MSD (mm) | raw Dice | raw HD95 (mm) | engine mL | reference mL | missed mL "
        "| extra mL | confidence |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    confidences = {s.structure.key: s.confidence for s in result.structures}
    details: list[str] = []
    z = _slice_z(volume)
    for key in KEYS:
        mask = masks[key]
        reference = case.references.get(key)
        if reference is None:
            lines.append(
                f"| {key} | - | - | - | - | - | {np.count_nonzero(mask) * voxel_ml:.0f} | - | - | - "
                f"| {confidences[key]:.3f} |"
            )
            continue
        raw = agreement(mask, reference, spacing)
        if case.manual:
            reference, gaps = fill_missing_slices(reference, spacing)
            if gaps:
                details += ["", f"{key}: reference slices skipped by hand and filled by interpolation: "
                            + ", ".join(f"k {k} (z {z[k]:.1f} mm)" for k in gaps)]
        a = agreement(mask, reference, spacing)
        missed, extra = reference & ~mask, mask & ~reference
        lines.append(
            f"| {key} | {a.dice:.4f} | {a.hd95_mm:.1f} | {a.msd_mm:.2f} | {raw.dice:.4f} | {raw.hd95_mm:.1f} "
            f"| {a.volume_ml:.0f} | {a.reference_ml:.0f} "
            f"| {np.count_nonzero(missed) * voxel_ml:.0f} | {np.count_nonzero(extra) * voxel_ml:.0f} "
            f"| {confidences[key]:.3f} |"
        )
        details += [
            "",
            f"{key}: disagreement by HU (mL)",
            "",
            "| HU band | missed | extra |",
            "|---|---|---|",
            *_band_rows(volume.array, missed, extra, voxel_ml),
            "",
            f"{key}: worst slices (-missed/+extra mL): {_worst_slices(missed, extra, z, voxel_ml)}",
        ]
    if case.gtv is not None:
        details += _minus_gtv(case, spacing)
        gtv_ml = np.count_nonzero(case.gtv) * voxel_ml
        inside = {key: np.count_nonzero(masks[key] & case.gtv) * voxel_ml for key in KEYS}
        in_reference = {key: np.count_nonzero(case.references[key] & case.gtv) * voxel_ml for key in KEYS}
        details += [
            "",
            f"GTV: {gtv_ml:.1f} mL, of which in the engine's left lung {inside['left-lung']:.1f} mL, right lung "
            f"{inside['right-lung']:.1f} mL (reference: {in_reference['left-lung']:.1f} / {in_reference['right-lung']:.1f} mL).",
        ]
    flags = assess(volume, result).all_flags()
    details += ["", "QA flags:", ""] + ([f"- `{f.code}` ({f.severity}): {f.message}" for f in flags] or ["- none"])
    lines += [*details, ""]


def _minus_gtv(case: Case, spacing: tuple[float, float, float]) -> list[str]:
    """The result with the GTV left out, as the workflow does when the study has one (tools/segmentation/
    exclusion.py), against the reference lungs minus the GTV (RT's "Lung - GTV")."""
    assert case.gtv is not None
    started = time.perf_counter()
    result = without(LungThresholdEngine().segment(case.volume, ["lungs"]), Exclusion(mask=case.gtv, source="GTV"), case.volume)
    seconds = time.perf_counter() - started
    rows = [
        "",
        f"With the GTV left out ({seconds:.2f} s), against the reference minus the GTV:",
        "",
        "| lung - GTV | Dice | HD95 (mm) | MSD (mm) |",
        "|---|---|---|---|",
    ]
    for item in result.structures:
        reference = case.references[item.structure.key]
        if case.manual:
            reference, _ = fill_missing_slices(reference, spacing)
        a = agreement(item.mask, reference & ~case.gtv, spacing)
        rows.append(f"| {item.structure.key} | {a.dice:.4f} | {a.hd95_mm:.1f} | {a.msd_mm:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the cases (../shared/data)")
    parser.add_argument("--case", action="append", choices=sorted(LOADERS), help="run only these cases")
    args = parser.parse_args(argv)
    lines = [
        f"# lung-threshold {ENGINE_VERSION} against reference lungs",
        "",
        f"{datetime.now().isoformat(timespec='seconds')}, Python {platform.python_version()}, {platform.machine()}.",
        "",
    ]
    for name in args.case or list(LOADERS):
        loader, needed = LOADERS[name]
        folder = args.data / name
        if not (folder / needed).exists():
            lines += [f"## {name}", "", f"skipped: {folder / needed} not found.", ""]
            continue
        _run_case(loader(folder), lines)
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
