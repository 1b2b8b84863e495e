"""What a failed DICOMweb request becomes: `ServiceUnavailableError` when the PACS is down
or kept failing, `PacsError` when it answered with a refusal. Both name what was being done
and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
from pydicom.errors import InvalidDicomError

from tools.dicomweb.session import SERVICE
from tools.http.retry import RETRYABLE_STATUS, ServiceUnavailableError, describe_transport_error, without_query

_HINTS = {
    400: "the PACS rejected the request as malformed; check the filter names and values",
    401: "the PACS wants credentials; set IMAGING_AGENT_DICOMWEB_AUTH and its username/password or token",
    403: "the PACS refused these credentials; check the DICOMweb user's permissions",
    404: "the PACS does not hold it; check the UIDs with a QIDO search",
    406: "the PACS cannot send it in the stored transfer syntax; check its DICOMweb configuration",
    413: "the request is too large; lower IMAGING_AGENT_DICOMWEB_STOW_BATCH_SIZE",
    415: "the PACS does not accept this media type; check that it supports STOW-RS",
}


class PacsError(RuntimeError):
    """The PACS answered, but not with what was asked for (a non-retryable error)."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        self.status = status
        self.url = url
        super().__init__(message)


def _server_detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict):
        return str(body.get("Details") or body.get("Message") or body)[:200]
    return ""


def _http_error(what: str, response: requests.Response) -> PacsError:
    status = response.status_code
    hint = _HINTS.get(status, "see the PACS logs for the cause")
    detail = _server_detail(response)
    return PacsError(
        f"{what} failed at {without_query(response.url)}: HTTP {status}"
        f"{f' ({detail})' if detail else ''}. What to do: {hint}.",
        status=status,
        url=without_query(response.url),
    )


@contextmanager
def pacs_errors(what: str, url: str, attempts: int) -> Iterator[None]:
    """Turn what a request to ``url`` raised into ServiceUnavailableError / PacsError naming ``what``.

    ``attempts`` is the retry policy's: every error that reaches here came after the last try.
    """
    try:
        yield
    except ServiceUnavailableError as exc:
        # From the retry loop, which knows neither the study nor the operation.
        raise ServiceUnavailableError(SERVICE, without_query(url), f"{what}: {exc.detail}", exc.attempts) from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        # Raised while reading a body, after the retry loop handed the answer back.
        detail = f"{what}: {describe_transport_error(exc)}"
        raise ServiceUnavailableError(SERVICE, without_query(url), detail, attempts) from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code
        if status in RETRYABLE_STATUS:
            # The retry loop hands back the last retryable answer; it still means "down".
            detail = f"{what}: kept failing (too many {status} error responses)"
            raise ServiceUnavailableError(SERVICE, without_query(url), detail, attempts) from exc
        raise _http_error(what, exc.response) from exc
    except InvalidDicomError as exc:
        raise PacsError(
            f"{what}: the PACS sent a part that is not a DICOM file ({exc}). "
            f"What to do: check the instance on the PACS; it may be stored damaged."
        ) from exc
