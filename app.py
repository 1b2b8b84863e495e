"""The Gradio app (`imaging-agent ui`): chat with the planner, radiologist approvals, jobs, status.

- Chat: the chat graph (graphs/chat.py) streamed into a `gr.Chatbot`: each tool call is a
  collapsible step with a short result, each study's workflow progress a live line, then the
  answer. One conversation (LangGraph thread) per browser session.
- When the conversation stops at an approval, the approval card shows what a radiologist needs
  to decide (patient/study, series, contour previews, volumes and QA flags, every pending write);
  Approve / Reject resume the chat graph and stream its continuation.
- Approvals tab: every pending approval in the durable store (also those started from the CLI or
  Python), answered through `AgentRuntime.decide`. Jobs tab: every job and its per-study outcomes.

LangGraph runs synchronously and the chat graph shares the runtime's SQLite connection, while
Gradio runs handlers in a thread pool: every graph or runtime call goes through one lock, in a
worker thread of its own (a LangGraph stream must be resumed on the thread that started it).
Only 127.0.0.1 is served: the app shows patient data and has no login.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from PIL import Image
from pydantic import BaseModel

from agent.llm import planner_info
from agent.parts import fhir_client, pacs_client
from agent.settings import Settings, get_settings
from graphs.chat import approval_card, approve, build_chat_graph, reject
from graphs.runtime import AgentRuntime, Job, PendingApproval, RunReport
from tools.workflow.approval import ApprovalDecision

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
EXAMPLE_GOAL = "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS"
BUSY_WAIT_S = 30.0
"""How long a person's action waits for another run (chat or approval) to finish."""
REFRESH_EVERY_S = 10.0
STAGE_LABELS = {"approval": "waiting for approval", "write_pacs": "storing in PACS", "write_fhir": "updating FHIR"}

_TOOL_ERROR = re.compile(r"^Error: \w+\((['\"])(.*)\1\)\s*(Please fix your mistakes\.)?$", re.DOTALL)
"""ToolNode's wrapping of a tool's exception: "Error: Type('message')\\n Please fix your mistakes."."""

Card = Mapping[str, Any]
"""An approval card: tools.workflow.approval.ApprovalRequest fields + "approval_id" + "job"."""


# -- pure rendering -------------------------------------------------------------------------


def _cell(value: object) -> str:
    """Table-safe text: DICOM/FHIR free text may hold pipes or line breaks."""
    return str(value if value is not None else "-").replace("|", "\\|").replace("\n", " ").strip() or "-"


def planner_markdown(settings: Settings) -> str:
    info = planner_info(settings)
    return f"**Planner ({info.kind})**: {info.description}"


class ServiceCheck(BaseModel):
    name: str
    url: str
    ok: bool
    detail: str


def check_services(settings: Settings) -> list[ServiceCheck]:
    """One quick try per service (no retries): a status line must not hang on a dead server."""
    quick = settings.model_copy(update={"http_retry_attempts": 1, "http_timeout_s": min(settings.http_timeout_s, 5.0)})
    checks: list[ServiceCheck] = []
    try:
        with pacs_client(quick) as pacs:
            ok = pacs.ping()
        detail = "DICOMweb answers" if ok else "no DICOMweb answer"
    except Exception as exc:  # any failure is a status to show, not a crash of the page
        ok, detail = False, str(exc)
    checks.append(ServiceCheck(name="PACS", url=settings.dicomweb_url, ok=ok, detail=detail))
    try:
        with fhir_client(quick) as fhir:
            capabilities = fhir.capabilities()
        ok, detail = True, f"FHIR {capabilities.fhirVersion or 'server'} answers"
    except Exception as exc:
        ok, detail = False, str(exc)
    checks.append(ServiceCheck(name="FHIR", url=settings.fhir_url, ok=ok, detail=detail))
    return checks


