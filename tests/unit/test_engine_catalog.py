"""The engine catalog: names, options from the settings, lazy imports, and the engine list in --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.parts import engine_catalog
from agent.settings import Settings
from tools.http import RetryPolicy
from tools.segmentation.base import EngineError
from tools.segmentation.catalog import EngineCatalog, EngineOptions, MedImageParseOptions, engine_names

pytestmark = pytest.mark.unit


def test_names_and_unknown_engine() -> None:
    assert engine_names() == ["lung-threshold", "medimageparse", "monai-bundle"]
    assert EngineCatalog().names() == engine_names()
    with pytest.raises(EngineError, match="unknown segmentation engine 'nnunet'.*lung-threshold, medimageparse, monai-bundle"):
        EngineCatalog().get("nnunet")


def test_each_engine_is_named_as_in_the_catalog() -> None:
    options = EngineOptions(medimageparse=MedImageParseOptions(url="https://mip.example.org/score"))
    catalog = EngineCatalog(options)
    assert catalog.get("lung-threshold").name == "lung-threshold"
    assert catalog.get("medimageparse").name == "medimageparse"
    with pytest.raises(EngineError, match="IMAGING_AGENT_MONAI_BUNDLE_DIR"):
        catalog.get("monai-bundle")


def test_settings_give_the_engine_options(tmp_path: Path) -> None:
    settings = Settings(
        monai_bundle_dir=tmp_path, torch_device="cpu", medimageparse_url="https://mip.example.org/score",
        medimageparse_key="k", medimageparse_batch_size=4, medimageparse_timeout_s=12.5, medimageparse_mode="3d",
        http_retry_attempts=2, monai_bundle_sha256="ab" * 32, trusted_bundle_dir=tmp_path / "vetted", _env_file=None,
    )
    options = settings.engine_options()
    assert (options.monai_bundle_dir, options.torch_device) == (tmp_path, "cpu")
    assert (options.monai_bundle_sha256, options.trusted_bundle_dir) == ("ab" * 32, tmp_path / "vetted")
    mip = options.medimageparse
    assert (mip.url, mip.batch_size, mip.timeout_s, mip.mode) == ("https://mip.example.org/score", 4, 12.5, "3d")
    assert mip.key is not None and mip.key.get_secret_value() == "k"
    assert mip.retry == settings.retry_policy() and mip.retry.attempts == 2
    assert engine_catalog(settings).options == options
    assert MedImageParseOptions().retry == RetryPolicy()


def test_choosing_lung_threshold_imports_neither_torch_nor_the_http_engine() -> None:
    code = (
        "import sys; from tools.segmentation.catalog import EngineCatalog; EngineCatalog().get('lung-threshold'); "
        "print(sorted(m for m in ('torch', 'monai', 'nibabel', 'tools.segmentation.medimageparse') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["contour", "process"])
def test_help_lists_the_engines(command: str) -> None:
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "lung-threshold, medimageparse, monai-bundle" in shown.output
