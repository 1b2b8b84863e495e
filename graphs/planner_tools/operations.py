"""The planner's operator actions: retry a failed study, re-run one with another engine, cancel a job that waits.

None of them is a clinical write. Retry and re-run start a study job, which stops at the study
graph's approval node like every other; cancel withdraws a job before any of its writes. Each one
needs the signed-in person of the conversation (`configurable.operator` of the chat's run config,
set by the CLI or the harness that holds the session, never by the model) to have one of
`OPERATOR_ROLES`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from graphs.planner_tools.history_models import JobCancelled
from graphs.runtime import RunReport, WorkflowRuntime
from tools.identity.principal import NotAllowedError, Principal, Role

OPERATOR_ROLES: tuple[Role, ...] = ("operator", "radiologist", "admin")

OPERATOR_KEY = "operator"
"""Where the chat's run config carries the signed-in principal (`config["configurable"]`)."""


def operator_of(config: dict[str, Any] | None, what: str) -> Principal:
    """The conversation's signed-in principal with an operator role; NotAllowedError otherwise."""
    raw = ((config or {}).get("configurable") or {}).get(OPERATOR_KEY)
    try:
        principal = raw if isinstance(raw, Principal) else Principal.model_validate(raw) if raw else None
    except ValidationError:
        principal = None
    if principal is None:
        raise NotAllowedError(
            f"{what} needs a signed-in operator: nobody is signed in to this conversation "
            "(imaging-agent login, or the web app's sign-in); nothing was done"
        )
    if not any(principal.has_role(role) for role in OPERATOR_ROLES):
        held = ", ".join(sorted(principal.roles)) or "no role"
        raise NotAllowedError(
            f"{principal.id} ({held}) may not {what}: it needs one of the roles {', '.join(OPERATOR_ROLES)}; "
            "nothing was done"
        )
    return principal


class Operations:
    """The operator actions over one runtime."""

    def __init__(self, runtime: WorkflowRuntime) -> None:
        self.runtime = runtime

    def _last_outcome(self, imaging_study_id: str) -> tuple[str, str] | None:
        """The newest finished outcome of the study in any job: (outcome, detail)."""
        for job in reversed(self.runtime.jobs()):
            for outcome in self.runtime.report(job.thread_id).outcomes:
                if outcome["imaging_study_id"] == imaging_study_id:
                    return outcome["outcome"], outcome["detail"]
        return None

    def retry_study(self, imaging_study_id: str) -> RunReport:
        last = self._last_outcome(imaging_study_id)
        if last is None or last[0] != "failed":
            state = "never ran here" if last is None else f"last ended {last[0]}"
            raise ValueError(
                f"ImagingStudy/{imaging_study_id} {state}: only a failed study is retried; "
                "to run it again on purpose, use rerun_study with an engine"
            )
        return self.runtime.start_study(imaging_study_id)

    def rerun_study(self, imaging_study_id: str, engine: str) -> RunReport:
        return self.runtime.start_study(imaging_study_id, engine=engine)

    def cancel_job(self, job_id: str, operator: Principal) -> JobCancelled:
        withdrawn = self.runtime.cancel(job_id, f"{operator.id} in the chat")
        return JobCancelled(
            job_id=job_id, status=self.runtime.job(job_id).status, withdrawn_approvals=[p.interrupt_id for p in withdrawn]
        )
