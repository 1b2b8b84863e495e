"""DIMSE client (pynetdicom) for a PACS without DICOMweb: C-ECHO, C-STORE, C-FIND.

DICOM PS3.7 (message exchange), PS3.4 Annex A (Verification), Annex B (Storage) and
Annex C (Query/Retrieve, Study Root). DIMSE has no HTTP-style retry policy: a peer that
cannot be reached raises `ServiceUnavailableError` at once, so callers treat a down PACS
the same way over either protocol.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS

from tools.dicomweb.errors import PacsError
from tools.dicomweb.models import StoreFailure, StoreResult, StudySummary, describe_store_status
from tools.http.retry import ServiceUnavailableError

log = logging.getLogger(__name__)

SERVICE = "PACS (DIMSE)"

# pynetdicom logs every C-FIND identifier at INFO, patient names included; the project's
# logs carry identifiers only (documented switches, pynetdicom._config).
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

# PS3.8 9.3.2.2: at most 128 presentation contexts (odd IDs 1-255) per association.
_MAX_CONTEXTS = 128

_STUDY_RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyDescription",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)

_PENDING = (0xFF00, 0xFF01)


def _context_key(sop_class: str, syntax: UID) -> tuple[str, str]:
    # Uncompressed syntaxes convert into each other (pynetdicom re-encodes); a
    # compressed one needs its own context or the peer must decode it.
    return (sop_class, str(syntax) if syntax.is_compressed else "uncompressed")


def _proposed_syntaxes(syntax: UID) -> list[str]:
    if syntax.is_compressed:
        return [str(syntax)]
    return list(dict.fromkeys([str(syntax), ExplicitVRLittleEndian, ImplicitVRLittleEndian]))


def _status_code(status: Dataset) -> int | None:
    return int(status.Status) if "Status" in status else None


def _find_failure(code: int | None) -> str:
    if code is None:
        return "no answer: the association was aborted or timed out (a PACS that does not know our calling AE title often aborts C-FIND)"
    text = QR_FIND_SERVICE_CLASS_STATUS.get(code, ("Failure", "unknown status"))[1]
    return f"{text} (0x{code:04X})"


class DimseClient:
    """One DICOM peer reached over DIMSE, identified by AE titles and address."""

    def __init__(
        self,
        host: str,
        port: int,
        called_aet: str,
        calling_aet: str,
        timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.called_aet = called_aet
        self.calling_aet = calling_aet
        self.timeout_s = timeout_s

    @property
    def peer(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"

    @contextmanager
    def _association(
        self,
        contexts: Sequence[tuple[str, list[str]]],
        what: str,
        *,
        roles: Sequence[Any] = (),
        handlers: Sequence[Any] = (),
    ) -> Iterator[Association]:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        for abstract, syntaxes in contexts:
            ae.add_requested_context(abstract, syntaxes)
        assoc = ae.associate(
            self.host, self.port, ae_title=self.called_aet, ext_neg=list(roles) or None, evt_handlers=list(handlers) or None
        )
        if assoc.is_rejected:
            raise PacsError(
                f"{what}: {self.peer} rejected the association from calling AE {self.calling_aet}. "
                f"What to do: check the called AE title, and that the PACS lists or accepts "
                f"{self.calling_aet} as a modality."
            )
        if not assoc.is_established:
            raise ServiceUnavailableError(
                SERVICE, self.peer, f"{what}: no association (connection refused, aborted or timed out)", 1
            )
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def echo(self) -> None:
        """C-ECHO (PS3.4 Annex A); raises if the peer is down or answers a failure."""
        started = time.monotonic()
        with self._association([(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])], "C-ECHO") as assoc:
            status = assoc.send_c_echo()
        code = _status_code(status)
        if code != 0x0000:
            raise PacsError(
                f"C-ECHO to {self.peer} got "
                f"{'no answer' if code is None else f'status 0x{code:04X}'}. "
                f"What to do: check the PACS log for this association.",
                status=code,
            )
        log.info("C-ECHO %s: ok, %.3f s", self.peer, time.monotonic() - started)

    def store(self, datasets: Sequence[Dataset]) -> StoreResult:
        """C-STORE each dataset in its own SOP class and transfer syntax (PS3.4 Annex B).

        Refusals are listed in the result, not raised; a peer that is down raises.
        """
        result = StoreResult()
        contexts: dict[tuple[str, str], tuple[str, list[str]]] = {}
        sendable: list[Dataset] = []
        for ds in datasets:
            sop_uid = str(ds.get("SOPInstanceUID", "")) or "<no SOP Instance UID>"
            syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
            if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID") or syntax is None:
                result.failed.append(
                    StoreFailure(
                        sop_instance_uid=sop_uid,
                        sop_class_uid=ds.get("SOPClassUID"),
                        reason="not sent: SOP Class UID, SOP Instance UID or file meta "
                        "TransferSyntaxUID missing; fill them before storing",
                    )
                )
                continue
            sop_class = str(ds.SOPClassUID)
            contexts.setdefault(_context_key(sop_class, UID(syntax)), (sop_class, _proposed_syntaxes(UID(syntax))))
            sendable.append(ds)
        if len(contexts) > _MAX_CONTEXTS:
            raise ValueError(
                f"C-STORE to {self.peer}: {len(contexts)} distinct SOP class / transfer syntax "
                f"pairs exceed the {_MAX_CONTEXTS} one association can carry; store in smaller groups"
            )
        if not sendable:
            return result
        started = time.monotonic()
        with self._association(list(contexts.values()), f"C-STORE of {len(sendable)} instances") as assoc:
            for ds in sendable:
                result = result.merge(self._store_one(assoc, ds))
        result.elapsed_s = time.monotonic() - started
        log.info(
            "C-STORE %s: %d stored, %d failed, %d bytes, %.3f s",
            self.peer,
            len(result.stored),
            len(result.failed),
            result.bytes_sent,
            result.elapsed_s,
        )
        return result

    def store_part10(self, files: Sequence[bytes]) -> StoreResult:
        """C-STORE DICOM Part 10 files as they are (their own transfer syntax)."""
        return self.store([dcmread(io.BytesIO(data)) for data in files])

    def find_instances(self, study_uid: str, series_uid: str) -> set[str]:
        """The SOP Instance UIDs of one series: image-level C-FIND, Study Root (PS3.4 C.6.2.1)."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.StudyInstanceUID = study_uid
        identifier.SeriesInstanceUID = series_uid
        identifier.SOPInstanceUID = ""
        found: set[str] = set()
        context = [(StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        with self._association(context, "C-FIND (image level)") as assoc:
            for status, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
                code = _status_code(status)
                if code in _PENDING and match is not None:
                    found.add(str(match.get("SOPInstanceUID", "")))
                elif code != 0x0000:
                    raise PacsError(
                        f"image-level C-FIND of series {series_uid} at {self.peer} failed: {_find_failure(code)}. "
                        f"What to do: check that the PACS accepts C-FIND from {self.calling_aet} and the PACS log.",
                        status=code,
                    )
        return found

    def get_instance(self, study_uid: str, series_uid: str, sop_uid: str, sop_class_uid: str) -> Dataset | None:
        """One instance by C-GET (PS3.4 C.4.3), the PACS sending it back on the same association; None
        when the PACS answers success without sending it (it does not hold it); any failure raises."""
        received: list[Dataset] = []

        def on_store(event: evt.Event) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            received.append(ds)
            return 0x0000

        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.StudyInstanceUID = study_uid
        identifier.SeriesInstanceUID = series_uid
        identifier.SOPInstanceUID = sop_uid
        contexts = [
            (StudyRootQueryRetrieveInformationModelGet, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
            (sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        ]
        code: int | None = None
        with self._association(
            contexts, f"C-GET of {sop_uid}", roles=[build_role(sop_class_uid, scp_role=True)],
            handlers=[(evt.EVT_C_STORE, on_store)],
        ) as assoc:
            for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
                code = _status_code(status)
        if received:
            return received[0]
        if code == 0x0000:
            return None
        raise PacsError(
            f"C-GET of {sop_uid} at {self.peer} "
            f"{'got no answer' if code is None else f'failed with status 0x{code:04X}'}. What to do: check that "
            f"the PACS accepts C-GET from {self.calling_aet} (Orthanc: AllowGet for that modality) and the PACS log.",
            status=code,
        )

    def _store_one(self, assoc: Association, ds: Dataset) -> StoreResult:
        sop_uid = str(ds.SOPInstanceUID)
        syntax = UID(ds.file_meta.TransferSyntaxUID)

        def failed(reason: str, status: int | None = None) -> StoreResult:
            return StoreResult(
                failed=[StoreFailure(sop_instance_uid=sop_uid, sop_class_uid=str(ds.SOPClassUID), status=status, reason=reason)]
            )

        if not assoc.is_established:
            return failed(f"not sent: the association with {self.peer} ended before it; resend")
        try:
            status = assoc.send_c_store(ds)
        except ValueError as exc:
            return failed(
                f"not sent: {self.peer} did not accept {syntax.name} for this SOP class ({exc}); "
                f"enable that transfer syntax on the PACS or send the data uncompressed"
            )
        code = _status_code(status)
        if code is None:
            return failed(f"no answer from {self.peer} (association aborted or timed out); resend")
        if code == 0x0000 or code in (0xB000, 0xB006, 0xB007):
            size = len(encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated) or b"")
            return StoreResult(stored=[sop_uid], bytes_sent=size)
        return failed(describe_store_status(code), code)

    def find_studies(self, query: Mapping[str, str]) -> list[StudySummary]:
        """Study-level C-FIND, Study Root model (PS3.4 C.6.2); keys by keyword or tag."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        for keyword in _STUDY_RETURN_KEYS:
            setattr(identifier, keyword, "")
        for key, value in query.items():
            keyword = keyword_for_tag(int(key, 16)) if re.fullmatch(r"[0-9A-Fa-f]{8}", key) else key
            if not keyword:
                raise ValueError(f"C-FIND key {key!r} is not a DICOM keyword or tag; use e.g. 'PatientID'")
            setattr(identifier, keyword, value)
        started = time.monotonic()
        studies: list[StudySummary] = []
        context = [(StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        with self._association(context, "C-FIND") as assoc:
            for status, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
                code = _status_code(status)
                if code in _PENDING and match is not None:
                    studies.append(StudySummary.from_dataset(match))
                elif code != 0x0000:
                    raise PacsError(
                        f"C-FIND at {self.peer} (keys {sorted(query)}) failed: {_find_failure(code)}. "
                        f"What to do: check that the PACS accepts C-FIND from {self.calling_aet}, the query keys, and the PACS log.",
                        status=code,
                    )
        log.info(
            "C-FIND %s (keys %s): %d studies, %.3f s", self.peer, sorted(query), len(studies), time.monotonic() - started
        )
        return studies
