"""The approvals tab: the reviewers' worklist over the durable store, and the card of the one chosen.

Jobs started in a chat, in the CLI or from Python all wait in the same store. The list is the
worklist of graphs/approval_worklist.py: longest waiting first, filtered by QA flag, engine and
modality, with the reviewer who claimed each one. Claim / Release take and give back the chosen
approval for the signed-in radiologist; a decision made here resumes the job through
`AgentRuntime.decide`, exactly as `imaging-agent approvals` does, and is refused there while another
reviewer holds the approval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import gradio as gr

from agent.review import DecisionError, claim_holder
from agent.ui.cards import NOT_SIGNED_IN, CardView, Identify, card_updates, card_view, form_decision, nobody
from agent.ui.markdown import (
    approval_choice,
    claim_status_markdown,
    outcomes_markdown,
    progress_log,
    readable_error,
    worklist_markdown,
)
from agent.ui.session import BUSY_WAIT_S, LockedGraphs
from agent.untrusted import markdown_literal
from graphs.approval_worklist import ANY_FLAG, NO_FLAG, WorklistEntry, WorklistFilter, claim, release, worklist
from graphs.chat import approval_card
from graphs.runtime import RunReport
from tools.workflow.claims import ClaimHeldError

ALL = "all"
"""The filters' value for "do not filter"."""


def _chosen(value: str | None) -> str | None:
    return None if value in (None, "", ALL) else value


def _options(values: Sequence[tuple[str, str]], current: str | None) -> Any:
    """A filter's choices: All, then `values`, keeping the current choice even when no approval has it now."""
    choices = [("All", ALL), *values]
    if current not in {value for _, value in choices}:
        choices.append((str(current), str(current)))
    return gr.update(choices=choices)


