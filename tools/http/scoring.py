"""One connection to an Azure AI Foundry (Azure ML) online scoring endpoint, with the project's retry loop.

MedImageParse, CXRReportGen and MedImageInsight are all served this way: a JSON body POSTed to the
scoring URI with the endpoint's key as a bearer token, 429 / 5xx / timeouts retried with backoff
and Retry-After (tools/http/retry.py). Each model's adapter builds its own bodies; this client only
carries them, counts them, and refuses a URL that would send pixels unencrypted off this machine.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tools.http.config import RetryPolicy
from tools.http.retry import RETRYABLE_STATUS, send_with_retry

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class EndpointError(ValueError):
    """A scoring URL that cannot be used; the message names the setting to fix."""


class ScoringError(RuntimeError):
    """The endpoint answered, but not with what the contract promises.

    ``row`` is the request row (0-based) the problem belongs to, None for the whole answer.
    """

    def __init__(self, detail: str, row: int | None = None) -> None:
        self.detail = detail
        self.row = row
        super().__init__(detail)


def check_endpoint(endpoint: str, setting: str) -> None:
    """Refuse a URL that is not http(s), or plain http to another machine.

    Raises:
        EndpointError: naming `setting`, the environment variable the URL came from.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(
            f"{setting} {endpoint!r} is not an http(s) URL; copy the scoring URI from the endpoint's Consume page "
            "in Azure AI Foundry."
        )
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise EndpointError(
            f"{setting} {endpoint!r} uses plain http to another machine; image pixels must travel encrypted. "
            "Use the https scoring URI."
        )


class ScoringClient:
    """POSTs JSON bodies to one scoring endpoint; counts requests and bytes sent, retries included."""

    def __init__(
        self, endpoint: str, key: str | None, *, timeout_s: float, retry: RetryPolicy, service: str, key_setting: str
    ) -> None:
        self.endpoint = endpoint
        self.retry = retry
        self.service = service
        self.key_setting = key_setting
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(timeout=timeout_s, headers=headers)
        self.requests_sent = 0
        self.bytes_sent = 0

    def __enter__(self) -> ScoringClient:
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

        response = send_with_retry(send, self.retry, self.service, self.endpoint)
        if response.status_code in (401, 403):
            raise ScoringError(
                f"HTTP {response.status_code}: the endpoint refused the key; check {self.key_setting} "
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
