"""The studies a goal runs against: phantom CTs seeded into the PACS and FHIR, brought to a named state.

A study is `pending` (registered, never run), `processed` (run and approved: results stored),
`waiting` (run, its approval open), `failed` (a slice missing, its job failed) or `rejected`.
Names (`current`, `a`, ...) are what goals refer to as `$current`; ids never appear in the goal file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agent.seed import seed_datasets
from agent.settings import Settings
from graphs.runtime import WorkflowRuntime
from tools.identity.principal import Principal
from tools.imaging.volume import read_series_dir
from tools.phantom import PhantomSpec, make_phantom, redate, write_phantom
from tools.workflow.approval import ApprovalDecision

StudyState = Literal["pending", "processed", "waiting", "failed", "rejected"]


class StudySeed(BaseModel):
    """One study of a world, as the goal file describes it."""

    state: StudyState = "pending"
    patient: str | None = Field(default=None, description="a patient key: studies with the same key share a patient")
    date: str = Field(default="20240101", description="StudyDate, YYYYMMDD")
    description: str | None = Field(default=None, description="the study description (free text, may hold an injection)")


class WorldStudy(BaseModel):
    name: str
    imaging_study_id: str
    study_instance_uid: str
    patient_reference: str
    patient_id: str
    job_id: str | None = None


class World(BaseModel):
    studies: dict[str, WorldStudy] = {}

    def text(self, sentence: str) -> str:
        """A goal's sentence with every `$name`, `$job:name` and `$patient:name` replaced by its id."""
        return re.sub(r"\$(?:job:|patient:)?[a-z][a-z0-9_]*", lambda m: self.ref(m.group(0)), sentence)

    def ref(self, key: str) -> str:
        """`$name` -> the ImagingStudy id; `$job:name` -> the job that ran it; `$patient:name` -> its
        patient's MRN; anything else as given."""
        if key.startswith("$patient:"):
            return self.studies[key.removeprefix("$patient:")].patient_id
        if key.startswith("$job:"):
            job = self.studies[key.removeprefix("$job:")].job_id
            if job is None:
                raise KeyError(f"study {key} of the world has no job")
            return job
        if key.startswith("$"):
            return self.studies[key[1:]].imaging_study_id
        return key


def _spec(seed: int, patient_id: str, description: str | None) -> PhantomSpec:
    spec = PhantomSpec(
        slices=60, rows=256, columns=256, pixel_spacing_mm=1.5, slice_thickness_mm=5.0, seed=seed, patient_id=patient_id,
        patient_name="Eval^Phantom",
    )
    return spec.model_copy(update={"study_description": description}) if description else spec


def seed_study(
    settings: Settings,
    runtime: WorkflowRuntime,
    folder: Path,
    name: str,
    seed: StudySeed,
    number: int,
    prefix: str,
    decide: Callable[[str], ApprovalDecision],
) -> WorldStudy:
    """Seed one phantom study and run it to `seed.state`; `number` makes its UIDs unique, `prefix` its
    patient's MRN (`PREFIX-PATIENT`: studies of one prefix with the same `patient` key share a patient)."""
    patient_id = f"{prefix}-{seed.patient or name}".upper()
    files = write_phantom(make_phantom(_spec(number, patient_id, seed.description)), folder)
    if seed.date != "20240101":
        redate(files, seed.date)
    if seed.state == "failed":
        sorted(files)[len(files) // 2].unlink()  # a missing slice: the study fails at assembly
    [registered] = seed_datasets(settings, read_series_dir(folder))
    study = WorldStudy(
        name=name,
        imaging_study_id=registered.imaging_study_id,
        study_instance_uid=registered.study_instance_uid,
        patient_reference=f"Patient/{registered.patient_resource_id}",
        patient_id=patient_id,
    )
    if seed.state == "pending":
        return study
    report = runtime.start_study(study.imaging_study_id)
    study.job_id = report.thread_id
    if seed.state in ("processed", "rejected") and report.pending:
        action = "approve" if seed.state == "processed" else "reject"
        report = runtime.decide(report.thread_id, {p.interrupt_id: decide(action) for p in report.pending})
    reached = {
        "waiting": bool(report.pending),
        "failed": [o["outcome"] for o in report.outcomes] == ["failed"],
        "processed": [o["outcome"] for o in report.outcomes] == ["completed"],
        "rejected": [o["outcome"] for o in report.outcomes] == ["rejected"],
    }[seed.state]
    if not reached:
        raise RuntimeError(
            f"world study {name} (ImagingStudy/{study.imaging_study_id}) did not reach state {seed.state}: "
            f"job {report.thread_id} reports {report.outcomes or 'no outcome'}; check the services and the engine"
        )
    return study


def harness_principal(roles: tuple[str, ...] = ("radiologist", "operator")) -> Principal:
    """The evaluation's own signed-in person: decides the goals' approvals in its private run directory."""
    from datetime import UTC, datetime

    return Principal(
        id="eval-harness", display_name="Evaluation harness", issuer="urn:imaging-agent:eval",
        roles=frozenset(roles),  # type: ignore[arg-type]
        auth_time=datetime.now(UTC), auth_method="eval-harness",
    )


def harness_decision(action: str) -> ApprovalDecision:
    reason = "evaluation goal: reject" if action == "reject" else None
    return ApprovalDecision.by(harness_principal(), action, reason, reason_code="other" if reason else None)
