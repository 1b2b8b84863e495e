"""The `requests.Session` every DICOMweb request goes through, dicomweb-client's included.

It authenticates as configured and retries through `tools.http.retry.RetryingAdapter`, the
project's one retry loop: 429/5xx and transport errors are retried with exponential
backoff honouring ``Retry-After``; other 4xx are not. STOW-RS (a POST) is retried too:
a PACS stores a SOP Instance UID once (PS3.4 B.4.1.3), so a repeat is harmless.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from tools.http.config import HttpAuth, RetryPolicy
from tools.http.retry import RetryingAdapter, without_query

log = logging.getLogger(__name__)

SERVICE = "PACS (DICOMweb)"


def build_session(auth: HttpAuth, retry: RetryPolicy) -> requests.Session:
    """A session that authenticates and retries as the project's policy says."""
    session = requests.Session()
    adapter = RetryingAdapter(retry, SERVICE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(auth.headers())
    session.auth = auth.basic()
    session.hooks["response"].append(_log_response)
    return session


def _log_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    size = response.headers.get("Content-Length", "?") if kwargs.get("stream") else len(response.content)
    log.debug(
        "%s %s %s -> HTTP %d, %s bytes, %.3f s",
        SERVICE,
        response.request.method,
        without_query(response.request.url or ""),
        response.status_code,
        size,
        response.elapsed.total_seconds(),
    )
