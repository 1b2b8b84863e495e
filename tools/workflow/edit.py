"""The edit step: a reviewer's corrections applied to the stored masks, then measured and QA-checked again.

The AI's own masks stay in the work store untouched (they are what the correction derives from,
and what `imaging-agent train` learns the difference from); the corrected result is a new file
whose name and UIDs carry the edit digest, so the next card shows new objects with new hashes and
the approval covers exactly the corrected version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tools.imaging.volume_store import load_volume, load_volume_geometry
from tools.review.edits import EditError, apply_edits, check_edits, edits_digest
from tools.segmentation.base import ResultEdit, SegmentationResult, StructureMask
from tools.segmentation.qa import assess
from tools.segmentation.result_store import load_result, save_result
from tools.workflow.approval import ApprovalDecision, ApprovalRequest
from tools.workflow.records import StoredFile, StoredSegmentation


def check_review_edits(request: ApprovalRequest, decision: ApprovalDecision) -> None:
    """Refuse, before anything is recorded, a modification whose edits do not fit the card's result.

    Raises `tools.review.edits.EditError` naming the study, the edit and what is wrong.
    """
    if decision.action != "modify":
        return
    if request.review_files is None:
        raise EditError(
            f"study {request.imaging_study_id}: this result was built before results could be edited; "
            "approve or reject it, or run the study again to edit its contours."
        )
    geometry = load_volume_geometry(Path(request.review_files.volume_path))
    check_edits(
        decision.edits, geometry, [s.key for s in request.structures], request.series.series_instance_uid
    )


def apply_review_edits(
    volume_file: StoredFile, segmentation: StoredSegmentation, request: ApprovalRequest, decision: ApprovalDecision
) -> StoredSegmentation:
    """The result of `request` with `decision.edits` applied, re-assessed and stored beside it.

    Raises `tools.review.edits.EditError` (naming the edit and the series) for an edit that does
    not fit the volume or the result.
    """
    volume = load_volume(volume_file.path, volume_file.sha256)
    current = load_result(segmentation.path, segmentation.sha256)
    masks = apply_edits(
        {s.structure.key: s.mask for s in current.structures}, volume.geometry, decision.edits, volume.series_instance_uid
    )
    this_round = edits_digest(decision.edits)
    before = current.edit
    # Chained over rounds: a second correction of a corrected result is another version again.
    digest = hashlib.sha256(f"{before.digest if before else request.request_id}|{this_round}".encode()).hexdigest()
    edit = ResultEdit(
        digest=digest,
        edits_sha256=this_round,
        edit_count=len(decision.edits) + (before.edit_count if before else 0),
        editor_id=decision.reviewer_id,
        editor_name=decision.reviewer_name,
        editor_issuer=decision.issuer,
        edited_at=decision.decided_at,
        derived_from_result_uid=before.derived_from_result_uid if before else request.request_id,
    )
    # Measurements and QA flags describe masks: the corrected masks are measured and checked afresh.
    edited = SegmentationResult(
        engine=current.engine,
        engine_version=current.engine_version,
        structures=[
            StructureMask(structure=s.structure, mask=masks[s.structure.key], confidence=s.confidence)
            for s in current.structures
        ],
        seconds=current.seconds,
        parameters=current.parameters,
        edit=edit,
    )
    path = segmentation.path.with_name(f"{segmentation.path.stem.split('-edit-')[0]}-edit-{digest[:16]}.npz")
    return StoredSegmentation(
        path=path, sha256=save_result(assess(volume, edited), path), engine_fallbacks=segmentation.engine_fallbacks
    )
