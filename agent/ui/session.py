"""The chat graph and the runtime behind one lock, for every browser session of the app.

LangGraph runs synchronously and the chat graph shares the runtime's SQLite connection, while
Gradio runs handlers in a thread pool: every graph or runtime call goes through one lock, in a
worker thread of its own (a LangGraph stream must be resumed on the thread that started it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel

from agent.chat import build_chat_graph
from agent.runtime import AgentRuntime
from agent.ui.markdown import readable_error
from agent.untrusted import markdown_literal
from graphs.planner_tools.operations import OPERATOR_KEY
from graphs.runtime import Job, PendingApproval, RunReport
from tools.identity.principal import Principal
from tools.workflow.approval import ApprovalDecision

log = logging.getLogger(__name__)

BUSY_WAIT_S = 30.0
"""How long a person's action waits for another run (chat or approval) to finish."""


@dataclass
class RunEvent:
    """What a background run reports: a stream item, its result (a card or a report), an error, the end.

    An error's payload is Markdown already, its message shown literally (agent/untrusted.py)."""

    kind: Literal["item", "card", "error", "done"]
    payload: Any = None


Emit = Callable[[RunEvent], None]


class LockedGraphs:
    """The runtime (study and batch graphs, job store) and the chat graph, used one run at a time."""

    def __init__(self, runtime: AgentRuntime, model: BaseChatModel | None) -> None:
        self.runtime = runtime
        self.chat = build_chat_graph(runtime, model)
        self.lock = threading.Lock()

    @staticmethod
    def config(thread_id: str, operator: Principal | None = None) -> dict[str, Any]:
        """The chat's run config; `operator`, the signed-in person, may use the operator tools
        (graphs/planner_tools/operations.py)."""
        configurable: dict[str, Any] = {"thread_id": thread_id}
        if operator is not None:
            configurable[OPERATOR_KEY] = operator.model_dump(mode="json")
        return {"configurable": configurable, "recursion_limit": 100}

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

    def background(self, work: Callable[[Emit], None]) -> Iterator[RunEvent]:
        """Run `work(emit)` under the lock on a thread of its own and yield what it emits.

        The thread finishes the run even if the browser goes away, so a graph is never left
        half-way because a tab was closed."""
        events: queue.Queue[RunEvent] = queue.Queue()

        def run() -> None:
            try:
                self.locked(lambda: work(events.put))
            except TimeoutError as exc:
                events.put(RunEvent("error", markdown_literal(exc)))
            except Exception as exc:  # shown to the person; the traceback goes to the log
                log.exception("agent run failed")
                events.put(RunEvent("error", readable_error(exc)))
            finally:
                events.put(RunEvent("done"))

        threading.Thread(target=run, name="agent-run", daemon=True).start()
        while (event := events.get()).kind != "done":
            yield event

    def stream_chat(self, value: Any, thread_id: str, operator: Principal | None = None) -> Iterator[RunEvent]:
        """Stream the chat graph: ("item", (mode, chunk)) events, then ("card", card-or-None)."""

        def work(emit: Emit) -> None:
            config = self.config(thread_id, operator)
            for namespace, mode, chunk in self.chat.stream(
                value, config, stream_mode=["updates", "custom"], subgraphs=True
            ):
                if mode == "custom" or not namespace:
                    emit(RunEvent("item", (mode, chunk)))
            interrupts = self.chat.get_state(config).interrupts
            emit(RunEvent("card", dict(interrupts[0].value) if interrupts else None))

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

    def decide(self, interrupt_id: str, decision: ApprovalDecision) -> Iterator[RunEvent]:
        """Answer a pending approval through the runtime; ("item", progress) then ("card", report)."""

        def work(emit: Emit) -> None:
            matches = [p for p in self.runtime.pending_approvals() if p.interrupt_id == interrupt_id]
            if not matches:
                raise KeyError(
                    f"approval {interrupt_id} is no longer pending: someone answered it (here, in a chat or "
                    "in the CLI). Refresh the list."
                )
            [pending] = matches
            report = self.runtime.decide(
                pending.thread_id, {interrupt_id: decision}, on_progress=lambda e: emit(RunEvent("item", ("custom", e)))
            )
            emit(RunEvent("card", report))

        return self.background(work)
