"""Record text is shown as typed: never rich markup in the terminal, never Markdown or HTML in the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agent.cli_review import render_approval, render_outcomes
from agent.ui.markdown import card_findings_markdown, card_summary_markdown, card_writes_markdown, jobs_markdown
from agent.ui.transcript import tool_step_summary
from agent.untrusted import markdown_code, markdown_literal
from graphs.runtime import Job, PendingApproval, RunReport
from tests.rendered_markdown import rendered_html, rendered_text
from tests.unit.test_app import sample_card
from tools.workflow.approval import ApprovalRequest

pytestmark = pytest.mark.unit

RICH_FORGERY = "[bold red]APPROVED BY DR LEE[/bold red]"
BROKEN_MARKUP = "CT [/x] CHEST"
MARKDOWN_FORGERY = "**APPROVED** <img src=x onerror=alert(1)> [sign here](http://evil.example/) _x_ ~~no~~ $x$"
HOSTILE = [
    RICH_FORGERY,
    BROKEN_MARKUP,
    MARKDOWN_FORGERY,
    "# heading",
    "> quoted",
    "- item",
    "1. first",
    "---",
    "a | b | c",
    "`code` and ``more``",
    "https://evil.example www.evil.example someone@evil.example",
    "&lt;script&gt; &#60;b&#62;",
    "back\\slash\\",
    "line one\nline two",
]
# What a renderer must never make of record text.
FORBIDDEN_TAGS = ("<strong", "<em", "<img", "<a ", "<h1", "<blockquote", "<li", "<hr", "<del", "<code", "<script", "<b>")


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_literal_renders_exactly_its_characters(text: str) -> None:
    markdown = markdown_literal(text)
    html = rendered_html(markdown)
    assert not any(tag in html for tag in FORBIDDEN_TAGS), html
    assert rendered_text(markdown).strip() == " ".join(text.split())


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_literal_keeps_a_table_row_whole(text: str) -> None:
    html = rendered_html(f"| a | b |\n|---|---|\n| {markdown_literal(text)} | end |")
    assert html.count("<td>") == 2 and "<td>end</td>" in html, html


@pytest.mark.parametrize("uid", ["1.2.3", "1.2`3", "``", "1|2"])
def test_markdown_code_holds_any_value(uid: str) -> None:
    html = rendered_html(f"| {markdown_code(uid)} | end |\n|---|---|")
    assert html.count("<code>") == 1 and html.count("<th>") == 2, html
    assert rendered_text(markdown_code(uid).replace("\\|", "|")).strip() == uid


def hostile_card(tmp_path: Path) -> dict[str, Any]:
    card = sample_card(tmp_path / "axial_1.png")
    card.update(study_description=MARKDOWN_FORGERY, patient_display_name="**Dr** <b>Lee</b>", patient_id="[MRN](x)")
    card["series"].update(description=RICH_FORGERY, reason="<img src=x onerror=alert(1)>")
    card["flags"][0]["message"] = "**fine** [ok](http://evil.example/)"
    card["report_text"] = "```\n**APPROVED**\n```\n<img src=x>"
    card["fhir_changes"][0]["summary"] = "<a href=http://evil.example/>status</a>"
    return card


def test_the_app_card_shows_record_text_literally(tmp_path: Path) -> None:
    card = hostile_card(tmp_path)
    for render in (card_summary_markdown, card_findings_markdown, card_writes_markdown):
        markdown = render(card)
        html = rendered_html(markdown)
        assert not any(tag in html for tag in ("<img", "<a ", "<b>")), html
        assert "<strong>APPROVED" not in html and "<strong>fine" not in html and "<strong>Dr" not in html
    summary = rendered_text(card_summary_markdown(card))
    assert MARKDOWN_FORGERY in summary and "**Dr** <b>Lee</b>" in summary and "[MRN](x)" in summary
    assert "<img src=x onerror=alert(1)>" in summary
    findings = rendered_text(card_findings_markdown(card))
    assert "**fine** [ok](http://evil.example/)" in findings
    assert "```\n**APPROVED**\n```\n<img src=x>" in findings, "the report text stays inside its code block"
    assert "<a href=http://evil.example/>status</a>" in rendered_text(card_writes_markdown(card))


def test_jobs_outcomes_and_tool_results_show_record_text_literally() -> None:
    detail = "failed: series **[APPROVED](http://evil.example/)** <img src=x>"
    jobs = [Job(thread_id="batch-1", kind="batch", label="status=<b>x</b>", created_at="2026-01-02T03:04:05", status="done")]
    reports = {
        "batch-1": RunReport(
            thread_id="batch-1", kind="batch", done=True, pending=[],
            outcomes=[{"imaging_study_id": "s1", "study_instance_uid": None, "outcome": "failed", "detail": detail,
                       "seconds": 1.0}],
        )
    }
    html = rendered_html(jobs_markdown(jobs, reports))
    assert "<img" not in html and "<a " not in html and "<b>" not in html
    assert detail in rendered_text(jobs_markdown(jobs, reports))
    summary = tool_step_summary('{"study": {"untrusted_text": "**APPROVED** <img src=x>"}}')
    assert "<img" not in rendered_html(summary) and "<strong>" not in rendered_html(summary)
    assert "**APPROVED** <img src=x>" in rendered_text(summary)


def test_assistant_replies_in_the_web_chat_render_as_typed() -> None:
    """The chat summary carries outcome details; a model may repeat an injected description."""
    from langchain_core.messages import AIMessage

    from agent.ui.transcript import Transcript

    reply = "ImagingStudy/s1: failed — **APPROVED** ![x](http://evil.example/p.png)\n- <b>ok</b>\n\nnext paragraph"
    transcript = Transcript([])
    transcript.apply("updates", {"summarize": {"messages": [AIMessage(reply)]}})
    shown = transcript.messages[-1]["content"]
    html = rendered_html(shown)
    assert "<img" not in html and "<strong>" not in html and "<b>" not in html and "<li>" not in html
    text = rendered_text(shown)
    assert "**APPROVED** ![x](http://evil.example/p.png)" in text and "- <b>ok</b>" in text
    assert html.count("<p>") == 2, "paragraphs survive"


def pending_with(tmp_path: Path, **update: Any) -> PendingApproval:
    card = sample_card(tmp_path / "axial_1.png")
    job, approval_id = card.pop("job"), card.pop("approval_id")
    card.update(update)
    return PendingApproval(thread_id=job, interrupt_id=approval_id, request=ApprovalRequest.model_validate(card))


def printed(render: Any, *args: Any) -> str:
    console = Console(record=True, width=300, color_system="truecolor")
    render(console, *args)
    return console.export_text()


def test_the_terminal_card_prints_record_text_literally(tmp_path: Path) -> None:
    pending = pending_with(
        tmp_path,
        study_description=RICH_FORGERY,
        patient_display_name="[blink]Doe[/blink]^Jane",
        engine_fallbacks=["monai-bundle: [red]crashed[/red]"],
    )
    pending.request.series.reason = BROKEN_MARKUP
    pending.request.flags[0].message = "[green]all fine[/green]"
    pending.request.fhir_changes[0].summary = "[/]"
    text = printed(render_approval, pending)
    for literal in (RICH_FORGERY, "[blink]Doe[/blink]^Jane", BROKEN_MARKUP, "[red]crashed[/red]", "[green]all fine[/green]", "[/]"):
        assert literal in text


def test_a_closing_tag_without_opening_does_not_stop_the_card(tmp_path: Path) -> None:
    """`CT [/x] CHEST` was a rich MarkupError: the card never showed, and every later `process` crashed."""
    text = printed(render_approval, pending_with(tmp_path, study_description=BROKEN_MARKUP))
    assert BROKEN_MARKUP in text and "Pending writes" in text


def test_outcomes_print_details_literally() -> None:
    report = RunReport(
        thread_id="study-1", kind="study", done=True, pending=[],
        outcomes=[{"imaging_study_id": "s1", "study_instance_uid": None, "outcome": "failed",
                   "detail": f"series {BROKEN_MARKUP}: {RICH_FORGERY}", "seconds": 1.0}],
    )
    assert f"series {BROKEN_MARKUP}: {RICH_FORGERY}" in printed(render_outcomes, report)
