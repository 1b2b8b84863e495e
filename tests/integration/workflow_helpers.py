"""Shared by the workflow tests: seeded phantoms, per-study write checks, and a kill-able driver.

Every check here is per study (the session's PACS and FHIR server are shared by all tests),
never a global count. Run as a module, this file is the driver process the durability tests
SIGKILL: it runs the runtime and prints each progress event as one JSON line.

    python -m tests.integration.workflow_helpers SETTINGS_JSON batch QUERY_JSON [--stop-at STAGE --nth K] [--linger]
    python -m tests.integration.workflow_helpers SETTINGS_JSON study IMAGING_STUDY_ID [...]
    python -m tests.integration.workflow_helpers SETTINGS_JSON decide THREAD_ID [...]   (approves all)
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr

from agent.parts import fhir_client, pacs_client
from agent.seed import seed_datasets
from agent.settings import PROJECT_ROOT, Settings
from tests.identities import signed_decision
from tests.integration.listings import assessment_instances
from tools.fhir.builders import DICOM_UID_SYSTEM
from tools.fhir.client import FhirClient
from tools.fhir.task import task_token
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, write_phantom
from tools.results.assessment import ASSESSMENT_SERIES_NUMBER
from tools.workflow.approval import ApprovalDecision

ENGINE = "lung-threshold"
RESULT_MODALITIES = ["RTSTRUCT", "SEG", "SR"]
SOURCE_MODALITIES = ("CT", "DX", "CR", "MR")


def phantom_spec(seed: int, patient_id: str, **update: Any) -> PhantomSpec:
    """The small workflow phantom (60 x 256 x 256, 1.5 mm pixels, 5 mm slices)."""
    spec = PhantomSpec(
        slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=seed, patient_id=patient_id
    )
    return spec.model_copy(update=update)


class SeededStudy(BaseModel):
    imaging_study_id: str
    study_instance_uid: str
    patient_reference: str


def seed_phantom(settings: Settings, folder: Path, spec: PhantomSpec, drop_slice: int | None = None) -> SeededStudy:
    """Write the phantom to `folder` (without slice `drop_slice`, if given) and seed it."""
    files = write_phantom(make_phantom(spec), folder)
    if drop_slice is not None:
        sorted(files)[drop_slice].unlink()
    [seeded] = seed_datasets(settings, read_series_dir(folder))
    return SeededStudy(
        imaging_study_id=seeded.imaging_study_id,
        study_instance_uid=seeded.study_instance_uid,
        patient_reference=f"Patient/{seeded.patient_resource_id}",
    )


def worklist_of(patient_reference: str) -> dict[str, str]:
    """The default work list narrowed to one test's patient, so other tests' studies stay out."""
    return {"status": "registered", "modality": "CT", "subject": patient_reference}


def approve(reviewer: str = "dr-durable", automatic: bool = False) -> ApprovalDecision:
    return signed_decision(action="approve", reviewer_id=reviewer, reviewer_name="Dr. Durable", automatic=automatic)


def retire(settings: Settings, studies: Sequence[SeededStudy]) -> None:
    """Take a test's studies still `registered` off the shared work list (status cancelled)."""
    with fhir_client(settings) as fhir:
        for seeded in studies:
            study = fhir.read("ImagingStudy", seeded.imaging_study_id)
            if study.status == "registered":
                study.status = "cancelled"
                fhir.update(study, if_match=study.meta.versionId if study.meta else None)


# -- per-study checks ---------------------------------------------------------------------


def result_instances(settings: Settings, study_uid: str) -> dict[str, list[str]]:
    """SOP Instance UIDs of the study's AI results (not the CT, radiograph or MR, not the assessment record), by modality,
    over all its series (one UID per modality means one series and one instance: the PACS holds no
    empty series)."""
    found: dict[str, list[str]] = {}
    with pacs_client(settings) as pacs:
        for series in pacs.search_series(study_uid):
            if series.modality in SOURCE_MODALITIES or series.series_number == ASSESSMENT_SERIES_NUMBER:
                continue
            uids = [i.sop_instance_uid for i in pacs.search_instances(study_uid, series.series_instance_uid)]
            found.setdefault(series.modality or "?", []).extend(uids)
    return found


