"""DICOMweb client: QIDO-RS search, WADO-RS retrieve, STOW-RS store (DICOM PS3.18).

WADO-RS goes through dicomweb-client (multipart decoding); QIDO-RS query strings
(`tools.dicomweb.qido`) and STOW-RS bodies (`tools.dicomweb.stow`) are built here. Every
request shares one session (`tools.dicomweb.session`) that retries through the project's
one retry loop, `tools.http.retry`; failures become the errors of `tools.dicomweb.errors`.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Mapping, Sequence

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset

from tools.dicomweb.errors import PacsError, pacs_errors
from tools.dicomweb.models import InstanceSummary, SeriesSummary, StoreResult, StudySummary
from tools.dicomweb.qido import matches, qido_query
from tools.dicomweb.session import SERVICE, build_session
from tools.dicomweb.stow import encode_for_stow, stow_outcome, stow_request, stow_response_body
from tools.http.config import HttpAuth, RetryPolicy
from tools.http.retry import RETRYABLE_STATUS, ServiceUnavailableError, without_query
from tools.ids import check_dicom_uid

log = logging.getLogger(__name__)

# Ask for the stored transfer syntax: no server-side transcoding (PS3.18 8.7.3.5.2).
_AS_STORED = (("application/dicom", "*"),)
_AS_STORED_PART10 = 'multipart/related; type="application/dicom"; transfer-syntax=*'

_STUDY_FIELDS = ("StudyDescription",)
_SERIES_FIELDS = ("SliceThickness", "BodyPartExamined", "Modality")


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
        # Retries are the session's (the project's loop), not the library's own.
        self._dw = DICOMwebClient(self.url, session=self._session, timeout=retry.timeout_s)
        self._dw.set_http_retry_params(retry=False)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DicomwebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        with pacs_errors(what, url, self.retry.attempts):
            response = self._session.get(
                url, headers={"Accept": "application/dicom+json"}, timeout=self.retry.timeout_s
            )
            if response.status_code >= 400:
                raise requests.HTTPError(response=response)
        try:
            found = [Dataset.from_json(item) for item in (response.json() if response.content else [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise PacsError(
                f"{what} at {path}: the answer is not a DICOM JSON array ({exc}). "
                f"What to do: check that {self.url} is the DICOMweb root of the PACS.",
                status=response.status_code,
                url=path,
            ) from exc
        kept = [ds for ds in found if matches(ds, checks)]
        log.info(
            "QIDO %s (filters on %s): %d matches, %d kept, %.3f s",
            path,
            sorted(filters or {}),
            len(found),
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
        check_dicom_uid(study_uid, "the Study Instance UID of a series search")
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
        check_dicom_uid(study_uid, "the Study Instance UID of an instance search")
        if series_uid is not None:
            check_dicom_uid(series_uid, f"the Series Instance UID of an instance search in study {study_uid}")
        path = f"/studies/{study_uid}"
        what = f"QIDO-RS instance search in study {study_uid}"
        if series_uid is not None:
            path += f"/series/{series_uid}"
            what += f", series {series_uid}"
        found = self._qido(f"{path}/instances", what, filters, ())
        return [InstanceSummary.from_dataset(ds) for ds in found]

    def instance_exists(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the PACS holds this instance: the check before an idempotent STOW."""
        check_dicom_uid(sop_uid, f"the SOP Instance UID looked up in study {study_uid}")
        try:
            found = self.search_instances(study_uid, series_uid, {"SOPInstanceUID": sop_uid})
        except PacsError as exc:
            # Some PACS answer 404 for an unknown study or series rather than an empty list.
            if exc.status == 404:
                return False
            raise
        return any(item.sop_instance_uid == sop_uid for item in found)

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
        self._check_path_uids(study_uid, series_uid)
        what = f"WADO-RS retrieve of series {series_uid} (study {study_uid})"
        url = f"{self.url}/studies/{study_uid}/series/{series_uid}"
        started = time.monotonic()
        with pacs_errors(what, url, self.retry.attempts):
            datasets = self._dw.retrieve_series(study_uid, series_uid, media_types=_AS_STORED)
        log.info(
            "WADO %s: %d instances, %.3f s",
            without_query(url),
            len(datasets),
            time.monotonic() - started,
        )
        return datasets

    def iter_series_bytes(self, study_uid: str, series_uid: str) -> Iterator[bytes]:
        """Every instance of a series as the PS3.10 file the PACS stored, one at a time as it arrives.

        Streamed, so only one instance is held at a time, and not parsed: a caller that keeps
        the files writes these bytes as they are instead of decoding the pixels and encoding
        the dataset again (issue 11).
        """
        self._check_path_uids(study_uid, series_uid)
        what = f"WADO-RS retrieve of series {series_uid} (study {study_uid})"
        url = f"{self.url}/studies/{study_uid}/series/{series_uid}"
        started = time.monotonic()
        count = 0
        with pacs_errors(what, url, self.retry.attempts):
            response = self._session.get(
                url, headers={"Accept": _AS_STORED_PART10}, timeout=self.retry.timeout_s, stream=True
            )
            with response:
                if response.status_code >= 400:
                    raise requests.HTTPError(response=response)
                # dicomweb-client's multipart decoder, as in retrieve_instance_bytes.
                for part in self._dw._decode_multipart_message(response, stream=True):
                    count += 1
                    yield part
        log.info("WADO %s (bytes): %d instances, %.3f s", without_query(url), count, time.monotonic() - started)

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        """One instance, in the transfer syntax the PACS stored it in."""
        self._check_path_uids(study_uid, series_uid, sop_uid)
        what = f"WADO-RS retrieve of instance {sop_uid} (series {series_uid}, study {study_uid})"
        url = f"{self.url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        started = time.monotonic()
        with pacs_errors(what, url, self.retry.attempts):
            dataset = self._dw.retrieve_instance(study_uid, series_uid, sop_uid, media_types=_AS_STORED)
        log.info("WADO %s: %.3f s", without_query(url), time.monotonic() - started)
        return dataset

    def retrieve_instance_bytes(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes | None:
        """One instance's PS3.10 file exactly as the PACS sends it in its stored transfer syntax,
        or None when the PACS does not hold it (404): what the writer hashes against an approval.

        Orthanc keeps the file it received and answers an "as stored" retrieve with those very
        bytes, so the sha256 of a STOW-ed file can be compared with the sha256 of this answer.
        """
        self._check_path_uids(study_uid, series_uid, sop_uid)
        what = f"WADO-RS retrieve of instance {sop_uid} (series {series_uid}, study {study_uid})"
        url = f"{self.url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        started = time.monotonic()
        try:
            with pacs_errors(what, url, self.retry.attempts):
                response = self._session.get(url, headers={"Accept": _AS_STORED_PART10}, timeout=self.retry.timeout_s)
                if response.status_code >= 400:
                    raise requests.HTTPError(response=response)
                if response.headers.get("Content-Type", "").startswith("application/dicom"):
                    parts = [response.content]  # some servers send the one part unwrapped
                else:
                    # dicomweb-client's multipart decoder: its public retrieve parses the part
                    # into a Dataset, and here the bytes themselves are what is compared.
                    parts = list(self._dw._decode_multipart_message(response, stream=False))
        except PacsError as exc:
            if exc.status == 404:
                return None
            raise
        log.info("WADO %s (bytes): %d part(s), %.3f s", without_query(url), len(parts), time.monotonic() - started)
        if len(parts) != 1:
            raise PacsError(
                f"{what}: the PACS sent {len(parts)} parts for one instance. "
                "What to do: check the instance on the PACS.",
                url=without_query(url),
            )
        return parts[0]

    @staticmethod
    def _check_path_uids(study_uid: str, series_uid: str, sop_uid: str | None = None) -> None:
        check_dicom_uid(study_uid, "the Study Instance UID of a WADO-RS retrieve")
        check_dicom_uid(series_uid, f"the Series Instance UID of a WADO-RS retrieve in study {study_uid}")
        if sop_uid is not None:
            check_dicom_uid(sop_uid, f"the SOP Instance UID of a WADO-RS retrieve in series {series_uid}")

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
                encoded, refusal = encode_for_stow(ds)
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
        body, headers = stow_request([encoded for _, encoded in batch])
        started = time.monotonic()
        with pacs_errors(what, url, self.retry.attempts):
            response = self._session.post(url, data=body, headers=headers, timeout=self.retry.timeout_s)
            # 202 and 409 (some PACS: 400) still list every instance's fate (PS3.18 10.5.3);
            # a 429/5xx left after every retry means the PACS is down, whatever its body says.
            retryable = response.status_code in RETRYABLE_STATUS
            answer = None if retryable else stow_response_body(response)
            if response.status_code >= 400 and answer is None:
                raise requests.HTTPError(response=response)
        result = stow_outcome(answer or Dataset(), [ds for ds, _ in batch])
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
