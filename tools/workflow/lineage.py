"""The input/output audit index: which received instances produced which stored result, who approved
it, when, and where it was stored — in the project's database, one chain per result object.

Written by the write step right after the approved objects are stored and verified, so it lists
only what the PACS holds; read by `imaging-agent audit STUDY_UID`. Inputs are hashed as the agent
kept them after retrieval (the Part 10 files of the fetched series), outputs as approved.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from pydicom import dcmread
from sqlalchemy import Engine, func, insert, select

from tools.state.schema import result_inputs, result_outputs
from tools.workflow.approval import ApprovalDecision, PendingDicomWrite


class SourceInstance(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    sha256: str


class ResultChain(BaseModel):
    """One stored result object and everything it came from."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    kind: str
    sha256: str
    task_id: str
    approved_by: str
    approved_by_issuer: str
    approved_by_name: str
    approved_at: datetime
    automatic: bool
    stored_at: datetime
    destination: str
    inputs: list[SourceInstance]


def source_instances(source_dir: Path) -> list[SourceInstance]:
    """The fetched series' instances with the sha256 of each file as kept."""
    instances = []
    for path in sorted(source_dir.glob("*.dcm")):
        data = path.read_bytes()
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
        instances.append(
            SourceInstance(
                sop_instance_uid=str(header.SOPInstanceUID),
                series_instance_uid=str(header.SeriesInstanceUID),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return instances


class LineageStore:
    """The `result_outputs` and `result_inputs` tables of the runtime's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self,
        study_instance_uid: str,
        task_id: str,
        writes: Sequence[PendingDicomWrite],
        inputs: Sequence[SourceInstance],
        decision: ApprovalDecision,
        destination: str,
    ) -> None:
        """Index the stored objects of one approval; objects indexed before (a resumed write) are kept as they were."""
        stored_at = datetime.now(UTC).isoformat()
        with self.engine.begin() as conn:
            known = set(
                conn.scalars(
                    select(result_outputs.c.sop_instance_uid).where(
                        result_outputs.c.sop_instance_uid.in_([w.sop_instance_uid for w in writes])
                    )
                )
            )
            for write in writes:
                if write.sop_instance_uid in known:
                    continue
                conn.execute(
                    insert(result_outputs).values(
                        sop_instance_uid=write.sop_instance_uid,
                        study_instance_uid=study_instance_uid,
                        series_instance_uid=write.series_instance_uid,
                        kind=write.kind,
                        sha256=write.sha256,
                        task_id=task_id,
                        approved_by=decision.reviewer_id,
                        approved_by_issuer=decision.issuer,
                        approved_by_name=decision.reviewer_name,
                        approved_at=decision.decided_at.isoformat(),
                        automatic=int(decision.automatic),
                        stored_at=stored_at,
                        destination=destination,
                    )
                )
                if inputs:
                    conn.execute(
                        insert(result_inputs),
                        [{"output_sop_instance_uid": write.sop_instance_uid, **i.model_dump()} for i in inputs],
                    )

    def latest_studies(self, limit: int = 10) -> list[str]:
        """Study Instance UIDs with stored results, the most recently stored first."""
        last = func.max(result_outputs.c.stored_at)
        query = (
            select(result_outputs.c.study_instance_uid)
            .group_by(result_outputs.c.study_instance_uid)
            .order_by(last.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.scalars(query))

    def chains(self, study_instance_uid: str) -> list[ResultChain]:
        """Every indexed result of a study, oldest first, with its inputs."""
        with self.engine.connect() as conn:
            outputs = conn.execute(
                select(result_outputs)
                .where(result_outputs.c.study_instance_uid == study_instance_uid)
                .order_by(result_outputs.c.stored_at, result_outputs.c.kind)
            ).mappings().all()
            chains = []
            for row in outputs:
                inputs = conn.execute(
                    select(result_inputs.c.sop_instance_uid, result_inputs.c.series_instance_uid, result_inputs.c.sha256)
                    .where(result_inputs.c.output_sop_instance_uid == row["sop_instance_uid"])
                    .order_by(result_inputs.c.sop_instance_uid)
                ).mappings().all()
                chains.append(
                    ResultChain(
                        **{**row, "automatic": bool(row["automatic"])},
                        inputs=[SourceInstance(**i) for i in inputs],
                    )
                )
        return chains
