"""One retry loop for every HTTP client in the project (FHIR, DICOMweb, model endpoints).

Retries 429, 5xx and transport errors (refused connection, timeout) with exponential
backoff, honouring ``Retry-After`` when the server sends one. Other 4xx answers are the
caller's mistake and are returned at once: retrying them only delays the error.

httpx clients call `send_with_retry` around each send; a `requests.Session` (the one
dicomweb-client drives) mounts `RetryingAdapter`, whose every send runs the same loop.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
import requests
from requests.adapters import HTTPAdapter

from tools.http.config import RetryPolicy
from tools.http.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})

# What a request that never got an answer raises, in either HTTP library.
_TRANSPORT_ERRORS = (httpx.TransportError, requests.ConnectionError, requests.Timeout)

Answer = TypeVar("Answer", httpx.Response, requests.Response)


def _retry_after_s(answer: httpx.Response | requests.Response) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    value = answer.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _wait_s(policy: RetryPolicy, attempt: int, answer: httpx.Response | requests.Response | None) -> float:
    wait = min(policy.backoff_s * (2**attempt), policy.max_backoff_s)
    if answer is not None:
        hinted = _retry_after_s(answer)
        if hinted is not None:
            wait = min(hinted, policy.max_backoff_s)
    return wait


def without_query(url: str) -> str:
    """The URL without its query string, for logs and errors: query values can be patient names."""
    return url.split("?", 1)[0]


def describe_transport_error(exc: Exception) -> str:
    """What went wrong on the wire, for an error message.

    requests' messages repeat the whole URL, query string included (QIDO values can be
    patient names), so for requests only the exception type is told.
    """
    if isinstance(exc, (httpx.TimeoutException, requests.Timeout)):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection refused or failed ({exc})"
    if isinstance(exc, requests.ConnectionError):
        return f"connection refused or failed ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def send_with_retry(send: Callable[[], Answer], policy: RetryPolicy, service: str, url: str) -> Answer:
    """Call ``send`` until it gives a non-retryable answer or the tries run out.

    After the last try a retryable answer (429, 5xx) is handed back, so the caller can
    read the server's explanation from it; a transport error raises ServiceUnavailableError.
    """
    last_detail = ""
    for attempt in range(policy.attempts):
        answer: Answer | None = None
        try:
            answer = send()
        except _TRANSPORT_ERRORS as exc:
            last_detail = describe_transport_error(exc)
        else:
            if answer.status_code not in RETRYABLE_STATUS:
                return answer
            last_detail = f"HTTP {answer.status_code}"
            if attempt == policy.attempts - 1:
                return answer
        if attempt < policy.attempts - 1:
            wait = _wait_s(policy, attempt, answer)
            if answer is not None:
                answer.close()  # back to the pool before the next try
            log.warning("%s %s: %s; retry %d in %.1fs", service, url, last_detail, attempt + 1, wait)
            time.sleep(wait)
    raise ServiceUnavailableError(service, url, last_detail, policy.attempts)


class RetryingAdapter(HTTPAdapter):
    """A requests transport adapter whose every send goes through `send_with_retry`.

    urllib3 itself retries nothing (the adapter's default ``max_retries=0``), so a
    `requests.Session` with this adapter mounted retries exactly like the httpx clients.
    Logs and errors name the URL's path only: query strings can carry patient names.
    """

    def __init__(self, policy: RetryPolicy, service: str) -> None:
        super().__init__()
        self.policy = policy
        self.service = service

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        send_once = super().send
        url = without_query(request.url or "")
        return send_with_retry(lambda: send_once(request, **kwargs), self.policy, self.service, url)