def task_of(settings: Settings, seeded: SeededStudy) -> Any:
    """The one Task of the study's job (by its identifier and by its focus: both must agree)."""
    with fhir_client(settings) as fhir:
        by_identifier = fhir.search("Task", {"identifier": task_token(seeded.study_instance_uid, ENGINE)})
        by_focus = fhir.search("Task", {"focus": f"ImagingStudy/{seeded.imaging_study_id}"})
    assert len(by_identifier) == 1, f"{len(by_identifier)} Tasks for study {seeded.study_instance_uid}"
    assert [t.id for t in by_focus] == [by_identifier[0].id]
    return by_identifier[0]


def reports_of(fhir: FhirClient, seeded: SeededStudy) -> list[Any]:
    return [
        r
        for r in fhir.search("DiagnosticReport", {"subject": seeded.patient_reference})
        if any(ref.reference == f"ImagingStudy/{seeded.imaging_study_id}" for ref in r.imagingStudy or [])
    ]


@dataclass
class WrittenResult:
    report: Any
    observations: list[Any]
    provenance: Any
    task: Any
    study: Any
    sop_instance_uids: dict[str, str] = field(default_factory=dict)


def assert_written_once(settings: Settings, seeded: SeededStudy) -> WrittenResult:
    """Exactly one RTSTRUCT, SEG and SR in the PACS and one of each FHIR resource for the study."""
    pacs = result_instances(settings, seeded.study_instance_uid)
    for modality in RESULT_MODALITIES:
        assert len(pacs.get(modality, [])) == 1, f"{modality} of {seeded.study_instance_uid}: {pacs}"
    [assessment_uid] = assessment_instances(settings, seeded.study_instance_uid)
    with fhir_client(settings) as fhir:
        [assessment] = fhir.search("Observation", {"identifier": f"{DICOM_UID_SYSTEM}|urn:oid:{assessment_uid}"})
        assert assessment.valueCodeableConcept.coding[0].code == "accepted"
        [report] = reports_of(fhir, seeded)
        result_uid = next(i.value for i in report.identifier if i.system == DICOM_UID_SYSTEM)
        assert len(fhir.search("DiagnosticReport", {"identifier": f"{DICOM_UID_SYSTEM}|{result_uid}"})) == 1
        observations = [
            o
            for o in fhir.search("Observation", {"subject": seeded.patient_reference})
            if any(ref.reference == f"ImagingStudy/{seeded.imaging_study_id}" for ref in o.derivedFrom or [])
        ]
        assert sorted(o.bodySite.coding[0].code for o in observations) == ["3341006", "44029006"]
        assert sorted(r.reference for r in report.result) == sorted(f"Observation/{o.id}" for o in observations)
        provenances = fhir.search("Provenance", {"target": f"DiagnosticReport/{report.id}"})
        assert len(provenances) == 1, f"{len(provenances)} Provenance for DiagnosticReport/{report.id}"
        audits = fhir.search("AuditEvent", {"entity": f"DiagnosticReport/{report.id}"})
        assert len(audits) == 1, f"{len(audits)} AuditEvent for DiagnosticReport/{report.id}"
        study = fhir.read("ImagingStudy", seeded.imaging_study_id)
    assert study.status == "available"
    series_uids = [s.uid for s in study.series]
    assert len(series_uids) == len(set(series_uids)) == 4, series_uids
    task = task_of(settings, seeded)
    assert task.status == "completed", f"Task {task.id}: {task.status} {task.statusReason}"
    return WrittenResult(
        report=report,
        observations=observations,
        provenance=provenances[0],
        task=task,
        study=study,
        sop_instance_uids={m: pacs[m][0] for m in RESULT_MODALITIES},
    )


