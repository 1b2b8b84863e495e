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
from agent.planner.parser import FHIR_ID, Request
from graphs.referents import Referents

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


def _pick(items: Sequence[str], ordinal: int) -> str | None:
    return items[ordinal] if -len(items) <= ordinal < len(items) else None


def resolve_targets(request: Request, refs: Referents) -> list[str] | str:
    """The studies a sentence is about: ids it names, or what it points back at in `refs`.

    Returns the question to ask back (a str) when it points at something the conversation does not hold."""
    if request.study_ids:
        return list(request.study_ids)
    if request.ordinal is not None and not request.has("job"):
        picked = _pick(refs.studies, request.ordinal)
        if picked is None:
            return (f"There is no study number {request.ordinal + 1 if request.ordinal >= 0 else 'last'} in my "
                    f"latest list ({len(refs.studies)} studies). Which study do you mean? I never guess an id.")
        return [picked]
    if request.has("them"):
        if not refs.studies:
            return "Which studies do you mean? No earlier answer of mine listed any; 'list pending CT studies' does."
        return list(refs.studies)
    if request.refers_back:
        focus = refs.focus or (refs.studies[0] if len(refs.studies) == 1 else None)
        return [focus] if focus else []
    return []


def _job_target(request: Request, refs: Referents) -> str | None:
    if request.job_ids:
        return request.job_ids[0]
    if request.ordinal is not None:
        return _pick(refs.jobs, request.ordinal)
    if request.has("ref") or request.has("job"):
        return refs.focus_job or (refs.jobs[0] if len(refs.jobs) == 1 else None)
    return None


def _ask_for_job(what: str) -> str:
    return (
        f"Which job should I {what}? Name it ('{what} job <job id>'); 'list jobs' or 'which jobs are waiting?' "
        "shows the ids. I never guess one."
    )


def _history(request: Request, targets: list[str]) -> Plan | None:
    """The reads of what was stored and run (lines 14-17), or None when the sentence asks for none."""
    study_args = [{"imaging_study_id": t} for t in targets]
    if request.has("audit"):
        if not targets:
            return Plan(text=_ask_for_study("show the audit trail of"))
        return Plan(calls=tuple(Call("audit_study", a) for a in study_args))
    if request.has("prior"):
        if not targets:
            return Plan(text=_ask_for_study("compare with its priors"))
        return Plan(calls=tuple(Call("prior_studies", a) for a in study_args))
    if request.has("stored") or (request.has("last") and request.has("available")):
        if targets:
            return Plan(calls=tuple(Call("stored_results", a) for a in study_args))
        if request.has("last"):
            return Plan(calls=(Call("stored_results", {}),))
        return Plan(text=_ask_for_study("show the stored results of") + " Or say 'the last processed study'.")
    return None


def _jobs(request: Request, refs: Referents) -> Plan | None:
    """Line 15: list jobs or show one."""
    if not (request.has("job") or request.job_ids):
        return None
    job = _job_target(request, refs)
    if job is not None and (request.job_ids or request.ordinal is not None or request.has("ref", "show")) \
            and not request.has("failed", "pending"):
        return Plan(calls=(Call("show_job", {"job_id": job}),))
    status = "failed" if request.has("failed") else "waiting-approval" if request.has("pending") else "all"
    return Plan(calls=(Call("list_jobs", {"status": status}),))


def _operator(request: Request, targets: list[str], refs: Referents) -> Plan | None:
    """Line 18: retry, re-run with another engine, cancel a job."""
    if request.has("cancel"):
        job = _job_target(request, refs)
        if job is None:
            return Plan(text=_ask_for_job("cancel"))
        return Plan(calls=(Call("cancel_job", {"job_id": job}),))
    if request.has("retry"):
        if not targets:
            return Plan(text=_ask_for_study("retry"))
        return Plan(calls=tuple(Call("retry_study", {"imaging_study_id": t}) for t in targets))
    if request.has("rerun"):
        if not targets:
            return Plan(text=_ask_for_study("re-run"))
        if not request.engine:
            return Plan(text="Which engine should I re-run it with? Say e.g. 're-run study <id> with monai-bundle'.")
        return Plan(calls=tuple(
            Call("rerun_study", {"imaging_study_id": t, "engine": request.engine}) for t in targets
        ))
    return None


def plan_request(request: Request, refs: Referents, previous: Request | None = None) -> Plan:
    """The first step for one sentence; `refs` are the conversation's earlier results (graphs/referents.py),
    `previous` the user's sentence before, which "the same for all of them" repeats."""
    if request.unsupported or request.has("approve"):
        return _plan(request, [], refs)  # refused, or only the list of approvals: no target needed
    resolved = resolve_targets(request, refs)
    if isinstance(resolved, str):
        return Plan(text=resolved)
    if previous is not None and request.has("ref") and resolved and not _asks_anything(request):
        return _plan(previous, resolved, refs)  # "the same for all of them": the last request, on these
    return _plan(request, resolved, refs)


def _asks_anything(request: Request) -> bool:
    """Whether the sentence names an action of its own (not only "the same for ...")."""
    return bool(request.concepts - {"ref", "all", "them", "study", "ct", "list", "lung"})


def _plan(request: Request, targets: list[str], refs: Referents) -> Plan:
    targets = [t for t in targets if FHIR_ID.fullmatch(t)]
    if request.unsupported:
        verbs = ", ".join(dict.fromkeys(request.unsupported))
        return Plan(text=help_text(f"I cannot do that ({verbs}): it is not one of my tools, so I did nothing."))
    if request.has("approve"):
        return Plan(calls=(Call("list_pending_approvals", {}),), closing=APPROVAL_HOWTO)
    operator = _operator(request, targets, refs)
    if operator is not None:
        return operator
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
    jobs = _jobs(request, refs)
    if jobs is not None:
        return jobs
    history = _history(request, targets)
    if history is not None:
        return history
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
