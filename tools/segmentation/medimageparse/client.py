"""The HTTP side of MedImageParse: the shared scoring client (tools/http/scoring.py) with its names."""

from __future__ import annotations

from tools.http import RetryPolicy
from tools.http.scoring import EndpointError, ScoringClient
from tools.http.scoring import check_endpoint as check_scoring_endpoint
from tools.segmentation.base import EngineError

SERVICE = "MedImageParse endpoint"


def check_endpoint(endpoint: str) -> None:
    """Refuse a URL that would send pixels unencrypted off this machine (an EngineError, for the fallback chain)."""
    try:
        check_scoring_endpoint(endpoint, "IMAGING_AGENT_MEDIMAGEPARSE_URL")
    except EndpointError as exc:
        raise EngineError(str(exc)) from exc


class MedImageParseClient(ScoringClient):
    """One connection to the MedImageParse scoring endpoint, with the project's retry policy."""

    def __init__(self, endpoint: str, key: str | None, *, timeout_s: float, retry: RetryPolicy) -> None:
        check_endpoint(endpoint)
        super().__init__(
            endpoint, key, timeout_s=timeout_s, retry=retry, service=SERVICE, key_setting="IMAGING_AGENT_MEDIMAGEPARSE_KEY"
        )
