"""`imaging-agent contour` end to end on a synthetic phantom, offline (no server).

Checked: every requested file is written, summary.json's hashes are those of the files and
its volumes match the phantom's exact lungs; `--formats` limits the output; bad input ends
with a clear message, a non-zero exit, and neither the output folder nor its `.NAME.partial`
sibling left behind (a pre-existing output folder is left exactly as it was).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

import tools.results.dicom_objects as dicom_objects_module
from agent.cli import app
from agent.settings import get_settings
from tests.dicom_checks import dciodvfy_errors
from tools.phantom import Phantom, PhantomSpec, make_phantom, write_phantom
from tools.results.common import ResultBuildError

pytestmark = pytest.mark.unit

SPEC = PhantomSpec(slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0)
# A second, unrelated series for the "two series in one folder" case: small, so it is cheap.
OTHER_SPEC = PhantomSpec(slices=12, rows=64, columns=64, seed=1, patient_id="PHANTOM-0002")
ALL_FILES = {"rtstruct.dcm", "seg.dcm", "sr.dcm", "report.txt", "summary.json"}


@dataclass
class Written:
    phantom: Phantom
    directory: Path
    files: list[Path]


@dataclass
class Run:
    result: Result
    out: Path
    summary: dict[str, Any]


@pytest.fixture(autouse=True)
def default_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The built-in engine as the default, whatever a developer's `.env` says."""
    monkeypatch.setenv("IMAGING_AGENT_DEFAULT_ENGINE", "lung-threshold")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    phantom = make_phantom(SPEC)
    directory = tmp_path_factory.mktemp("phantom") / "ct"
    return Written(phantom, directory, write_phantom(phantom, directory))


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["contour", *map(str, args)])


def flat(text: str) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(text.split())


