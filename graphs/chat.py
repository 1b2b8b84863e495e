"""The conversational planner: an LLM (or the offline planner) calling typed tools.

    START -> planner -> tools -> collect_jobs -> planner ...            (read tools)
                                             -> approval <-> approval   (a job waits for a person)
                                             -> summarize -> END
    planner without tool calls -> END

Write tools only start workflow jobs; those jobs stop at the study graph's approval node. The
`approval` node here relays each pending approval of this conversation's jobs to a person with
one `interrupt()` per pass (never inside the ToolNode), and hands the person's decision to the
workflow runtime. The model has no way to answer an approval: its tool calls cannot produce a
resume value, and a resume value is only applied to the approval it names.

`collect_jobs` also keeps the ids of this turn's results in `referents` (graphs/referents.py), which
the planner node hands to the model with the system prompt, so "that study", "the second one" and
"all of them" resolve against them. Operator tools read the signed-in person from the run config's
`configurable.operator` (graphs/planner_tools/operations.py), which only the caller sets.

`compile_chat_graph(runtime, model)` takes its parts ready-made; the top of the application
(`agent.chat.build_chat_graph`) picks the planner model from the settings. The README's Python
section shows a whole conversation with an approval.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, interrupt

from graphs.planner_tools.catalog import WRITE_TOOLS, build_tools
from graphs.prompts import SYSTEM_PROMPT
from graphs.referents import Referents, update_from_tools, with_context
from graphs.runtime import PendingApproval, WorkflowRuntime
from tools.workflow.approval import ApprovalDecision
from tools.workflow.claims import ClaimHeldError

log = logging.getLogger(__name__)


def _union(left: list[str], right: list[str]) -> list[str]:
    return left + [item for item in right if item not in left]


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    jobs: Annotated[list[str], _union]
    """Workflow jobs started in this conversation."""
    reported: Annotated[list[str], _union]
    """Jobs whose outcome was already told to the user."""
    turn_jobs: list[str]
    """Jobs started by the latest tool step."""
    referents: dict[str, Any]
    """What "that study", "the second one", "all of them" point at: ids of earlier results (graphs/referents.py)."""


def answer(approval_id: str, decision: ApprovalDecision) -> Command:
    """The resume command for an approval card: the decision of an authenticated principal."""
    return Command(resume={"approval_id": approval_id, "decision": decision.model_dump(mode="json")})


def approval_card(pending: PendingApproval) -> dict[str, Any]:
    """The chat interrupt's payload: the workflow's approval request plus where it lives."""
    return {"approval_id": pending.interrupt_id, "job": pending.thread_id, **pending.request.model_dump(mode="json")}


def compile_chat_graph(
    runtime: WorkflowRuntime, model: BaseChatModel, *, checkpointer: Any = None, free_text: bool = True
) -> Any:
    """Compile the chat graph: `model` plans over the tools of `runtime` (its workflows and durable store).

    Conversations are checkpointed in the runtime's database unless another checkpointer is given.
    `free_text` False withholds study and series descriptions from the model's tool results.
    """
    tools = build_tools(runtime, free_text=free_text)
    planner_model = model.bind_tools(tools)

    def planner(state: ChatState) -> dict[str, Any]:
        system = with_context(SYSTEM_PROMPT, Referents.model_validate(state.get("referents") or {}))
        reply = planner_model.invoke([system, *state["messages"]])
        return {"messages": [reply]}

    def collect_jobs(state: ChatState) -> dict[str, Any]:
        jobs: list[str] = []
        turn: list[ToolMessage] = []
        for message in reversed(state["messages"]):
            if not isinstance(message, ToolMessage):
                break
            turn.insert(0, message)
            if message.name in WRITE_TOOLS and message.status != "error":
                try:
                    jobs.append(json.loads(str(message.content))["job_thread_id"])
                except (ValueError, KeyError):
                    log.warning("write tool %s returned no job id", message.name)
        referents = update_from_tools(Referents.model_validate(state.get("referents") or {}), turn)
        return {"jobs": jobs, "turn_jobs": jobs, "referents": referents.model_dump()}

    def _pending(state: ChatState) -> list[PendingApproval]:
        mine = set(state.get("jobs", []))
        return [p for p in runtime.pending_approvals() if p.thread_id in mine]

    def approval(state: ChatState) -> dict[str, Any]:
        pending = _pending(state)
        if not pending:
            return {}
        current = pending[0]
        answer = interrupt(approval_card(current))
        # A person may have answered this approval elsewhere (CLI, approvals panel) meanwhile:
        # apply the answer only to the approval it names, and only while that one is open.
        if not isinstance(answer, dict) or answer.get("approval_id") != current.interrupt_id:
            return {}
        if current.interrupt_id not in {p.interrupt_id for p in runtime.pending_approvals()}:
            return {}
        decision = ApprovalDecision.model_validate(answer["decision"])
        try:
            runtime.decide(current.thread_id, {current.interrupt_id: decision})
        except ClaimHeldError as exc:  # another reviewer holds it: say so, and show the card again
            return {"messages": [AIMessage(str(exc))]}
        return {}

    def summarize(state: ChatState) -> dict[str, Any]:
        lines: list[str] = []
        finished: list[str] = []
        for job in state.get("jobs", []):
            if job in state.get("reported", []):
                continue
            report = runtime.report(job)
            if not report.done:
                lines.append(f"Job {job} is not finished ({len(report.pending)} approval(s) pending).")
                continue
            finished.append(job)
            if not report.outcomes:
                lines.append(f"Job {job}: no study to process.")
            for outcome in report.outcomes:
                lines.append(f"ImagingStudy/{outcome['imaging_study_id']}: {outcome['outcome']} — {outcome['detail']}")
        return {"messages": [AIMessage("\n".join(lines) or "Nothing left to approve.")], "reported": finished}

    def after_planner(state: ChatState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    def after_collect(state: ChatState) -> str:
        if not state.get("turn_jobs"):
            return "planner"
        return "approval" if _pending(state) else "summarize"

    def after_approval(state: ChatState) -> str:
        return "approval" if _pending(state) else "summarize"

    graph = StateGraph(ChatState)
    graph.add_node("planner", planner)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    graph.add_node("collect_jobs", collect_jobs)
    graph.add_node("approval", approval)
    graph.add_node("summarize", summarize)
    graph.add_edge(START, "planner")
    graph.add_conditional_edges("planner", after_planner, ["tools", END])
    graph.add_edge("tools", "collect_jobs")
    graph.add_conditional_edges("collect_jobs", after_collect, ["planner", "approval", "summarize"])
    graph.add_conditional_edges("approval", after_approval, ["approval", "summarize"])
    graph.add_edge("summarize", END)
    return graph.compile(checkpointer=checkpointer if checkpointer is not None else runtime.checkpointer, name="chat")
