"""The segmentation engines this project ships, by name, and the options that build them.

Engines take these explicit options, never the settings: `agent/parts.py` turns the settings
into `EngineOptions` once, at the top (docs/architecture.md, layers). Every engine module is
imported on first use only, so naming the engines (for `--help`) or choosing `lung-threshold`
never pays for importing torch and MONAI (monai-bundle) or the HTTP and NIfTI stack
(medimageparse).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tools.http.config import RetryPolicy
from tools.segmentation.base import EngineError, SegmentationEngine

LUNG_THRESHOLD = "lung-threshold"
MONAI_BUNDLE = "monai-bundle"
MEDIMAGEPARSE = "medimageparse"

EngineName = Literal["lung-threshold", "medimageparse", "monai-bundle"]
"""An engine name as a type: the planner's tool arguments accept only these (tests pin it to the catalog)."""


class MedImageParseOptions(BaseModel):
    """The MedImageParse endpoint: its scoring URL and key, batching, timeout, retries and 2D/3D mode."""

    model_config = ConfigDict(frozen=True)

    url: str | None = None
    key: SecretStr | None = None
    batch_size: int = Field(default=8, ge=1, description="slices per scoring request")
    timeout_s: float = Field(default=60.0, gt=0, description="per scoring request")
    mode: Literal["2d", "3d"] = "2d"
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class EngineOptions(BaseModel):
    """What the engines need to be built: the MONAI bundle and torch device, the MedImageParse endpoint."""

    model_config = ConfigDict(frozen=True)

    monai_bundle_dir: Path | None = None
    monai_bundle_sha256: str | None = Field(default=None, description="the bundle loads only if its sha256 is this")
    trusted_bundle_dir: Path | None = Field(default=None, description="... or if it lies under this directory")
    torch_device: str | None = Field(default=None, description="cpu, cuda, cuda:1; None: cuda when present")
    medimageparse: MedImageParseOptions = Field(default_factory=MedImageParseOptions)


def _lung_threshold(options: EngineOptions) -> SegmentationEngine:
    from tools.segmentation.lung_threshold import LungThresholdEngine

    return LungThresholdEngine()


def _monai_bundle(options: EngineOptions) -> SegmentationEngine:
    from tools.segmentation.monai_bundle import MonaiBundleEngine

    return MonaiBundleEngine(
        options.monai_bundle_dir,
        options.torch_device,
        sha256=options.monai_bundle_sha256,
        trusted_dir=options.trusted_bundle_dir,
    )


def _medimageparse(options: EngineOptions) -> SegmentationEngine:
    from tools.segmentation.medimageparse.engine import MedImageParseEngine

    endpoint = options.medimageparse
    if not endpoint.url:
        raise EngineError(
            "the medimageparse engine needs the endpoint's scoring URL: set IMAGING_AGENT_MEDIMAGEPARSE_URL "
            "and IMAGING_AGENT_MEDIMAGEPARSE_KEY (see .env.example)."
        )
    return MedImageParseEngine(
        endpoint.url,
        endpoint.key.get_secret_value() if endpoint.key else None,
        batch_size=endpoint.batch_size,
        timeout_s=endpoint.timeout_s,
        retry=endpoint.retry,
        mode=endpoint.mode,
    )


_BUILDERS: dict[str, Callable[[EngineOptions], SegmentationEngine]] = {
    LUNG_THRESHOLD: _lung_threshold,
    MONAI_BUNDLE: _monai_bundle,
    MEDIMAGEPARSE: _medimageparse,
}


# What each engine can read. The built-in engines threshold and learn Hounsfield units of a CT;
# MedImageParse reads CT and MR slices and chest radiographs (its prompt table says which targets on which).
ENGINE_MODALITIES: dict[str, frozenset[str]] = {
    LUNG_THRESHOLD: frozenset({"CT"}),
    MONAI_BUNDLE: frozenset({"CT"}),
    MEDIMAGEPARSE: frozenset({"CT", "DX", "CR", "MR"}),
}


def check_engine_modality(name: str, modality: str, series_instance_uid: str) -> None:
    """Refuse, before any work, an engine that cannot read this modality; the message says which can.

    An engine this catalog does not ship (a test's, say) is not checked here; `EngineCatalog.get`
    refuses names it does not know.

    Raises:
        EngineError: `name` does not read `modality`.
    """
    wanted = modality.upper()
    if name not in ENGINE_MODALITIES or wanted in ENGINE_MODALITIES[name]:
        return
    able = [engine for engine, modalities in sorted(ENGINE_MODALITIES.items()) if wanted in modalities]
    raise EngineError(
        f"engine {name} does not read {wanted or 'this modality'} (series {series_instance_uid}): it reads "
        f"{', '.join(sorted(ENGINE_MODALITIES.get(name, frozenset())))}. "
        + (f"Use {' or '.join(able)} for it." if able else f"No engine of this project reads {wanted} yet.")
    )


def engine_names() -> list[str]:
    """The names of the engines that ship with the project, sorted."""
    return sorted(_BUILDERS)


class UnknownEngineError(EngineError, ValueError):
    """An engine name that is not in the catalog; the message lists the known ones."""


def check_engine_name(name: str) -> str:
    """`name` when the catalog has such an engine.

    Checked before a job starts: the name becomes part of the job's FHIR Task identifier and
    of every derived UID, so a made-up name must never get that far.

    Raises:
        UnknownEngineError: the message lists the known engines.
    """
    if name not in _BUILDERS:
        raise UnknownEngineError(f"unknown segmentation engine {name!r}. Available engines: {', '.join(engine_names())}.")
    return name


class EngineCatalog:
    """Builds engines by name from one set of options; each `get` builds a fresh engine."""

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()

    def names(self) -> list[str]:
        return engine_names()

    def get(self, name: str) -> SegmentationEngine:
        """The engine called `name`.

        Raises:
            EngineError: no engine has that name (the message lists the known ones), or the
                engine's options are incomplete (the message says which setting to set).
        """
        return _BUILDERS[check_engine_name(name)](self.options)
