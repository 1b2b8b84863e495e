"""Registers the engines that ship with the project; import this module before `get_engine`.

`monai-bundle` is registered through a factory that imports it on first use, so that
choosing the default `lung-threshold` engine never pays for importing torch and MONAI.
"""

from __future__ import annotations

from agent.settings import Settings
from tools.segmentation.base import SegmentationEngine, register_engine
from tools.segmentation.lung_threshold import ENGINE_NAME as LUNG_THRESHOLD
from tools.segmentation.lung_threshold import LungThresholdEngine

MONAI_BUNDLE = "monai-bundle"
MEDIMAGEPARSE = "medimageparse"


def _lung_threshold(settings: Settings) -> SegmentationEngine:
    return LungThresholdEngine(settings)


def _monai_bundle(settings: Settings) -> SegmentationEngine:
    from tools.segmentation.monai_bundle import build_monai_bundle_engine

    return build_monai_bundle_engine(settings)


register_engine(LUNG_THRESHOLD, _lung_threshold)
register_engine(MONAI_BUNDLE, _monai_bundle)


def _medimageparse(settings: Settings) -> SegmentationEngine:
    from tools.segmentation.medimageparse import build_medimageparse_engine

    return build_medimageparse_engine(settings)


register_engine(MEDIMAGEPARSE, _medimageparse)
