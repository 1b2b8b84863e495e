"""DICOMweb client: QIDO-RS search, WADO-RS retrieve, STOW-RS store (DICOM PS3.18).

WADO-RS goes through `dicomweb_client` (multipart decoding). QIDO-RS query strings are
built here because of an Orthanc quirk (see `qido_query`); STOW-RS bodies too, because
`dicomweb_client` writes a dataset built in memory without its PS3.10 preamble and
file meta (Orthanc stores it, then WADO-RS returns files pydicom cannot read).

Every request shares one `requests.Session` whose urllib3 `Retry` follows the project's
`RetryPolicy` (the semantics of `tools.http.retry`): 429/5xx and transport errors are
retried with exponential backoff honouring ``Retry-After``; other 4xx are not.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from tools.dicomweb.models import (
    InstanceSummary,
    SeriesSummary,
    StoreFailure,
    StoreResult,
    StudySummary,
    describe_store_status,
)
from tools.http.config import HttpAuth, RetryPolicy
from tools.http.retry import RETRYABLE_STATUS, ServiceUnavailableError

log = logging.getLogger(__name__)

SERVICE = "PACS (DICOMweb)"

# STOW-RS is safe to repeat: a PACS stores a SOP Instance UID once (PS3.4 B.4.1.3).
_RETRIED_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST"})

# Ask for the stored transfer syntax: no server-side transcoding (PS3.18 8.7.3.5.2).
_AS_STORED = (("application/dicom", "*"),)

_STUDY_FIELDS = ("StudyDescription",)
_SERIES_FIELDS = ("SliceThickness", "BodyPartExamined", "Modality")

# Wildcard matching applies to these VRs only (PS3.4 C.2.2.2.4).
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# Characters that reach the server unchanged through requests/urllib3 and need no decoding.
_RAW_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~*?,")

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


class _PolicyRetry(Retry):
    """urllib3 `Retry` with `tools.http.retry`'s timing.

    urllib3 waits nothing before the first retry and caps ``Retry-After`` at hours; the
    project waits ``backoff_s * 2**n`` from the first retry and caps every wait at
    ``max_backoff_s`` (carried here as ``backoff_factor`` / ``backoff_max``).
    """

    RETRY_AFTER_STATUS_CODES = RETRYABLE_STATUS

    def get_backoff_time(self) -> float:
        errors = 0
        for entry in reversed(self.history):
            if entry.redirect_location is not None:
                break
            errors += 1
        if errors == 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * 2 ** (errors - 1)))

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.backoff_max)


def build_session(auth: HttpAuth, retry: RetryPolicy) -> requests.Session:
    """A session that authenticates and retries as the project's policy says."""
    session = requests.Session()
    adapter = HTTPAdapter(
        max_retries=_PolicyRetry(
            total=retry.attempts - 1,
            status_forcelist=sorted(RETRYABLE_STATUS),
            allowed_methods=_RETRIED_METHODS,
            backoff_factor=retry.backoff_s,
            backoff_max=retry.max_backoff_s,
            respect_retry_after_header=True,
            raise_on_status=True,
        )
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(auth.headers())
    session.auth = auth.basic()
    session.hooks["response"].append(_log_response)
    return session


def _log_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    # The path only: QIDO query strings can carry patient names.
    size = response.headers.get("Content-Length", "?") if kwargs.get("stream") else len(response.content)
    log.debug(
        "%s %s %s -> HTTP %d, %s bytes, %.3f s",
        SERVICE,
        response.request.method,
        _path_of(response.request.url or ""),
        response.status_code,
        size,
        response.elapsed.total_seconds(),
    )


def _path_of(url: str) -> str:
    return url.split("?", 1)[0]


def _attribute(key: str) -> tuple[str, str]:
    """(tag as 8 hex digits, VR) of a filter key given as keyword or tag."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        tag = int(key, 16)
    else:
        found = tag_for_keyword(key)
        if found is None:
            raise ValueError(
                f"QIDO filter {key!r} is neither a DICOM keyword nor an 8-digit tag; "
                f"use e.g. 'PatientName' or '00100010'"
            )
        tag = found
    return f"{tag:08X}", dictionary_VR(tag)


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def qido_query(
    filters: Mapping[str, str], include_fields: Sequence[str] = (), limit: int | None = None
) -> tuple[str, dict[str, re.Pattern[str]]]:
    """The QIDO-RS query string, and the client-side checks it needs.

    Orthanc 1.10 with DICOMweb plugin 1.7 does not percent-decode query values, so a
    percent-encoded ``*`` or ``^`` matches nothing; and urllib3 always percent-encodes
    ``^``, space and non-ASCII characters. So values are sent raw, and any character
    that cannot travel raw is replaced by the single-character wildcard ``?`` (PS3.4
    C.2.2.2.4). That widens the match, so each such filter comes back as a pattern
    (keyed by tag) that the results must match to be kept.
    """
    parts: list[str] = []
    checks: dict[str, re.Pattern[str]] = {}
    for key, value in filters.items():
        tag, vr = _attribute(key)
        if all(c in _RAW_SAFE for c in value):
            wire = value
        elif vr in _WILDCARD_VRS:
            wire = "".join(c if c in _RAW_SAFE else "?" for c in value)
            checks[tag] = _wildcard_regex(value)
        else:
            raise ValueError(
                f"QIDO filter {key}={value!r}: a {vr} value can only hold letters, digits "
                f"and '-._,'; check the value"
            )
        parts.append(f"{tag}={wire}")
    for field in [*include_fields, *(keyword_for_tag(int(t, 16)) or t for t in checks)]:
        parts.append(f"includefield={_attribute(field)[0]}")
    if limit is not None:
        parts.append(f"limit={int(limit)}")
    return "&".join(parts), checks


def _matches(ds: Dataset, checks: Mapping[str, re.Pattern[str]]) -> bool:
    for tag, pattern in checks.items():
        element = ds.get(int(tag, 16))
        value = element.value if element is not None else None
        values = value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]
        if not any(pattern.fullmatch("" if v is None else str(v)) for v in values):
            return False
    return True


def _server_detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict):
        return str(body.get("Details") or body.get("Message") or body)[:200]
    return ""


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` as a PS3.10 file (preamble, complete file meta), leaving ``ds`` untouched."""
    clone = copy.copy(ds)
    clone.file_meta = FileMetaDataset(ds.file_meta)
    with io.BytesIO() as buffer:
        pydicom.dcmwrite(buffer, clone, enforce_file_format=True)
        return buffer.getvalue()


def _encode_for_stow(ds: Dataset) -> tuple[bytes, StoreFailure | None]:
    """The PS3.10 bytes to send, or why ``ds`` cannot be sent at all."""
    needed = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    missing = [k for k in needed if not ds.get(k)]
    if not getattr(ds, "file_meta", None) or not ds.file_meta.get("TransferSyntaxUID"):
        missing.append("file meta TransferSyntaxUID")
    reason = f"not sent: missing {', '.join(missing)}; fill them before storing" if missing else None
    encoded = b""
    if reason is None:
        try:
            encoded = part10_bytes(ds)
        except (ValueError, TypeError, AttributeError) as exc:
            reason = f"not sent: pydicom cannot encode it ({exc})"
    if reason is None:
        return encoded, None
    sop_uid = str(ds.get("SOPInstanceUID", "")) or "<no SOP Instance UID>"
    return b"", StoreFailure(sop_instance_uid=sop_uid, sop_class_uid=ds.get("SOPClassUID"), reason=reason)


class DicomwebClient:
    """QIDO-RS, WADO-RS and STOW-RS against one DICOMweb service (PS3.18 10.4-10.6)."""

    def __init__(
        self,
        url: str,
        *,
        auth: HttpAuth = HttpAuth(),
        retry: RetryPolicy = RetryPolicy(),
        stow_batch_size: int = 32,
    ) -> None:
        if stow_batch_size < 1:
            raise ValueError(f"stow_batch_size must be at least 1, got {stow_batch_size}")
        self.url = url.rstrip("/")
        self.retry = retry
        self.stow_batch_size = stow_batch_size
        self._session = build_session(auth, retry)
        # Retries are urllib3's (the session's), not the library's own loop.
        self._dw = DICOMwebClient(self.url, session=self._session, timeout=retry.timeout_s)
        self._dw.set_http_retry_params(retry=False)


    @contextmanager
    def _errors(self, what: str, url: str) -> Iterator[None]:
        """Turn requests' exceptions into ServiceUnavailableError / PacsError naming ``what``."""
        try:
            yield
        except requests.exceptions.RetryError as exc:
            raise ServiceUnavailableError(
                SERVICE, _path_of(url), f"{what}: kept failing ({getattr(exc.args[0], 'reason', exc)})", self.retry.attempts
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.Timeout) else "connection refused or failed"
            raise ServiceUnavailableError(
                SERVICE, _path_of(url), f"{what}: {kind} ({type(exc).__name__})", self.retry.attempts
            ) from exc
        except requests.HTTPError as exc:
            raise self._http_error(what, exc.response) from exc
        except InvalidDicomError as exc:
            raise PacsError(
                f"{what}: the PACS sent a part that is not a DICOM file ({exc}). "
                f"What to do: check the instance on the PACS; it may be stored damaged."
            ) from exc

    def _http_error(self, what: str, response: requests.Response) -> PacsError:
        status = response.status_code
        hint = _HINTS.get(status, "see the PACS logs for the cause")
        detail = _server_detail(response)
        return PacsError(
            f"{what} failed at {_path_of(response.url)}: HTTP {status}"
            f"{f' ({detail})' if detail else ''}. What to do: {hint}.",
            status=status,
            url=_path_of(response.url),
        )

    # QIDO-RS (PS3.18 10.6)

    def _qido(
        self,
        path: str,
        what: str,
        filters: Mapping[str, str] | None,
        include_fields: Sequence[str],
        limit: int | None = None,
    ) -> list[Dataset]:
        query, checks = qido_query(filters or {}, include_fields, limit)
        url = f"{self.url}{path}?{query}" if query else f"{self.url}{path}"
        started = time.monotonic()
        with self._errors(what, url):
            response = self._session.get(
                url, headers={"Accept": "application/dicom+json"}, timeout=self.retry.timeout_s
            )
            if response.status_code >= 400:
                raise requests.HTTPError(response=response)
        try:
            matches = [Dataset.from_json(item) for item in (response.json() if response.content else [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise PacsError(
                f"{what} at {path}: the answer is not a DICOM JSON array ({exc}). "
                f"What to do: check that {self.url} is the DICOMweb root of the PACS.",
                status=response.status_code,
                url=path,
            ) from exc
        kept = [ds for ds in matches if _matches(ds, checks)]
        log.info(
            "QIDO %s (filters on %s): %d matches, %d kept, %.3f s",
            path,
            sorted(filters or {}),
            len(matches),
            len(kept),
            time.monotonic() - started,
        )
        return kept

    def search_studies(
        self, filters: Mapping[str, str] | None = None, *, limit: int | None = None
    ) -> list[StudySummary]:
        """Studies matching ``filters`` (keyword or tag -> value; ``*``/``?`` wildcards allowed)."""
        found = self._qido("/studies", "QIDO-RS study search", filters, _STUDY_FIELDS, limit)
        return [StudySummary.from_dataset(ds) for ds in found]

    def search_series(
        self, study_uid: str, filters: Mapping[str, str] | None = None
    ) -> list[SeriesSummary]:
        """Series of one study, with slice thickness and body part (not QIDO defaults)."""
        found = self._qido(
            f"/studies/{study_uid}/series",
            f"QIDO-RS series search in study {study_uid}",
            filters,
            _SERIES_FIELDS,
        )
        return [SeriesSummary.from_dataset(ds) for ds in found]

    def search_instances(
        self, study_uid: str, series_uid: str | None = None, filters: Mapping[str, str] | None = None
    ) -> list[InstanceSummary]:
        """Instances of a study, or of one series of it."""
        path = f"/studies/{study_uid}"
        what = f"QIDO-RS instance search in study {study_uid}"
        if series_uid is not None:
            path += f"/series/{series_uid}"
            what += f", series {series_uid}"
        found = self._qido(f"{path}/instances", what, filters, ())
        return [InstanceSummary.from_dataset(ds) for ds in found]

    def instance_exists(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the PACS holds this instance: the check before an idempotent STOW."""
        try:
            found = self.search_instances(study_uid, series_uid, {"SOPInstanceUID": sop_uid})
        except PacsError as exc:
            # Some PACS answer 404 for an unknown study or series rather than an empty list.
            if exc.status == 404:
                return False
            raise
        return any(item.sop_instance_uid == sop_uid for item in found)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DicomwebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> bool:
        """Whether the DICOMweb service answers a minimal QIDO query."""
        try:
            self._qido("/studies", "DICOMweb health check", None, (), limit=1)
        except (ServiceUnavailableError, PacsError) as exc:
            log.warning("%s at %s is not healthy: %s", SERVICE, self.url, exc)
            return False
        return True

    # WADO-RS (PS3.18 10.4)

    def retrieve_series(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """Every instance of a series, in the transfer syntax the PACS stored it in."""
        what = f"WADO-RS retrieve of series {series_uid} (study {study_uid})"
        url = f"{self.url}/studies/{study_uid}/series/{series_uid}"
        started = time.monotonic()
        with self._errors(what, url):
            datasets = self._dw.retrieve_series(study_uid, series_uid, media_types=_AS_STORED)
        log.info(
            "WADO %s: %d instances, %.3f s",
            _path_of(url),
            len(datasets),
            time.monotonic() - started,
        )
        return datasets

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        """One instance, in the transfer syntax the PACS stored it in."""
        what = f"WADO-RS retrieve of instance {sop_uid} (series {series_uid}, study {study_uid})"
        url = f"{self.url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        started = time.monotonic()
        with self._errors(what, url):
            dataset = self._dw.retrieve_instance(study_uid, series_uid, sop_uid, media_types=_AS_STORED)
        log.info("WADO %s: %.3f s", _path_of(url), time.monotonic() - started)
        return dataset

    # STOW-RS (PS3.18 10.5)

    def store(self, datasets: Sequence[Dataset]) -> StoreResult:
        """Store instances in batches of ``stow_batch_size``; refusals are listed, not raised.

        An instance that cannot be sent (missing UIDs, not encodable) is reported as failed
        without contacting the PACS. A PACS that is down raises ServiceUnavailableError; the
        batches before it are stored and a repeat is harmless (same SOP Instance UIDs).
        """
        result = StoreResult()
        # Encoded batch by batch: a long series never sits in memory twice over.
        for start in range(0, len(datasets), self.stow_batch_size):
            sendable: list[tuple[Dataset, bytes]] = []
            for ds in datasets[start : start + self.stow_batch_size]:
                encoded, refusal = _encode_for_stow(ds)
                if refusal is not None:
                    result.failed.append(refusal)
                else:
                    sendable.append((ds, encoded))
            if sendable:
                result = result.merge(self._store_batch(sendable))
        return result

    def store_part10(self, files: Sequence[bytes]) -> StoreResult:
        """Store PS3.10 files exactly as given: the bytes a reviewer approved, hash for hash."""
        result = StoreResult()
        for start in range(0, len(files), self.stow_batch_size):
            batch = [
                (pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True), data)
                for data in files[start : start + self.stow_batch_size]
            ]
            result = result.merge(self._store_batch(batch))
        return result

    def _store_batch(self, batch: Sequence[tuple[Dataset, bytes]]) -> StoreResult:
        url = f"{self.url}/studies"
        studies = sorted({str(ds.StudyInstanceUID) for ds, _ in batch})
        what = f"STOW-RS of {len(batch)} instances (studies {', '.join(studies)})"
        boundary = uuid.uuid4().hex
        body = b"".join(
            b"\r\n--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + encoded
            for _, encoded in batch
        ) + b"\r\n--" + boundary.encode() + b"--\r\n"
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        started = time.monotonic()
        with self._errors(what, url):
            response = self._session.post(url, data=body, headers=headers, timeout=self.retry.timeout_s)
            # 202 and 409 (some PACS: 400) still list every instance's fate (PS3.18 10.5.3).
            answer = _stow_response_body(response)
            if response.status_code >= 400 and answer is None:
                raise requests.HTTPError(response=response)
        result = _stow_outcome(answer or Dataset(), [ds for ds, _ in batch])
        result.bytes_sent = sum(len(encoded) for _, encoded in batch)
        result.elapsed_s = time.monotonic() - started
        log.info(
            "STOW %s: HTTP %d, %d stored, %d failed, %d bytes, %.3f s",
            url,
            response.status_code,
            len(result.stored),
            len(result.failed),
            result.bytes_sent,
            result.elapsed_s,
        )
        return result


def _stow_response_body(response: requests.Response) -> Dataset | None:
    """The STOW-RS response data set, if the response carries one.

    Orthanc sends it without a Content-Type on 409, so the body is tried as DICOM JSON
    whatever the header says.
    """
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not ({"00081198", "00081199"} & body.keys()):
        return None
    return Dataset.from_json(body)


def _stow_outcome(answer: Dataset, sent: Sequence[Dataset]) -> StoreResult:
    """Stored and failed instances from a STOW-RS response (PS3.18 Table 10.5.3-1)."""
    result = StoreResult()
    for item in answer.get("ReferencedSOPSequence", []):
        result.stored.append(str(item.ReferencedSOPInstanceUID))
    for item in answer.get("FailedSOPSequence", []):
        code = item.get("FailureReason")
        result.failed.append(
            StoreFailure(
                sop_instance_uid=str(item.get("ReferencedSOPInstanceUID", "")),
                sop_class_uid=item.get("ReferencedSOPClassUID"),
                status=code,
                reason=describe_store_status(code) if code is not None else "no FailureReason given",
            )
        )
    answered = set(result.stored) | {f.sop_instance_uid for f in result.failed}
    for ds in sent:
        if str(ds.SOPInstanceUID) not in answered:
            # Orthanc drops instances it cannot index without listing them as failed.
            result.failed.append(
                StoreFailure(
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=ds.get("SOPClassUID"),
                    reason="the PACS reported neither success nor failure for it; check the PACS log and resend",
                )
            )
    return result
