"""The DICOM node at work (`imaging-agent listen`): complete received series become study jobs.

The node (tools/dimse/scp.py) keeps what arrives in the inbox (tools/intake/inbox.py); `Intake.poll`
takes each series that is complete (nothing new for IMAGING_AGENT_INTAKE_STABLE_AGE_S, every
association that wrote to it released), routes it, stores it in the PACS when the settings ask,
registers its Patient + ImagingStudy (`registered`) and starts its study job, which stops at the
approval like every other job.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable

from pydantic import BaseModel
from pydicom import Dataset

from agent.runtime import AgentRuntime
from agent.settings import Settings
from tools.dimse.scp import Refused, StorageNode
from tools.dimse.tls import TlsConfigError, server_context
from tools.fhir.errors import FhirError
from tools.http.retry import ServiceUnavailableError
from tools.intake.inbox import Inbox, RefusedInstance
from tools.intake.take import TakenSeries, take_series
from tools.workflow.registration import RegistrationError

log = logging.getLogger(__name__)

# How often the inbox is looked at for complete series: well under any sensible stable age.
_POLL_S = 1.0


class IntakeEvent(BaseModel):
    """One series handled by a poll: what it became, its job, or why it was set aside."""

    study_instance_uid: str
    series_instance_uid: str
    taken: TakenSeries | None = None
    job_thread_id: str | None = None
    pending_approvals: int = 0
    error: str | None = None


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The node's TLS context when a certificate is configured; with a CA, senders must show one it signed.

    Raises:
        TlsConfigError: a file cannot be used, or a key or CA is set without a certificate.
    """
    if settings.intake_tls_cert is None:
        if settings.intake_tls_key is not None or settings.intake_tls_ca is not None:
            raise TlsConfigError(
                "IMAGING_AGENT_INTAKE_TLS_KEY or _CA is set but IMAGING_AGENT_INTAKE_TLS_CERT is not, so the node "
                "would listen without TLS. Set the node's certificate too, or unset them."
            )
        return None
    return server_context(settings.intake_tls_cert, settings.intake_tls_key, settings.intake_tls_ca)


def storage_node(settings: Settings, inbox: Inbox) -> StorageNode:
    """The node for the settings' AE title and peers, keeping instances in `inbox`."""

    def receive(ds: Dataset, association: str) -> None:
        try:
            inbox.keep(ds, association)
        except RefusedInstance as exc:
            raise Refused(str(exc)) from exc

    return StorageNode(
        settings.intake_ae_title,
        settings.intake_peers,
        receive,
        inbox.released,
        ssl_context=tls_context(settings),
    )


class Intake:
    """Turns complete series of the inbox into study jobs, through the runtime's clients."""

    def __init__(self, settings: Settings, runtime: AgentRuntime, inbox: Inbox) -> None:
        self.settings = settings
        self.runtime = runtime
        self.inbox = inbox

    def poll(self) -> list[IntakeEvent]:
        """Handle every series complete by now; each ends taken (with its job) or set aside with a reason."""
        events: list[IntakeEvent] = []
        for series in self.inbox.stable(self.settings.intake_stable_age_s):
            event = IntakeEvent(study_instance_uid=series.study_instance_uid, series_instance_uid=series.series_instance_uid)
            try:
                taken = take_series(
                    series,
                    self.settings.intake_routes,
                    self.runtime.services.pacs,
                    self.runtime.services.fhir,
                    self.settings.patient_identifier_system,
                    store_to_pacs=self.settings.intake_store_to_pacs,
                )
                event.taken = taken
                if taken.imaging_study_id is None:
                    self.inbox.take(series, taken.detail)
                else:
                    report = self.runtime.start_study(taken.imaging_study_id, engine=taken.engine)
                    event.job_thread_id, event.pending_approvals = report.thread_id, len(report.pending)
                    self.inbox.take(series, f"ImagingStudy/{taken.imaging_study_id} job {report.thread_id}")
            # ValueError: a series the volume checks refuse, an engine the catalog does not know.
            except (RegistrationError, ServiceUnavailableError, FhirError, ValueError) as exc:
                event.error = (
                    f"series {series.series_instance_uid} of study {series.study_instance_uid} was set aside: {exc}. "
                    "Fix the cause and push the series again (it is kept in the inbox)."
                )
                log.error("intake: %s", event.error)
                self.inbox.fail(series, event.error)
            events.append(event)
        return events


def log_event(event: IntakeEvent) -> None:
    """An intake event in the log: identifiers only (the node inside the API service reports so)."""
    if event.error:
        log.error("intake: %s", event.error)
    elif event.taken:
        log.info("intake: series %s: %s; job %s", event.series_instance_uid, event.taken.detail, event.job_thread_id)


class DicomNode:
    """The node and its intake loop, running on threads of this process until `stop`.

    `on_event` hears each series handled (the CLI prints it; the API service logs it)."""

    def __init__(self, settings: Settings, runtime: AgentRuntime, on_event: Callable[[IntakeEvent], None]) -> None:
        if not settings.intake_peers:
            raise ValueError(
                "no sender may store: IMAGING_AGENT_INTAKE_PEERS is empty. Set it, e.g. "
                '[{"ae_title": "CT_SCANNER", "host": "10.0.0.5"}], and start again.'
            )
        self.settings = settings
        self.inbox = Inbox(settings.intake_dir)
        self._node = storage_node(settings, self.inbox)
        self._intake = Intake(settings, runtime, self.inbox)
        self._on_event = on_event
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._poll_forever, name="dicom-intake", daemon=True)
        self.port: int | None = None

    def start(self) -> int:
        """Listen (OSError when the address is taken) and start taking complete series; returns the port."""
        self.port = self._node.start(self.settings.intake_host, self.settings.intake_port)
        self._loop.start()
        return self.port

    def stop(self) -> None:
        self._stop.set()
        self._node.stop()
        if self._loop.is_alive():
            self._loop.join(timeout=60)

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            for event in self._intake.poll():
                self._on_event(event)
            self._stop.wait(_POLL_S)