def assert_nothing_written(settings: Settings, seeded: SeededStudy) -> None:
    """No result in the PACS, no report in FHIR, the study still `registered`."""
    assert result_instances(settings, seeded.study_instance_uid) == {}
    with fhir_client(settings) as fhir:
        assert reports_of(fhir, seeded) == []
        assert fhir.read("ImagingStudy", seeded.imaging_study_id).status == "registered"


# -- a reverse proxy that injects faults ----------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@dataclass
class Fault:
    """Answer `status` to the requests `match(method, path)` accepts, `times` times (None: always).
    A `status` of None closes the connection without an answer, as a server going down does."""

    match: Callable[[str, str], bool]
    status: int | None
    times: int | None = None
    hits: int = 0
    body: bytes | None = None
    """The answer's body as given (sent as application/dicom+json) instead of an OperationOutcome."""


def is_transaction(method: str, path: str) -> bool:
    """A FHIR transaction: POST to the base URL itself."""
    return method == "POST" and path.split("?", 1)[0].rstrip("/") == "/fhir"


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of a real server; every other request is forwarded.

    The upstream origin in answers (Location headers, Bundle links, fullUrls) is rewritten to
    the proxy's own, as a real reverse proxy configured with its public base URL would do."""

    def __init__(self, upstream_url: str, faults: Sequence[Fault] = ()) -> None:
        parsed = httpx.URL(upstream_url)
        self.upstream = f"{parsed.scheme}://{parsed.host}:{parsed.port}"
        self.faults = list(faults)
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, int | None]] = []
        self._client = httpx.Client(base_url=self.upstream, timeout=60.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault_for(self.command, self.path)
                if fault is not None and fault.status is None:
                    self.close_connection = True
                    return
                if fault is not None and fault.body is not None:
                    assert fault.status is not None
                    self._answer(fault.status, {"Content-Type": "application/dicom+json"}, fault.body)
                    return
                if fault is not None:
                    assert fault.status is not None
                    payload = json.dumps(
                        {
                            "resourceType": "OperationOutcome",
                            "issue": [{"severity": "error", "code": "conflict" if fault.status == 412 else "exception",
                                       "diagnostics": f"injected by the test proxy: HTTP {fault.status}"}],
                        }
                    ).encode()
                    self._answer(fault.status, {"Content-Type": "application/fhir+json"}, payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                answer = proxy._client.request(self.command, self.path, headers=headers, content=body)
                out = {k: proxy._rewrite(v) for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
                content = answer.content
                if any(t in answer.headers.get("content-type", "") for t in ("json", "xml", "text")):
                    content = proxy._rewrite(content.decode()).encode()
                proxy.seen.append((self.command, self.path, answer.status_code))
                self._answer(answer.status_code, out, content)

            def _answer(self, status: int, headers: dict[str, str], content: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.times is None or fault.hits < fault.times) and fault.match(method, path):
                    fault.hits += 1
                    self.seen.append((method, path, fault.status))
                    return fault
        return None

    def _rewrite(self, text: str) -> str:
        return text.replace(self.upstream, self.origin)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


# -- the driver process -------------------------------------------------------------------


def settings_json(settings: Settings) -> str:
    """The settings for the driver's command line; secrets are left out (they would arrive masked)."""
    return settings.model_dump_json(exclude={name for name, value in settings if isinstance(value, SecretStr)})


def secrets_env(settings: Settings) -> dict[str, str]:
    """The secrets `settings_json` leaves out, for the driver's environment (never its command line)."""
    return {
        f"IMAGING_AGENT_{name.upper()}": value.get_secret_value()
        for name, value in settings
        if isinstance(value, SecretStr)
    }


@dataclass
class Driver:
    """A driver subprocess; its progress lines are read on a thread so reads can time out."""

    process: subprocess.Popen[str]
    stderr_path: Path
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings, args: Sequence[str], log_dir: Path) -> Driver:
        log_dir.mkdir(parents=True, exist_ok=True)
        stderr_path = log_dir / f"driver-{time.monotonic_ns()}.stderr"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.workflow_helpers", settings_json(settings), *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **secrets_env(settings)},
            stdout=subprocess.PIPE,
            stderr=stderr_path.open("w"),
            stdin=subprocess.DEVNULL,
            text=True,
        )
        driver = cls(process=process, stderr_path=stderr_path)
        threading.Thread(target=driver._pump, daemon=True).start()
        return driver

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _fail(self, why: str) -> None:
        self.process.kill()
        self.process.wait()
        raise AssertionError(f"driver {why}; stderr:\n{self.stderr_path.read_text()[-4000:]}")

    def wait_for(self, key: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Read events until one carrying `key` (e.g. "stopped", "returned") arrives."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._fail(f"sent no '{key}' line within {timeout_s:.0f} s")
            if line is None:
                self._fail(f"exited ({self.process.wait()}) before a '{key}' line")
            event = json.loads(line)
            self.events.append(event)
            if key in event:
                return event

    def sigkill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL

    def finish(self, timeout_s: float = 120.0) -> dict[str, Any]:
        returned = self.wait_for("returned", timeout_s)
        assert self.process.wait(timeout=30) == 0, self.stderr_path.read_text()[-4000:]
        return returned


def study_events(events: Sequence[dict[str, Any]], imaging_study_id: str) -> list[str]:
    return [e["stage"] for e in events if e.get("imaging_study_id") == imaging_study_id and "stage" in e]


def _emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, default=str), flush=True)


