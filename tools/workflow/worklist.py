"""The batch's work list: the studies waiting in FHIR, less those a reviewer already rejected."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tools.fhir.client import FhirClient
from tools.fhir.task import task_token
from tools.fhir.worklist import WorklistItem, find_worklist
from tools.workflow.records import StudyOutcome

log = logging.getLogger(__name__)


def select_worklist(
    fhir: FhirClient, query: Mapping[str, str], engine: str
) -> tuple[list[WorklistItem], list[StudyOutcome]]:
    """The studies to run, and a `skipped` outcome for each study whose `engine` result was rejected.

    A rejected study stays `registered`; rerunning the same engine would show the reviewer the same
    result again, so the batch leaves it and says how to run it on purpose.
    """
    studies: list[WorklistItem] = []
    skipped: list[StudyOutcome] = []
    for item in find_worklist(fhir, query):
        tasks = (
            fhir.search("Task", {"identifier": task_token(item.study_instance_uid, engine)})
            if item.study_instance_uid
            else []
        )
        if tasks and tasks[0].status == "rejected":
            reason = tasks[0].statusReason.text if tasks[0].statusReason else "no reason recorded"
            skipped.append(
                StudyOutcome(
                    imaging_study_id=item.imaging_study_id,
                    study_instance_uid=item.study_instance_uid,
                    outcome="skipped",
                    detail=(
                        f"its {engine} result was rejected earlier ({reason}); run "
                        f"`imaging-agent process --study {item.imaging_study_id}` to process it again"
                    ),
                    seconds=0.0,
                )
            )
        else:
            studies.append(item)
    log.info("work list: %d studies for %s, %d skipped as rejected", len(studies), dict(query), len(skipped))
    return studies, skipped