def services_markdown(checks: Sequence[ServiceCheck]) -> str:
    parts = []
    for check in checks:
        if check.ok:
            parts.append(f"✓ **{check.name}** up ({check.url})")
        else:
            hint = "" if "imaging-agent services" in check.detail else (
                " Start the local services with `imaging-agent services up`, or fix the URL in `.env`."
            )
            parts.append(f"✗ **{check.name}** not reachable at {check.url}: {_cell(check.detail)}{hint}")
    return " &nbsp;·&nbsp; ".join(parts)


def card_summary_markdown(card: Card) -> str:
    """Who and what the decision is about."""
    series = card["series"]
    thickness = f"{series['slice_thickness_mm']} mm" if series.get("slice_thickness_mm") is not None else "? mm"
    return "\n\n".join(
        [
            f"### Approval needed: ImagingStudy/{card['imaging_study_id']}",
            f"**Patient** {_cell(card.get('patient_display_name') or '(no name)')} (ID {_cell(card.get('patient_id'))})"
            f" · **Study** {_cell(card.get('study_date'))} {_cell(card.get('study_description') or '')}",
            f"**Study Instance UID** `{card['study_instance_uid']}`",
            f"**Series** `{series['series_instance_uid']}`: {series['images']} images, {thickness}, "
            f"{_cell(series.get('description') or '')}  \n_{_cell(series.get('reason'))}_",
            f"**Engine** {card['engine']} {card['engine_version']} · approval `{card['approval_id'][:8]}` "
            f"in job `{card['job']}`",
            "Nothing is written to the PACS or the EHR before you decide.",
        ]
    )


def card_findings_markdown(card: Card) -> str:
    """Volumes per structure, the QA flags, and the report text that would be stored."""
    rows = ["| Structure | Volume (mL) | Mean HU | Components | Confidence |", "|---|---:|---:|---:|---:|"]
    for s in card["structures"]:
        rows.append(
            f"| {_cell(s['display'])} | {s['volume_ml']:.1f} | {s['mean_hu']:.0f} | {s['n_components']} | "
            f"{s['confidence']:.2f} |"
        )
    icons = {"fail": "✗", "warning": "⚠", "info": "•"}
    flags = [f"- {icons.get(f['severity'], '')} **{f['severity']}**: {_cell(f['message'])}" for f in card["flags"]]
    return "\n".join(
        [
            "#### Volumes",
            *rows,
            "",
            "#### QA flags",
            *(flags or ["None."]),
            "",
            "#### Report text",
            "```text",
            str(card.get("report_text", "")).strip(),
            "```",
        ]
    )


def card_writes_markdown(card: Card) -> str:
    """Every write the approval allows: what is approved is exactly what is written."""
    dicom = ["| Object | SOP Class | SOP Instance UID | sha256 |", "|---|---|---|---|"]
    for w in card["dicom_writes"]:
        dicom.append(
            f"| {w['kind']} | {w['sop_class_name']} (`{w['sop_class_uid']}`) | `{w['sop_instance_uid']}` | "
            f"`{w['sha256'][:16]}…` |"
        )
    fhir = ["| Method | Resource | Target | Change |", "|---|---|---|---|"]
    for c in card["fhir_changes"]:
        fhir.append(f"| {c['method']} | {c['resource_type']} | {_cell(c['target'])} | {_cell(c['summary'])} |")
    return "\n".join(
        ["#### Pending writes: PACS (STOW-RS)", *dicom, "", "#### Pending writes: FHIR", *fhir]
    )


def approval_choice(pending: PendingApproval) -> tuple[str, str]:
    """(label, value) for the approvals list; the label names the study and job, not the patient."""
    r = pending.request
    label = f"ImagingStudy/{r.imaging_study_id} · patient ID {r.patient_id or '-'} · job {pending.thread_id}"
    return label, pending.interrupt_id


