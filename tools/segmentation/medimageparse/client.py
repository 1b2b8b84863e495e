"""The HTTP side of MedImageParse: one connection to the scoring endpoint, with the project's retry loop."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tools.http import RetryPolicy
from tools.http.retry import RETRYABLE_STATUS, send_with_retry
from tools.segmentation.base import EngineError
from tools.segmentation.medimageparse.wire import ScoringError

SERVICE = "MedImageParse endpoint"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def check_endpoint(endpoint: str) -> None:
    """Refuse a URL that would send pixels unencrypted off this machine."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineError(
            f"IMAGING_AGENT_MEDIMAGEPARSE_URL {endpoint!r} is not an http(s) URL; copy the scoring URI "
            "from the endpoint's Consume page in Azure AI Foundry."
        )
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise EngineError(
            f"IMAGING_AGENT_MEDIMAGEPARSE_URL {endpoint!r} uses plain http to another machine; image pixels "
            "must travel encrypted. Use the https scoring URI."
        )


class MedImageParseClient:
    """One connection to the scoring endpoint, with the project's retry policy."""

    def __init__(self, endpoint: str, key: str | None, *, timeout_s: float, retry: RetryPolicy) -> None:
        check_endpoint(endpoint)
        self.endpoint = endpoint
        self.retry = retry
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(timeout=timeout_s, headers=headers)
        self.requests_sent = 0
        self.bytes_sent = 0

    def __enter__(self) -> MedImageParseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def post(self, body: bytes) -> object:
        """POST one request body; the parsed JSON answer.

        Raises:
            ServiceUnavailableError: no usable answer after every retry (429, 5xx, timeouts).
            ScoringError: a non-retryable HTTP error, or an answer that is not JSON.
        """

        def send() -> httpx.Response:
            self.requests_sent += 1
            self.bytes_sent += len(body)
            return self._http.post(self.endpoint, content=body)

        response = send_with_retry(send, self.retry, SERVICE, self.endpoint)
        if response.status_code in (401, 403):
            raise ScoringError(
                f"HTTP {response.status_code}: the endpoint refused the key; check IMAGING_AGENT_MEDIMAGEPARSE_KEY "
                "(the endpoint's primary key in Azure AI Foundry)"
            )
        if response.status_code in RETRYABLE_STATUS:
            raise ScoringError(f"HTTP {response.status_code} after {self.retry.attempts} tries: {response.text[:300]}")
        if response.status_code >= 400:
            raise ScoringError(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError as exc:
            raise ScoringError(f"the answer is not JSON ({exc})") from exc