class ApprovalsTab:
    """The worklist, its filters, the card of the approval chosen, Claim / Release and Approve / Reject."""

    def __init__(self, graphs: LockedGraphs, signing_window_s: float, identify: Identify = nobody) -> None:
        self.graphs = graphs
        self.signing_window_s = signing_window_s
        self.identify = identify
        with gr.Row():
            self.flag = gr.Dropdown(label="QA flag", choices=[("All", ALL)], value=ALL, scale=2, elem_id="filter-flag")
            self.engine = gr.Dropdown(label="Engine", choices=[("All", ALL)], value=ALL, scale=2, elem_id="filter-engine")
            self.modality = gr.Dropdown(
                label="Modality", choices=[("All", ALL)], value=ALL, scale=1, elem_id="filter-modality"
            )
            self.refresh = gr.Button("Refresh", scale=1, elem_id="approvals-refresh")
        self.table = gr.Markdown(elem_id="worklist")
        self.pending_list = gr.Dropdown(
            label="Pending approvals, longest waiting first (all jobs: chat, CLI and Python)", choices=[], value=None,
            elem_id="pending-list",
        )
        with gr.Row():
            self.claim_status = gr.Markdown(elem_id="panel-claim")
            self.claim_button = gr.Button("Claim", scale=0, elem_id="panel-claim-button")
            self.release_button = gr.Button("Release", scale=0, elem_id="panel-release-button")
        self.view: CardView = card_view("panel")
        self._wire()

    @property
    def list_inputs(self) -> list[Any]:
        """What a listing depends on: the selection and the three filters."""
        return [self.pending_list, self.flag, self.engine, self.modality]

    @property
    def listing(self) -> list[Any]:
        """What a refresh updates, in `listing_updates`' order."""
        return [self.pending_list, self.table, self.flag, self.engine, self.modality]

    def _wire(self) -> None:
        refreshed = [*self.listing, self.view.notice]
        self.refresh.click(self.refresh_list, self.list_inputs, refreshed)
        for chooser in (self.flag, self.engine, self.modality):
            # `input`, not `change`: a refresh that rewrites the choices must not refresh again.
            chooser.input(self.refresh_list, self.list_inputs, refreshed, show_progress="hidden")
        self.pending_list.change(
            self.show_pending, self.pending_list, [self.claim_status, *self.view.content, self.view.notice],
            show_progress="hidden",
        )
        claimed = [*self.listing, self.claim_status, self.view.notice]
        self.claim_button.click(self.on_claim(take=True), self.list_inputs, claimed)
        self.release_button.click(self.on_claim(take=False), self.list_inputs, claimed)
        inputs = [*self.list_inputs, self.view.reason, self.view.reason_code, self.view.viewer.edits]
        outputs = [*self.listing, self.claim_status, *self.view.content, self.view.notice]
        self.view.approve.click(self.on_decision("approve"), inputs, outputs)
        self.view.reject.click(self.on_decision("reject"), inputs, outputs)
        self.view.save_edits.click(self.on_decision("modify"), inputs, outputs)

    def load_on(self, demo: gr.Blocks) -> None:
        """Fill the list when a page opens."""
        demo.load(self.refresh_list, self.list_inputs, [*self.listing, self.view.notice], show_progress="hidden")

    def _entries(self, wait_s: float = BUSY_WAIT_S) -> list[WorklistEntry]:
        return self.graphs.locked(lambda: worklist(self.graphs.runtime), wait_s)

    def listing_updates(
        self, selected: str | None, flag: str | None, engine: str | None, modality: str | None, wait_s: float = BUSY_WAIT_S
    ) -> list[Any]:
        """New values for `listing`, keeping the selection while it is still listed; TimeoutError while busy."""
        return self._listing(self._entries(wait_s), selected, flag, engine, modality)

    @staticmethod
    def _listing(
        entries: Sequence[WorklistEntry], selected: str | None, flag: str | None, engine: str | None, modality: str | None
    ) -> list[Any]:
        now = datetime.now(UTC)
        only = WorklistFilter(flag=_chosen(flag), engine=_chosen(engine), modality=_chosen(modality))
        kept = [e for e in entries if only.keeps(e)]
        choices = [approval_choice(e, now) for e in kept]
        keep = selected if selected in {value for _, value in choices} else None
        codes = sorted({code for e in entries for code in e.flag_codes})
        return [
            gr.update(choices=choices, value=keep),
            worklist_markdown(kept, now),
            _options([("Any QA flag", ANY_FLAG), ("No QA flag", NO_FLAG), *((c, c) for c in codes)], flag),
            _options([(name, name) for name in sorted({e.engine for e in entries})], engine),
            _options([(name, name) for name in sorted({e.modality for e in entries})], modality),
        ]

    def refresh_quietly(self, selected: str | None, flag: str | None, engine: str | None, modality: str | None) -> list[Any]:
        """The periodic refresh: never waits for a running chat (it skips, the next tick tries again)."""
        try:
            return self.listing_updates(selected, flag, engine, modality, wait_s=0)
        except TimeoutError:
            return [gr.skip() for _ in self.listing]

    def refresh_list(self, selected: str | None, flag: str | None, engine: str | None, modality: str | None) -> list[Any]:
        try:
            return [*self.listing_updates(selected, flag, engine, modality), ""]
        except Exception as exc:
            return [*(gr.skip() for _ in self.listing), f"⚠ Could not list the approvals: {readable_error(exc)}"]

    def show_pending(self, interrupt_id: str | None, request: gr.Request) -> list[Any]:
        if not interrupt_id:
            return ["", *card_updates(None), gr.update()]
        try:
            matches = [e for e in self._entries() if e.approval.interrupt_id == interrupt_id]
        except Exception as exc:
            return ["", *card_updates(None), f"⚠ Could not read the approval: {readable_error(exc)}"]
        if not matches:
            return ["", *card_updates(None), "That approval is no longer pending; refresh the list."]
        entry = matches[0]
        status = claim_status_markdown(entry.claim, self.identify(request))
        return [status, *card_updates(approval_card(entry.approval)), ""]

    def on_claim(self, take: bool) -> Callable[..., list[Any]]:
        """The Claim or Release handler: for the signed-in radiologist, then the list and the claim anew."""

        def handler(
            selected: str | None, flag: str | None, engine: str | None, modality: str | None, request: gr.Request
        ) -> list[Any]:
            unchanged = [gr.update() for _ in range(len(self.listing) + 1)]
            if not selected:
                return [*unchanged, "Choose an approval from the list first."]
            principal = self.identify(request)
            try:
                if principal is None:
                    raise DecisionError(f"Nothing was {'claimed' if take else 'released'}: {NOT_SIGNED_IN}.")
                holder = claim_holder(principal)

                def work() -> str:
                    pending = self.graphs.runtime.find_pending(selected)
                    if take:
                        claim(self.graphs.runtime, pending, holder)
                        return f"{pending.subject()} is yours."
                    if release(self.graphs.runtime, pending, holder):
                        return f"{pending.subject()} is released."
                    return f"You held no claim on {pending.subject()}; nothing changed."

                notice = markdown_literal(self.graphs.locked(work))
            except (DecisionError, ClaimHeldError, TimeoutError) as exc:
                notice = f"⚠ {markdown_literal(exc)}"
            except KeyError as exc:
                notice = f"⚠ {readable_error(exc)}"
            try:
                entries = self._entries()
            except Exception as exc:
                return [*unchanged, f"{notice} ⚠ Could not list the approvals: {readable_error(exc)}"]
            entry = next((e for e in entries if e.approval.interrupt_id == selected), None)
            status = claim_status_markdown(entry.claim, principal) if entry is not None else ""
            return [*self._listing(entries, selected, flag, engine, modality), status, notice]

        return handler

    def on_decision(self, action: str) -> Callable[..., Iterator[list[Any]]]:
        """The Approve, Reject or Save-edits handler: progress lines while the job writes, then its outcome."""

        def handler(
            interrupt_id: str | None,
            flag: str | None,
            engine: str | None,
            modality: str | None,
            reason: str,
            reason_code: str | None,
            edits: list[dict[str, Any]],
            request: gr.Request,
        ) -> Iterator[list[Any]]:
            # The list and the table, the filters, the claim line and the card's components.
            unchanged = [gr.update() for _ in range(len(self.listing) + 1 + len(self.view.content))]
            if not interrupt_id:
                yield [*unchanged, "Choose an approval from the list first."]
                return
            try:
                decision = form_decision(
                    action, self.identify(request), reason, edits, signing_window_s=self.signing_window_s,
                    reason_code=reason_code,
                )
            except DecisionError as exc:
                yield [*unchanged, f"⚠ {exc}"]
                return
            lines: dict[str, str] = {}
            outcome = ""
            refused = False
            for event in self.graphs.decide(interrupt_id, decision):
                if event.kind == "item":
                    progress = event.payload[1]
                    lines[str(progress.get("imaging_study_id"))] = progress_log(progress)
                    yield [*unchanged, "\n\n".join(f"ImagingStudy/{markdown_literal(k)}: {v}" for k, v in lines.items())]
                elif event.kind == "card":
                    report: RunReport = event.payload
                    outcome = outcomes_markdown(report)
                    if report.running_elsewhere:  # recorded; the process that runs the job applies it
                        outcome = f"⚠ {markdown_literal(report.running_elsewhere)}\n\n{outcome}"
                    elif report.queued:  # recorded; a worker resumes the job (IMAGING_AGENT_BROKER_URL)
                        outcome = f"Recorded: job {markdown_literal(report.thread_id)} goes on on the first free worker."
                elif event.kind == "error":
                    outcome = f"⚠ {event.payload}"
                    refused = True
            if refused:  # nothing decided (another reviewer holds it, say): the card stays for another try
                yield [*unchanged, outcome]
                return
            try:
                listing = self.listing_updates(None, flag, engine, modality)
            except Exception as exc:
                listing = [gr.skip() for _ in self.listing]
                outcome += f"\n\n⚠ Could not list the approvals: {readable_error(exc)}"
            yield [*listing, "", *card_updates(None), outcome]

        return handler