def _progress_handler(stop_at: str | None, nth: int) -> Any:
    """Print each event; at `stop_at` of the `nth` study seen (0: of any study), stop the whole
    process (SIGSTOP) so the test's SIGKILL lands there and not some stages later."""
    seen: list[str] = []

    def on_progress(event: dict[str, Any]) -> None:
        study = str(event.get("imaging_study_id"))
        if study not in seen:
            seen.append(study)
        _emit(event)
        if stop_at is not None and event.get("stage") == stop_at and nth in (0, seen.index(study) + 1):
            _emit({"stopped": stop_at, "imaging_study_id": study})
            os.kill(os.getpid(), signal.SIGSTOP)

    return on_progress


def main(argv: Sequence[str] | None = None) -> None:
    from agent.runtime import AgentRuntime

    parser = argparse.ArgumentParser(prog="workflow_helpers")
    parser.add_argument("settings")
    parser.add_argument("mode", choices=["batch", "study", "decide"])
    parser.add_argument("target", help="batch: query JSON; study: ImagingStudy id; decide: thread id")
    parser.add_argument("--stop-at", default=None)
    parser.add_argument("--nth", type=int, default=1)
    parser.add_argument("--linger", action="store_true", help="after returning, wait to be killed")
    args = parser.parse_args(argv)
    settings = Settings(**json.loads(args.settings), _env_file=None)
    on_progress = _progress_handler(args.stop_at, args.nth)
    with AgentRuntime(settings) as runtime:
        if args.mode == "batch":
            report = runtime.start_batch(json.loads(args.target), on_progress=on_progress)
        elif args.mode == "study":
            report = runtime.start_study(args.target, on_progress=on_progress)
        else:
            pending = runtime.report(args.target).pending
            decisions = {p.interrupt_id: approve() for p in pending}
            report = runtime.decide(args.target, decisions, on_progress=on_progress)
        _emit({"returned": report.model_dump(mode="json")})
        if args.linger:
            while True:
                time.sleep(60)


def work_files(run_dir: Path) -> Iterator[tuple[Path, int]]:
    """Every file under the work directory with its mtime in ns: to prove nothing was redone."""
    for path in sorted((run_dir / "work").rglob("*")):
        if path.is_file():
            yield path, path.stat().st_mtime_ns


if __name__ == "__main__":
    main()