def partial_of(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(result: Result, out: Path, *phrases: str) -> None:
    """A clean refusal: a handled exit (no traceback), non-zero, the reason named, no files."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    text = flat(result.output)
    assert text.startswith("error:"), text
    for phrase in phrases:
        assert phrase in text, text
    assert not out.exists(), sorted(out.rglob("*"))
    assert not partial_of(out).exists()


@pytest.fixture(scope="module")
def full_run(written: Written, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    out = tmp_path_factory.mktemp("contour") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGING_AGENT_DEFAULT_ENGINE", "lung-threshold")
        get_settings.cache_clear()
        result = invoke(written.directory, "-o", out)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    yield Run(result, out, json.loads((out / "summary.json").read_text()))


# ---------------------------------------------------------------- a full run


def test_writes_every_output(full_run: Run) -> None:
    out = full_run.out
    assert {p.name for p in out.iterdir() if p.is_file()} == ALL_FILES
    pngs = sorted(p.name for p in (out / "previews").iterdir())
    assert pngs == ["axial_1.png", "axial_2.png", "axial_3.png", "coronal.png"]
    for name in pngs:
        with Image.open(out / "previews" / name) as image:
            assert image.format == "PNG" and min(image.size) >= 64
    assert {p.name for p in out.parent.iterdir()} == {"out"}, "the .out.partial folder was left behind"
    assert "Left lung" in full_run.result.output and "Right lung" in full_run.result.output


def test_summary_hashes_and_uids_match_the_files(full_run: Run, written: Written) -> None:
    summary = full_run.summary
    objects = {o["kind"]: o for o in summary["objects"]}
    assert set(objects) == {"RTSTRUCT", "SEG", "SR"}
    for kind, name in (("RTSTRUCT", "rtstruct.dcm"), ("SEG", "seg.dcm"), ("SR", "sr.dcm")):
        path = full_run.out / name
        entry = objects[kind]
        assert Path(entry["path"]) == path
        assert entry["sha256"] == sha256_of(path)
        assert entry["size_bytes"] == path.stat().st_size
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == entry["sop_instance_uid"]
        assert ds.SOPClassUID == entry["sop_class_uid"]
        assert ds.StudyInstanceUID == written.phantom.study_instance_uid == entry["study_instance_uid"]
        assert ds.SeriesInstanceUID != written.phantom.series_instance_uid
    assert summary["series_instance_uid"] == written.phantom.series_instance_uid
    assert [Path(p) for p in summary["previews"]] == sorted((full_run.out / "previews").iterdir())
    assert Path(summary["summary_path"]) == full_run.out / "summary.json"
    assert Path(summary["report_path"]) == full_run.out / "report.txt"
    assert summary["engine"] == "lung-threshold"
    assert summary["seconds"]["total"] >= summary["seconds"]["segment"] > 0


def test_summary_volumes_match_the_phantom(full_run: Run, written: Written) -> None:
    voxel_ml = SPEC.pixel_spacing_mm**2 * SPEC.slice_thickness_mm / 1000.0
    truth = {
        "left-lung": float(written.phantom.left_lung.sum()) * voxel_ml,
        "right-lung": float(written.phantom.right_lung.sum()) * voxel_ml,
    }
    found = {s["key"]: s for s in full_run.summary["structures"]}
    assert set(found) == set(truth)
    for key, expected in truth.items():
        measured = found[key]["measurements"]
        assert 1000.0 < expected < 4000.0, key  # the phantom itself is adult-sized at this spacing
        assert measured["volume_ml"] == pytest.approx(expected, rel=0.05), key
        assert measured["volume_ml"] == pytest.approx(measured["voxel_count"] * voxel_ml, rel=1e-6), key
        assert -950.0 < measured["mean_hu"] < -600.0, key
    assert found["left-lung"]["roi_name"] == "Lung_L" and found["right-lung"]["roi_name"] == "Lung_R"
    report = (full_run.out / "report.txt").read_text()
    assert "Left lung" in report and "Right lung" in report


@pytest.mark.parametrize("name", ["rtstruct.dcm", "seg.dcm", "sr.dcm"])
def test_dicom_outputs_pass_dciodvfy(full_run: Run, name: str) -> None:
    assert dciodvfy_errors(full_run.out / name) == []


def test_same_input_gives_the_same_dicom_uids(full_run: Run, written: Written, tmp_path: Path) -> None:
    """Derived UIDs are deterministic, so a rerun (e.g. after a crash) cannot duplicate objects."""
    out = tmp_path / "again"
    result = invoke(written.directory, "-o", out, "--formats", "rtstruct,seg,sr,json")
    assert result.exit_code == 0, result.output
    again = {o["kind"]: o["sop_instance_uid"] for o in json.loads((out / "summary.json").read_text())["objects"]}
    first = {o["kind"]: o["sop_instance_uid"] for o in full_run.summary["objects"]}
    assert again == first


# ---------------------------------------------------------------- --formats and --overwrite


def test_formats_limit_the_outputs(written: Written, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(written.directory, "-o", out, "--formats", "rtstruct,json")
    assert result.exit_code == 0, result.output
    # report.txt is not a format choice: the text report is always written with the results.
    assert {p.name for p in out.iterdir()} == {"rtstruct.dcm", "summary.json", "report.txt"}
    summary = json.loads((out / "summary.json").read_text())
    assert [o["kind"] for o in summary["objects"]] == ["RTSTRUCT"]
    assert summary["objects"][0]["sha256"] == sha256_of(out / "rtstruct.dcm")
    assert summary["previews"] == []
    assert not partial_of(out).exists()


def test_overwrite_replaces_a_non_empty_output(written: Written, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("from an earlier run")
    result = invoke(written.directory, "-o", out, "--formats", "rtstruct,json", "--overwrite")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"rtstruct.dcm", "summary.json", "report.txt"}
    assert not partial_of(out).exists()


# ---------------------------------------------------------------- refusals leave nothing behind


def test_folder_without_dicom(tmp_path: Path) -> None:
    source = tmp_path / "notes"
    source.mkdir()
    (source / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    assert_refused(invoke(source, "-o", out), out, "No DICOM files found", str(source))


def test_missing_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_refused(invoke(tmp_path / "nowhere", "-o", out), out, "does not exist")


def test_folder_with_two_series(written: Written, tmp_path: Path) -> None:
    source = tmp_path / "mixed"
    shutil.copytree(written.directory, source / "a")
    other = make_phantom(OTHER_SPEC)
    write_phantom(other, source / "b")
    out = tmp_path / "out"
    assert_refused(
        invoke(source, "-o", out),
        out,
        "holds 2 series",
        f"{written.phantom.series_instance_uid} ({SPEC.slices} files)",
        f"{other.series_instance_uid} ({OTHER_SPEC.slices} files)",
    )


def test_series_with_a_missing_middle_slice(written: Written, tmp_path: Path) -> None:
    source = tmp_path / "gap"
    shutil.copytree(written.directory, source)
    sorted(source.iterdir())[SPEC.slices // 2].unlink()
    out = tmp_path / "out"
    assert_refused(invoke(source, "-o", out), out, "missing-slices", written.phantom.series_instance_uid)


def test_unknown_engine(written: Written, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_refused(
        invoke(written.directory, "-o", out, "--engine", "no-such-engine"),
        out,
        "unknown segmentation engine 'no-such-engine'",
        "lung-threshold",
    )


def test_unknown_format(written: Written, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(written.directory, "-o", out, "--formats", "rtstruct,pdf")
    assert_refused(result, out, "unknown format(s) pdf", "rtstruct, seg, sr, png, json")


def test_sr_without_seg(written: Written, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_refused(invoke(written.directory, "-o", out, "--formats", "sr,json"), out, "ask for 'seg' too")


def test_existing_output_is_kept_without_overwrite(written: Written, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    result = invoke(written.directory, "-o", out)
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "exists and is not empty" in flat(result.output) and "--overwrite" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "earlier work"
    assert not partial_of(out).exists()


def test_a_writer_failing_midway_leaves_nothing(
    written: Written, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RTSTRUCT is already on disk (in the partial folder) when the SEG writer fails."""

    def failing_seg(*args: object, **kwargs: object) -> None:
        raise ResultBuildError("SEG writer failed on purpose (test)")

    monkeypatch.setattr(dicom_objects_module, "seg_dataset", failing_seg)
    out = tmp_path / "out"
    assert_refused(invoke(written.directory, "-o", out), out, "SEG writer failed on purpose")
    assert list(tmp_path.iterdir()) == []


def test_refusal_keeps_an_existing_output_when_overwriting(
    written: Written, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite replaces the old results only once the new ones are complete."""

    def failing_seg(*args: object, **kwargs: object) -> None:
        raise ResultBuildError("SEG writer failed on purpose (test)")

    monkeypatch.setattr(dicom_objects_module, "seg_dataset", failing_seg)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    result = invoke(written.directory, "-o", out, "--overwrite")
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not partial_of(out).exists()



def test_output_overlapping_the_input_is_refused_and_the_ct_kept(written: Written, tmp_path: Path) -> None:
    source = tmp_path / "ct"
    shutil.copytree(written.directory, source)
    before = {p.name: sha256_of(p) for p in source.iterdir()}
    for out in (source, source / "out", tmp_path):
        result = invoke(source, "-o", out, "--overwrite")
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
        assert "overlaps the input" in flat(result.output)
    assert {p.name: sha256_of(p) for p in source.iterdir()} == before


def test_output_that_is_a_file_is_refused(written: Written, tmp_path: Path) -> None:
    out = tmp_path / "a-file"
    out.write_text("keep me")
    result = invoke(written.directory, "-o", out)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert "is a file" in flat(result.output) and out.read_text() == "keep me"


def test_brackets_in_paths_are_printed_as_written(tmp_path: Path) -> None:
    missing = tmp_path / "[scan]"
    result = invoke(missing, "-o", tmp_path / "out")
    assert "[scan]" in flat(result.output)


def test_fallback_engines_apply_to_contour(written: Written, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # medimageparse without an endpoint cannot run; the configured fallback contours instead, and says why.
    monkeypatch.setenv("IMAGING_AGENT_FALLBACK_ENGINES", '["lung-threshold"]')
    monkeypatch.delenv("IMAGING_AGENT_MEDIMAGEPARSE_URL", raising=False)
    get_settings.cache_clear()
    out = tmp_path / "out"
    result = invoke(written.directory, "-o", out, "--engine", "medimageparse", "--formats", "rtstruct")
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "engine not used" in text and "medimageparse" in text
    assert (out / "rtstruct.dcm").is_file()


def test_summary_names_the_ct_folder_and_view_refuses_what_it_cannot_show(
    full_run: Run, written: Written, tmp_path: Path
) -> None:
    """`imaging-agent view` finds the CT through summary.json; a folder it cannot show is refused with what to do."""
    assert full_run.summary["source_dir"] == str(written.directory.resolve())
    not_a_result = CliRunner().invoke(app, ["view", str(tmp_path), "--no-open"])
    assert not_a_result.exit_code == 1, not_a_result.output
    assert "summary.json" in flat(not_a_result.output) and "imaging-agent contour" in flat(not_a_result.output)
    wrong_ct = CliRunner().invoke(app, ["view", str(full_run.out), "--ct", str(tmp_path), "--no-open"])
    assert wrong_ct.exit_code == 1, wrong_ct.output
    assert str(tmp_path) in flat(wrong_ct.output) and "--ct DICOM_DIR" in flat(wrong_ct.output)
