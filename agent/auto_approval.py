"""What `--yes` may approve without asking: only what the person who typed it asked for.

`process --yes` covers the jobs that same command started; `ask --yes` covers, among the jobs
its conversation started, the studies whose ids the goal names. Everything else — a job left
waiting by another terminal or the app, a study the goal did not name, a study that also waits
for a decision in another job — is asked about, never approved automatically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from graphs.runtime import PendingApproval

# FHIR ids and DICOM UIDs as they can appear in a goal ("study ct-001", "ImagingStudy/ct-001").
# A sentence's final dot or dash is not part of the id.
_ID_IN_TEXT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")


def ids_named_in(goal: str) -> frozenset[str]:
    """Every word of the goal that could be a study's id or UID."""
    return frozenset(_ID_IN_TEXT.findall(goal))


@dataclass
class AutoApprovalScope:
    """The approvals one command's `--yes` covers; `refusal` says why one is not covered."""

    enabled: bool
    own_jobs: set[str] = field(default_factory=set)
    named_studies: frozenset[str] | None = None
    """None: any study of the command's own jobs (process); a set: only these ids or UIDs (ask)."""

    def refusal(self, pending: PendingApproval, open_approvals: Iterable[PendingApproval]) -> str | None:
        """None when `--yes` approves `pending`; otherwise why a person must answer it.

        `open_approvals`: every approval waiting in the durable store, any job."""
        request = pending.request
        if not self.enabled:
            return "--yes was not given"
        if pending.thread_id not in self.own_jobs:
            return f"job {pending.thread_id} was not started by this command"
        if self.named_studies is not None and not {request.imaging_study_id, request.study_instance_uid} & self.named_studies:
            return f"the goal does not name ImagingStudy/{request.imaging_study_id}"
        elsewhere = sorted(
            {p.thread_id for p in open_approvals if p.thread_id != pending.thread_id and p.request.imaging_study_id == request.imaging_study_id}
        )
        if elsewhere:
            return f"ImagingStudy/{request.imaging_study_id} also waits for a decision in job {', '.join(elsewhere)}"
        return None