def reviewer_id_for(name: str) -> str:
    """A stable id from the name typed in the UI ("Dr. Ana Lee" -> "dr-ana-lee")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "reviewer"


def tool_step_summary(content: str, failed: bool = False) -> str:
    """A short, human-readable result of a tool call (the model gets the full JSON)."""
    if failed:
        wrapped = _TOOL_ERROR.match(content.strip())
        return f"✗ {wrapped.group(2) if wrapped else content[:500]}"
    try:
        data = json.loads(content)
    except ValueError:
        return content[:300]
    if isinstance(data, dict) and "job_thread_id" in data:
        waiting = len(data.get("pending_approvals", []))
        finished = len(data.get("outcomes", []))
        return (
            f"Started {data.get('kind', '')} job `{data['job_thread_id']}`: "
            f"{waiting} approval(s) waiting, {finished} study outcome(s) so far."
        )
    if isinstance(data, dict) and "count" in data:
        return f"{data['count']} found."
    text = json.dumps(data, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + "…"


def progress_log(event: Mapping[str, Any]) -> str:
    stage = str(event.get("stage", "?"))
    percent = float(event.get("percent", 0))
    bar = "█" * int(percent // 10) + "░" * (10 - int(percent // 10))
    text = f"{STAGE_LABELS.get(stage, stage)} · {percent:.0f}% `{bar}`"
    if event.get("error"):
        text += f"\n\n✗ {event['error']}"
    return text


def jobs_markdown(jobs: Sequence[Job], reports: Mapping[str, RunReport]) -> str:
    """Jobs, newest first, and each study's outcome."""
    if not jobs:
        return "No jobs yet. Ask in the chat, or run `imaging-agent process --pending` in a terminal."
    lines = [
        "| Job | Kind | Work list / study | Started (UTC) | Status | Waiting approvals |",
        "|---|---|---|---|---|---:|",
    ]
    for job in jobs:
        report = reports.get(job.thread_id)
        lines.append(
            f"| `{job.thread_id}` | {job.kind} | {_cell(job.label)} | {job.created_at[:19].replace('T', ' ')} | "
            f"{job.status} | {len(report.pending) if report else '-'} |"
        )
    lines += ["", "#### Studies", "| Job | ImagingStudy | Outcome | Seconds | Detail |", "|---|---|---|---:|---|"]
    count = 0
    for job in jobs:
        report = reports.get(job.thread_id)
        for outcome in report.outcomes if report else []:
            count += 1
            lines.append(
                f"| `{job.thread_id}` | {outcome['imaging_study_id']} | **{outcome['outcome']}** | "
                f"{float(outcome.get('seconds', 0)):.1f} | {_cell(outcome.get('detail'))} |"
            )
        for pending in report.pending if report else []:
            count += 1
            lines.append(
                f"| `{job.thread_id}` | {pending.request.imaging_study_id} | **waiting for approval** | | "
                "see the Approvals tab |"
            )
    if not count:
        lines.append("| | | no study outcome yet | | |")
    return "\n".join(lines)


def readable_error(exc: BaseException) -> str:
    """The project's errors already name the resource and what to do; keep their text."""
    # KeyError's str() is the repr of its argument; the message is the argument itself.
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip() or type(exc).__name__
    return f"{text} (see the status line above and the server log for details)"


# -- graph and runtime access ---------------------------------------------------------------


@dataclass
class _Event:
    kind: str  # "item" | "card" | "error" | "done"
    payload: Any = None


