"""One retry policy for every HTTP client in the project (FHIR, DICOMweb, model endpoints).

Retries 429, 5xx and transport errors (refused connection, timeout) with exponential
backoff, honouring ``Retry-After`` when the server sends one. Other 4xx answers are the
caller's mistake and are returned at once: retrying them only delays the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx

from tools.http.config import RetryPolicy

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class ServiceUnavailableError(RuntimeError):
    """The server could not be reached, or kept failing, after every retry."""

    def __init__(self, service: str, url: str, detail: str, attempts: int) -> None:
        self.service = service
        self.url = url
        self.detail = detail
        self.attempts = attempts
        super().__init__(
            f"{service} at {url} did not answer usefully after {attempts} tries: {detail}. "
            f"Check that the server is running and reachable (imaging-agent services status)."
        )


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _wait_s(policy: RetryPolicy, attempt: int, response: httpx.Response | None) -> float:
    wait = min(policy.backoff_s * (2**attempt), policy.max_backoff_s)
    if response is not None:
        hinted = _retry_after_s(response)
        if hinted is not None:
            wait = min(hinted, policy.max_backoff_s)
    return wait


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection refused or failed ({exc})"
    return f"{type(exc).__name__}: {exc}"


def send_with_retry(
    send: Callable[[], httpx.Response], policy: RetryPolicy, service: str, url: str
) -> httpx.Response:
    """Call ``send`` until it gives a non-retryable answer or the tries run out."""
    last_detail = ""
    for attempt in range(policy.attempts):
        response: httpx.Response | None = None
        try:
            response = send()
        except httpx.TransportError as exc:
            last_detail = _describe(exc)
        else:
            if response.status_code not in RETRYABLE_STATUS:
                return response
            last_detail = f"HTTP {response.status_code}"
            if attempt == policy.attempts - 1:
                return response
        if attempt < policy.attempts - 1:
            wait = _wait_s(policy, attempt, response)
            log.warning("%s %s: %s; retry %d in %.1fs", service, url, last_detail, attempt + 1, wait)
            time.sleep(wait)
    raise ServiceUnavailableError(service, url, last_detail, policy.attempts)


async def asend_with_retry(
    send: Callable[[], Awaitable[httpx.Response]], policy: RetryPolicy, service: str, url: str
) -> httpx.Response:
    """The async twin of `send_with_retry`."""
    last_detail = ""
    for attempt in range(policy.attempts):
        response: httpx.Response | None = None
        try:
            response = await send()
        except httpx.TransportError as exc:
            last_detail = _describe(exc)
        else:
            if response.status_code not in RETRYABLE_STATUS:
                return response
            last_detail = f"HTTP {response.status_code}"
            if attempt == policy.attempts - 1:
                return response
        if attempt < policy.attempts - 1:
            wait = _wait_s(policy, attempt, response)
            log.warning("%s %s: %s; retry %d in %.1fs", service, url, last_detail, attempt + 1, wait)
            await asyncio.sleep(wait)
    raise ServiceUnavailableError(service, url, last_detail, policy.attempts)
