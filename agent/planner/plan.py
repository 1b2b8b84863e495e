"""From a parsed request to tool calls: the planner's decisions, in the order they are made.

It never guesses a tool, never invents an identifier, never calls a write tool
(run_study_pipeline, run_batch, store_results_to_pacs, update_fhir) unless the sentence asks to
store, write, update or process results, and it cannot approve or reject anything: that is a
radiologist's decision in the approval card. Refusals (verbs no tool does, organs other than
the lungs) come first, then writes, then reads; a read of every pending study is a search
first and then one call per returned id (see `agent.planner.chat_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.planner.grammar import help_text
from agent.planner.parser import Request

APPROVAL_HOWTO = (
    "I cannot approve or reject results. A radiologist decides in the approval card (Approve / Reject "
    "buttons) or on the command line with `imaging-agent approvals approve ID` or "
    "`imaging-agent approvals reject ID --reason ...`."
)


@dataclass(frozen=True)
class Call:
    """One tool call: the tool's name and its arguments."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """The planner's first step for a request, and what follows once tool results are in."""

    calls: tuple[Call, ...] = ()
    text: str = ""
    per_study_next: tuple[str, ...] = ()
    """Read tools to call for every study the search returns (multi-step requests)."""
    closing: str = ""
    """Appended to the summary once the tools have answered."""



def _engine_args(request: Request) -> dict[str, Any]:
    return {"engine": request.engine} if request.engine else {}


def _segment_args(request: Request) -> dict[str, Any]:
    args = _engine_args(request)
    lungs = ["left-lung" if request.has("left") else "right-lung"] if request.has("left") != request.has("right") else ["lungs"]
    if request.has("heart"):
        # Only MedImageParse draws the heart (on a chest radiograph).
        args.setdefault("engine", "medimageparse")
        args["targets"] = [*lungs, "heart"] if request.has("lung") else ["heart"]
    elif lungs != ["lungs"]:
        args["targets"] = lungs
    return args


def _read_actions(request: Request) -> list[str]:
    actions: list[str] = []
    if request.has("fetch") or (request.has("get") and request.has("pixels")):
        actions.append("fetch_series")
    if request.has("segment"):
        actions.append("segment")
    if request.has("object"):
        actions.append("write_rtstruct_seg_sr")
    if request.has("report"):
        actions.append("generate_report")
    return actions


def _write_tool(request: Request) -> str | None:
    """The write tool the sentence asks for, or None when it asks for no write."""
    fhir = request.has("fhir") and request.has("update", "store", "write") or (
        request.has("mark") and request.has("available")
    )
    pacs = (request.has("store", "write") and request.has("pacs")) or (
        request.has("store") and not request.has("fhir")
    )
    pipeline = request.has("process") or (request.has("run") and request.has("pipeline"))
    if pipeline or (pacs and fhir):
        return "run_study_pipeline"
    if pacs:
        return "store_results_to_pacs"
    if fhir:
        return "update_fhir"
    return None


def per_study(names: Sequence[str], ids: Sequence[str], request: Request) -> Plan:
    calls = []
    for study_id in ids:
        for name in names:
            extra = _segment_args(request) if name == "segment" else _engine_args(request)
            calls.append(Call(name, {"imaging_study_id": study_id, **extra}))
    return Plan(calls=tuple(calls))


def _ask_for_study(what: str) -> str:
    return (
        f"Which study should I {what}? I need an ImagingStudy id, e.g. '{what} study <id>'; "
        "'list pending CT studies' shows the ids. I never guess one. Type 'help' for everything I understand."
    )


def _understood(request: Request) -> str:
    if not request.recognised:
        return f'I could not map "{request.text.strip()[:200]}" to anything I can do.'
    words = ", ".join(dict.fromkeys(request.recognised))
    return f'I did not find a complete request in "{request.text.strip()[:200]}" (I recognised: {words}).'


def plan_request(request: Request, previous_study: str | None) -> Plan:
    """The first step for one sentence; `previous_study` is the single study of the latest search."""
    targets = list(request.study_ids) or (
        [previous_study] if previous_study and request.refers_back else []
    )
    if request.unsupported:
        verbs = ", ".join(dict.fromkeys(request.unsupported))
        return Plan(text=help_text(f"I cannot do that ({verbs}): it is not one of my tools, so I did nothing."))
    if request.has("approve"):
        return Plan(calls=(Call("list_pending_approvals", {}),), closing=APPROVAL_HOWTO)
    write = _write_tool(request)
    reads = _read_actions(request)
    if request.organs and (write or reads):
        organs = ", ".join(dict.fromkeys(request.organs))
        return Plan(text=(
            f"I can only segment the lungs (left lung, right lung) and, with medimageparse, the heart; not: {organs}. "
            "Nothing was started."
        ))
    if request.has("verify") and (request.has("ct", "xray", "mr") or request.has("study")):
        if targets:
            return Plan(calls=tuple(Call("check_input", {"imaging_study_id": t}) for t in targets))
        return Plan(text=_ask_for_study("check"))
    if request.has("xray") and request.has("report") and request.scope_all and not request.study_ids:
        # Drafts come with the study pipeline of each radiograph (CXRReportGen when configured) and wait
        # for approval like any result.
        args = {"status": request.status, "modality": "DX", "engine": request.engine or "medimageparse"}
        return Plan(calls=(Call("run_batch", args),))
    if write:
        if targets:
            return per_study([write], targets, request)
        if request.scope_all:
            args = {"status": request.status, "modality": request.modality, **_engine_args(request)}
            return Plan(calls=(Call("run_batch", args),))
        return Plan(text=help_text(
            "You asked me to store, update or process results, but named no study and no work list, "
            "so I started nothing. Say e.g. 'store the results for study <id> in PACS' or "
            "'analyze all pending CT scans and store RTSTRUCT in PACS'."
        ))
    if request.has("approval") and not reads:
        return Plan(calls=(Call("list_pending_approvals", {}),), closing=APPROVAL_HOWTO)
    if reads or (request.has("show") and (request.study_ids or request.refers_back)):
        actions = reads or ["show_study"]
        if targets:
            return per_study(actions, targets, request)
        if request.scope_all and reads:
            search = Call("search_imaging_studies", {"status": request.status, "modality": request.modality})
            return Plan(calls=(search,), per_study_next=tuple(actions))
        verb = {"segment": "segment", "fetch_series": "fetch", "check_input": "check", "write_rtstruct_seg_sr": "build the RTSTRUCT for",
                "generate_report": "report on", "show_study": "show"}[actions[0]]
        return Plan(text=_ask_for_study(verb))
    if request.mrn:
        if request.has("study", "pending", "available", "all"):
            args = {"status": request.status, "modality": request.modality, "patient_identifier": request.mrn}
            return Plan(calls=(Call("search_imaging_studies", args),))
        return Plan(calls=(Call("search_patients", {"identifier": request.mrn}),))
    if request.has("patient"):
        return Plan(text="Which patient? Say 'find patient <MRN>' with the MRN (DICOM PatientID).")
    if request.has("study", "pending", "available") and (
        request.has("list", "show") or request.question or request.unknown_words == 0
    ):
        return Plan(calls=(Call("search_imaging_studies", {"status": request.status, "modality": request.modality}),))
    if request.has("help") or not request.text.strip() or set(request.text.strip()) <= {"?"}:
        return Plan(text=help_text())
    return Plan(text=help_text(_understood(request)))