class Agent:
    """The chat graph and the runtime behind one lock; runs graph work on a worker thread."""

    def __init__(self, runtime: AgentRuntime, model: BaseChatModel | None) -> None:
        self.runtime = runtime
        self.chat = build_chat_graph(runtime, model)
        self.lock = threading.Lock()

    @staticmethod
    def config(thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": 100}

    def locked(self, work: Callable[[], Any], wait_s: float = BUSY_WAIT_S) -> Any:
        """Run `work` under the lock on this thread; raises TimeoutError if another run holds it."""
        if not self.lock.acquire(timeout=wait_s):
            raise TimeoutError(
                "the agent is busy with another run (a chat or an approval); try again when it has finished"
            )
        try:
            return work()
        finally:
            self.lock.release()

    def background(self, work: Callable[[Callable[[_Event], None]], None]) -> Iterator[_Event]:
        """Run `work(emit)` under the lock on a thread of its own and yield what it emits.

        The thread finishes the run even if the browser goes away, so a graph is never left
        half-way because a tab was closed."""
        events: queue.Queue[_Event] = queue.Queue()

        def run() -> None:
            try:
                self.locked(lambda: work(events.put))
            except TimeoutError as exc:
                events.put(_Event("error", str(exc)))
            except Exception as exc:  # shown to the person; the traceback goes to the log
                log.exception("agent run failed")
                events.put(_Event("error", readable_error(exc)))
            finally:
                events.put(_Event("done"))

        threading.Thread(target=run, name="agent-run", daemon=True).start()
        while (event := events.get()).kind != "done":
            yield event

    def stream_chat(self, value: Any, thread_id: str) -> Iterator[_Event]:
        """Stream the chat graph: ("item", (mode, chunk)) events, then ("card", card-or-None)."""

        def work(emit: Callable[[_Event], None]) -> None:
            config = self.config(thread_id)
            for namespace, mode, chunk in self.chat.stream(
                value, config, stream_mode=["updates", "custom"], subgraphs=True
            ):
                if mode == "custom" or not namespace:
                    emit(_Event("item", (mode, chunk)))
            interrupts = self.chat.get_state(config).interrupts
            emit(_Event("card", dict(interrupts[0].value) if interrupts else None))

        return self.background(work)

    def chat_card(self, thread_id: str) -> dict[str, Any] | None:
        interrupts = self.locked(lambda: self.chat.get_state(self.config(thread_id)).interrupts)
        return dict(interrupts[0].value) if interrupts else None

    def pending(self, wait_s: float = BUSY_WAIT_S) -> list[PendingApproval]:
        return self.locked(self.runtime.pending_approvals, wait_s)

    def jobs(self, wait_s: float = BUSY_WAIT_S, limit: int = 50) -> tuple[list[Job], dict[str, RunReport]]:
        def read() -> tuple[list[Job], dict[str, RunReport]]:
            jobs = list(reversed(self.runtime.jobs()))[:limit]
            return jobs, {job.thread_id: self.runtime.report(job.thread_id) for job in jobs}

        return self.locked(read, wait_s)

    def decide(self, interrupt_id: str, decision: ApprovalDecision) -> Iterator[_Event]:
        """Answer a pending approval through the runtime; ("item", progress) then ("card", report)."""

        def work(emit: Callable[[_Event], None]) -> None:
            matches = [p for p in self.runtime.pending_approvals() if p.interrupt_id == interrupt_id]
            if not matches:
                raise KeyError(
                    f"approval {interrupt_id[:8]} is no longer pending: someone answered it (here, in a chat or "
                    "in the CLI). Refresh the list."
                )
            [pending] = matches
            report = self.runtime.decide(
                pending.thread_id, {interrupt_id: decision}, on_progress=lambda e: emit(_Event("item", ("custom", e)))
            )
            emit(_Event("card", report))

        return self.background(work)


# -- the chat transcript --------------------------------------------------------------------


class Transcript:
    """The chat history as Gradio message dicts, with tool steps and progress lines updated in place."""

    def __init__(self, history: Sequence[Any] | None) -> None:
        self.messages: list[dict[str, Any]] = [dict(m) for m in history or []]
        self._steps: dict[str, int] = {}
        self._progress: dict[str, int] = {}

    def say(self, role: str, content: str, metadata: dict[str, Any] | None = None) -> int:
        message: dict[str, Any] = {"role": role, "content": content}
        if metadata:
            message["metadata"] = metadata
        self.messages.append(message)
        return len(self.messages) - 1

    def apply(self, mode: str, chunk: Any) -> None:
        if mode == "custom":
            self._on_progress(chunk)
            return
        for node, update in chunk.items():
            if node.startswith("__") or not isinstance(update, dict):
                continue
            for message in update.get("messages", []):
                self._on_message(message)

    def _on_progress(self, event: Mapping[str, Any]) -> None:
        study = str(event.get("imaging_study_id", "?"))
        stage = str(event.get("stage", ""))
        log_text = f"{STAGE_LABELS.get(stage, stage)} {float(event.get('percent', 0)):.0f}%"
        metadata = {"title": f"Progress: ImagingStudy/{study}", "status": "pending", "log": log_text}
        if study not in self._progress:
            self._progress[study] = self.say("assistant", progress_log(event), metadata)
        index = self._progress[study]
        if event.get("stage") in ("approval", "failed"):
            metadata["status"] = "done"
        self.messages[index] = {"role": "assistant", "content": progress_log(event), "metadata": metadata}

    def _on_message(self, message: Any) -> None:
        if isinstance(message, AIMessage):
            if str(message.content).strip():
                self.say("assistant", str(message.content))
            for call in message.tool_calls:
                args = json.dumps(call["args"], ensure_ascii=False) if call["args"] else "(defaults)"
                self._steps[str(call["id"])] = self.say(
                    "assistant",
                    f"Arguments: `{args}`",
                    {"title": f"Tool: {call['name']}", "id": str(call["id"]), "status": "pending"},
                )
        elif isinstance(message, ToolMessage):
            index = self._steps.get(str(message.tool_call_id))
            summary = tool_step_summary(str(message.content), message.status == "error")
            if index is None:
                self.say("assistant", summary, {"title": f"Tool: {message.name}", "status": "done"})
                return
            step = self.messages[index]
            step["content"] = f"{step['content']}\n\n{summary}"
            step["metadata"] = {**step["metadata"], "status": "done"}

    def finish(self) -> None:
        """No spinner stays on once the run is over."""
        for index in [*self._steps.values(), *self._progress.values()]:
            metadata = self.messages[index].get("metadata") or {}
            self.messages[index]["metadata"] = {**metadata, "status": "done"}


# -- the UI ---------------------------------------------------------------------------------


@dataclass
class CardView:
    """The components of one approval card (the chat and the approvals tab each have one)."""

    group: gr.Column
    summary: gr.Markdown
    previews: gr.Gallery
    findings: gr.Markdown
    writes: gr.Markdown
    reviewer: gr.Textbox
    reason: gr.Textbox
    approve: gr.Button
    reject: gr.Button
    notice: gr.Markdown

    @property
    def content(self) -> list[Any]:
        return [self.group, self.summary, self.previews, self.findings, self.writes]


def _card_view(prefix: str, reviewer_name: str | None) -> CardView:
    with gr.Column(visible=False, elem_id=f"{prefix}-card") as group:
        summary = gr.Markdown(elem_id=f"{prefix}-card-summary")
        previews = gr.Gallery(
            label="Contour previews", columns=4, height=300, format="png", interactive=False,
            elem_id=f"{prefix}-card-previews",
        )
        findings = gr.Markdown(elem_id=f"{prefix}-card-findings")
        writes = gr.Markdown(elem_id=f"{prefix}-card-writes")
        with gr.Row():
            reviewer = gr.Textbox(label="Reviewer name", value=reviewer_name or "", elem_id=f"{prefix}-reviewer")
            reason = gr.Textbox(label="Reason (required to reject)", elem_id=f"{prefix}-reason")
        with gr.Row():
            approve_button = gr.Button("Approve and write", variant="primary", elem_id=f"{prefix}-approve")
            reject_button = gr.Button("Reject", variant="stop", elem_id=f"{prefix}-reject")
    notice = gr.Markdown(elem_id=f"{prefix}-notice")
    return CardView(group, summary, previews, findings, writes, reviewer, reason, approve_button, reject_button, notice)


def _load_previews(paths: Sequence[str]) -> list[Image.Image]:
    """The PNGs as images, so Gradio serves copies from its cache and never the run directory."""
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.copy())
        except OSError as exc:
            log.warning("preview %s cannot be read: %s", path, exc)
    return images


def card_updates(card: Card | None) -> list[Any]:
    """Values for CardView.content: the card shown, or the card hidden."""
    if card is None:
        return [gr.update(visible=False), "", None, "", ""]
    return [
        gr.update(visible=True),
        card_summary_markdown(card),
        _load_previews(card["previews"]),
        card_findings_markdown(card),
        card_writes_markdown(card),
    ]


def _decision(action: str, reviewer: str, reason: str) -> ApprovalDecision | str:
    """The decision, or the message saying what is missing."""
    name = (reviewer or "").strip()
    if not name:
        return "Enter your name as reviewer first: it is recorded in the FHIR Provenance and Task."
    if action == "reject" and not (reason or "").strip():
        return "A rejection needs a reason: say what is wrong with the contours. Nothing was decided."
    return ApprovalDecision(
        action="approve" if action == "approve" else "reject",
        reviewer_id=reviewer_id_for(name),
        reviewer_name=name,
        reason=(reason or "").strip() or None,
    )


def build_app(settings: Settings, runtime: AgentRuntime, model: BaseChatModel | None = None) -> gr.Blocks:
    """The app over `runtime`; `model` defaults to the planner the settings choose."""
    agent = Agent(runtime, model)

    with gr.Blocks(title="imaging-agent", analytics_enabled=False) as demo:
        gr.Markdown(
            "# imaging-agent\nAI lung contours from the PACS to the EHR, written only after a radiologist approves."
        )
        with gr.Row(equal_height=True):
            with gr.Column(scale=5):
                gr.Markdown(planner_markdown(settings), elem_id="planner-status")
                services_status = gr.Markdown("Checking PACS and FHIR…", elem_id="services-status")
            status_refresh = gr.Button("Refresh status", scale=1, elem_id="status-refresh")

        thread_id = gr.State(None)
        chat_card = gr.State(None)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chatbot = gr.Chatbot(label="Conversation", height=520, elem_id="chatbot")
                with gr.Row():
                    goal = gr.Textbox(
                        show_label=False, placeholder=f"e.g. {EXAMPLE_GOAL}", scale=6, elem_id="goal"
                    )
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                chat_view = _card_view("chat", settings.reviewer_name)
            with gr.Tab("Approvals", id="approvals"):
                with gr.Row():
                    pending_list = gr.Dropdown(
                        label="Pending approvals (all jobs: chat, CLI and Python)", choices=[], value=None,
                        scale=6, elem_id="pending-list",
                    )
                    approvals_refresh = gr.Button("Refresh", scale=1, elem_id="approvals-refresh")
                panel_view = _card_view("panel", settings.reviewer_name)
            with gr.Tab("Jobs", id="jobs"):
                jobs_refresh = gr.Button("Refresh", elem_id="jobs-refresh")
                jobs_view = gr.Markdown("Loading…", elem_id="jobs")
        timer = gr.Timer(REFRESH_EVERY_S)

        # -- header ---------------------------------------------------------------------
        def refresh_status() -> str:
            return services_markdown(check_services(settings))

        demo.load(refresh_status, outputs=services_status, show_progress="hidden")
        status_refresh.click(refresh_status, outputs=services_status)

        # -- chat -----------------------------------------------------------------------
        chat_outputs = [chatbot, goal, thread_id, chat_card, *chat_view.content, chat_view.notice]

        def stream_into(transcript: Transcript, value: Any, thread: str) -> Iterator[list[Any]]:
            card: dict[str, Any] | None = None
            for event in agent.stream_chat(value, thread):
                if event.kind == "item":
                    transcript.apply(*event.payload)
                elif event.kind == "card":
                    card = event.payload
                elif event.kind == "error":
                    transcript.say("assistant", f"⚠ {event.payload}")
                yield [transcript.messages, gr.update(), thread, gr.update(), *[gr.update()] * 5, gr.update()]
            transcript.finish()
            if card is not None:
                study = card["imaging_study_id"]
                transcript.say("assistant", f"Results for ImagingStudy/{study} wait for your approval: see below.")
            yield [transcript.messages, gr.update(), thread, card, *card_updates(card), ""]

        def on_send(message: str, history: list[Any], thread: str | None) -> Iterator[list[Any]]:
            transcript = Transcript(history)
            text = (message or "").strip()
            if not text:
                yield [history, gr.update(), thread, gr.update(), *[gr.update()] * 5, "Type a goal first, e.g. "
                       f"“{EXAMPLE_GOAL}”."]
                return
            thread = thread or f"ui-{uuid.uuid4().hex[:12]}"
            transcript.say("user", text)
            yield [transcript.messages, "", thread, None, *card_updates(None), ""]
            yield from stream_into(transcript, {"messages": [HumanMessage(text)]}, thread)

        def on_chat_decision(action: str) -> Callable[..., Iterator[list[Any]]]:
            def handler(
                history: list[Any], thread: str | None, card: dict[str, Any] | None, reviewer: str, reason: str
            ) -> Iterator[list[Any]]:
                unchanged = [history, gr.update(), thread, gr.update(), *[gr.update()] * 5]
                if not thread or not card:
                    yield [*unchanged, "This conversation has no approval waiting."]
                    return
                decision = _decision(action, reviewer, reason)
                if isinstance(decision, str):
                    yield [*unchanged, f"⚠ {decision}"]
                    return
                try:
                    current = agent.chat_card(thread)
                except Exception as exc:
                    yield [*unchanged, f"⚠ {readable_error(exc)}"]
                    return
                if current is None or current["approval_id"] != card["approval_id"]:
                    # The card on screen is stale: show what the conversation waits for now, decide nothing.
                    yield [history, gr.update(), thread, current, *card_updates(current),
                           "This card was answered already; the conversation's current approval is shown."]
                    return
                transcript = Transcript(history)
                verb = "Approved" if action == "approve" else f"Rejected ({decision.reason})"
                study = card["imaging_study_id"]
                transcript.say("user", f"{verb}: ImagingStudy/{study}, reviewer {decision.reviewer_name}")
                who = (card["approval_id"], decision.reviewer_id, decision.reviewer_name)
                command = approve(*who) if action == "approve" else reject(*who, decision.reason or "")
                yield [transcript.messages, gr.update(), thread, None, *card_updates(None), ""]
                yield from stream_into(transcript, command, thread)

            return handler

        chat_inputs = [chatbot, thread_id, chat_card, chat_view.reviewer, chat_view.reason]
        send.click(on_send, [goal, chatbot, thread_id], chat_outputs)
        goal.submit(on_send, [goal, chatbot, thread_id], chat_outputs)
        chat_view.approve.click(on_chat_decision("approve"), chat_inputs, chat_outputs)
        chat_view.reject.click(on_chat_decision("reject"), chat_inputs, chat_outputs)

        # -- approvals tab --------------------------------------------------------------
        def approvals_choices(selected: str | None, wait_s: float = BUSY_WAIT_S) -> Any:
            try:
                pending = agent.pending(wait_s)
            except TimeoutError:
                return gr.skip()
            choices = [approval_choice(p) for p in pending]
            keep = selected if selected in {value for _, value in choices} else None
            return gr.update(choices=choices, value=keep)

        def refresh_approvals(selected: str | None) -> tuple[Any, str]:
            try:
                update = approvals_choices(selected)
            except Exception as exc:
                return gr.skip(), f"⚠ Could not list the approvals: {readable_error(exc)}"
            if isinstance(update, dict) and not update.get("choices"):
                return update, "No approval is waiting."
            return update, ""

        def show_pending(interrupt_id: str | None) -> list[Any]:
            if not interrupt_id:
                return [*card_updates(None), gr.update()]
            try:
                matches = [p for p in agent.pending() if p.interrupt_id == interrupt_id]
            except Exception as exc:
                return [*card_updates(None), f"⚠ Could not read the approval: {readable_error(exc)}"]
            if not matches:
                return [*card_updates(None), "That approval is no longer pending; refresh the list."]
            return [*card_updates(approval_card(matches[0])), ""]

        def on_panel_decision(action: str) -> Callable[..., Iterator[list[Any]]]:
            def handler(interrupt_id: str | None, reviewer: str, reason: str) -> Iterator[list[Any]]:
                unchanged = [gr.update(), *[gr.update()] * 5]
                if not interrupt_id:
                    yield [*unchanged, "Choose an approval from the list first."]
                    return
                decision = _decision(action, reviewer, reason)
                if isinstance(decision, str):
                    yield [*unchanged, f"⚠ {decision}"]
                    return
                lines: dict[str, str] = {}
                outcome = ""
                for event in agent.decide(interrupt_id, decision):
                    if event.kind == "item":
                        progress = event.payload[1]
                        lines[str(progress.get("imaging_study_id"))] = progress_log(progress)
                        yield [*unchanged, "\n\n".join(f"ImagingStudy/{k}: {v}" for k, v in lines.items())]
                    elif event.kind == "card":
                        report: RunReport = event.payload
                        outcome = "\n".join(
                            f"ImagingStudy/{o['imaging_study_id']}: **{o['outcome']}** — {o['detail']}"
                            for o in report.outcomes
                        ) or f"Job {report.thread_id}: {len(report.pending)} approval(s) still pending."
                    elif event.kind == "error":
                        outcome = f"⚠ {event.payload}"
                yield [approvals_choices(None), *card_updates(None), outcome]

            return handler

        panel_outputs = [pending_list, *panel_view.content, panel_view.notice]
        approvals_refresh.click(refresh_approvals, pending_list, [pending_list, panel_view.notice])
        pending_list.change(
            show_pending, pending_list, [*panel_view.content, panel_view.notice], show_progress="hidden"
        )
        panel_inputs = [pending_list, panel_view.reviewer, panel_view.reason]
        panel_view.approve.click(on_panel_decision("approve"), panel_inputs, panel_outputs)
        panel_view.reject.click(on_panel_decision("reject"), panel_inputs, panel_outputs)

        # -- jobs tab -------------------------------------------------------------------
        def refresh_jobs(wait_s: float = BUSY_WAIT_S) -> Any:
            try:
                return jobs_markdown(*agent.jobs(wait_s))
            except TimeoutError:
                return gr.skip()
            except Exception as exc:
                return f"⚠ Could not read the jobs: {readable_error(exc)}"

        jobs_refresh.click(refresh_jobs, outputs=jobs_view)
        demo.load(refresh_jobs, outputs=jobs_view, show_progress="hidden")
        demo.load(refresh_approvals, pending_list, [pending_list, panel_view.notice], show_progress="hidden")

        def tick(selected: str | None) -> tuple[Any, Any]:
            # A tick never waits for a running chat: it skips and the next one tries again.
            try:
                return approvals_choices(selected, wait_s=0), refresh_jobs(wait_s=0)
            except Exception as exc:
                log.warning("periodic refresh failed: %s", exc)
                return gr.skip(), gr.skip()

        timer.tick(tick, pending_list, [pending_list, jobs_view], show_progress="hidden")

    return demo


def launch(demo: gr.Blocks, port: int, *, block: bool = True) -> None:
    """Serve on 127.0.0.1 only, with a theme that needs no web fonts (the app works offline)."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=HOST,
        server_port=port,
        prevent_thread_lock=not block,
        theme=theme,
        footer_links=[],
        show_error=False,
        quiet=True,
    )


def main(settings: Settings | None = None, port: int | None = None) -> None:
    """`imaging-agent ui`: serve the app until interrupted."""
    settings = settings or get_settings()
    with AgentRuntime(settings) as runtime:
        demo = build_app(settings, runtime)
        print(f"imaging-agent UI on http://{HOST}:{port or settings.ui_port}  ({planner_info(settings).description})")
        launch(demo, port or settings.ui_port)


if __name__ == "__main__":
    main()
