"""Pure rendering for the app: approval cards, jobs, progress and errors as Markdown text.

No Gradio here: every function takes plain data and returns text, so it is tested without a page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from agent.llm import planner_info
from agent.settings import Settings
from agent.untrusted import markdown_code, markdown_code_block, markdown_literal
from graphs.approval_worklist import WorklistEntry, waiting_text
from graphs.runtime import Job, RunReport
from tools.identity.principal import Principal
from tools.workflow.claims import Claim, utc_text

STAGE_LABELS = {"approval": "waiting for approval", "write_pacs": "storing in PACS", "write_fhir": "updating FHIR"}

Card = Mapping[str, Any]
"""An approval card: tools.workflow.approval.ApprovalRequest fields + "approval_id" + "job"."""


def cell(value: object) -> str:
    """Record text as literal Markdown, safe in a table cell too (agent/untrusted.py)."""
    return markdown_literal(value)


def planner_markdown(settings: Settings) -> str:
    info = planner_info(settings)
    return f"**Planner ({info.kind})**: {info.description}"


def card_summary_markdown(card: Card) -> str:
    """Who and what the decision is about; every value from the records is shown literally."""
    series = card["series"]
    thickness = f"{series['slice_thickness_mm']} mm" if series.get("slice_thickness_mm") is not None else "? mm"
    return "\n\n".join(
        [
            f"### Approval needed: ImagingStudy/{cell(card['imaging_study_id'])}",
            f"**Patient** {cell(card.get('patient_display_name') or '(no name)')} (ID {cell(card.get('patient_id'))})"
            f" · **Study** {cell(card.get('study_date'))} {cell(card.get('study_description') or '')}",
            _patient_identities_markdown(card),
            f"**Study Instance UID** {markdown_code(card['study_instance_uid'])}",
            f"**Series** {markdown_code(series['series_instance_uid'])}: {series['images']} images, {thickness}, "
            f"{cell(series.get('description') or '')}  \n_{cell(series.get('reason'))}_",
            f"**Engine** {cell(card['engine'])} {cell(card['engine_version'])} · approval "
            f"{markdown_code(card['approval_id'])} in job {markdown_code(card['job'])}",
            "Nothing is written to the PACS or the EHR before you decide.",
        ]
    )


def _patient_identities_markdown(card: Card) -> str:
    """FHIR's patient beside the one the DICOM headers name (checked equal at fetch), as literal text."""
    issuer = card.get("dicom_issuer_of_patient_id")
    return (
        f"**FHIR** {cell(card.get('patient_reference'))}: {cell(card.get('patient_display_name') or '(no name)')}, "
        f"ID {cell(card.get('patient_id'))} · **DICOM** {cell(card.get('dicom_patient_name') or '(no name)')}, "
        f"PatientID {cell(card.get('dicom_patient_id'))}{f' (issuer {cell(issuer)})' if issuer else ''}"
    )


def card_findings_markdown(card: Card) -> str:
    """Volumes per structure, the QA flags, and the report text that would be stored."""
    rows = ["| Structure | Volume (mL) or area | Mean HU | Components | Confidence |", "|---|---:|---:|---:|---:|"]
    for s in card["structures"]:
        area = s.get("area_mm2")
        size, hu = (f"{area / 100:.1f} cm² projected", "–") if area is not None else (f"{s['volume_ml']:.1f}", f"{s['mean_hu']:.0f}")
        rows.append(f"| {cell(s['display'])} | {size} | {hu} | {s['n_components']} | {s['confidence']:.2f} |")
    icons = {"fail": "✗", "warning": "⚠", "info": "•"}
    flags = [f"- {icons.get(f['severity'], '')} **{cell(f['severity'])}**: {cell(f['message'])}" for f in card["flags"]]
    return "\n".join(
        [
            "#### Volumes",
            *rows,
            "",
            *([f"Engine endpoint: {cell(card['engine_endpoint'])}", ""] if card.get("engine_endpoint") else []),
            *_check_markdown(card.get("input_check")),
            *_draft_markdown(card.get("draft")),
            "#### QA flags",
            *(flags or ["None."]),
            "",
            "#### Report text",
            markdown_code_block(str(card.get("report_text", "")).strip()),
        ]
    )


def _check_markdown(check: dict[str, Any] | None) -> list[str]:
    if not check:
        return []
    verdict = "as expected" if check["best"] in check["expected"] else "NOT what the goal expects"
    return [
        f"**Input check** ({cell(check['model'])} {cell(check['model_version'])} at {cell(check['endpoint'])}): "
        f"{cell(check['best'])}, {verdict}.",
        "",
    ]


def _draft_markdown(draft: dict[str, Any] | None) -> list[str]:
    """AI-drafted findings, numbered as the boxes in the draft preview; marked as a draft nobody approved yet."""
    if not draft:
        return []
    lines = [
        f"#### AI-drafted findings (preliminary): {cell(draft['model'])} {cell(draft['model_version'])} "
        f"at {cell(draft['endpoint'])}",
    ]
    for number, finding in enumerate(draft["findings"], start=1):
        boxed = f" (box{'es' if len(finding['boxes']) > 1 else ''} in the draft preview)" if finding["boxes"] else ""
        lines.append(f"{number}. {cell(finding['text'])}{boxed}")
    context = draft["context"]
    lines += [f"Sent with the images: indication {cell(context['indication'] or '(none)')}; "
              f"technique {cell(context['technique'])}; comparison {cell(context['comparison'])}", ""]
    return lines


def card_writes_markdown(card: Card) -> str:
    """Every write the approval allows: what is approved is exactly what is written."""
    dicom = ["| Object | SOP Class | SOP Instance UID | sha256 |", "|---|---|---|---|"]
    for w in card["dicom_writes"]:
        dicom.append(
            f"| {cell(w['kind'])} | {cell(w['sop_class_name'])} ({markdown_code(w['sop_class_uid'])}) | "
            f"{markdown_code(w['sop_instance_uid'])} | {markdown_code(w['sha256'][:16] + '…')} |"
        )
    fhir = ["| Method | Resource | Target | Change |", "|---|---|---|---|"]
    for c in card["fhir_changes"]:
        fhir.append(f"| {cell(c['method'])} | {cell(c['resource_type'])} | {cell(c['target'])} | {cell(c['summary'])} |")
    return "\n".join(
        ["#### Pending writes: PACS (STOW-RS)", *dicom, "", "#### Pending writes: FHIR", *fhir]
    )


def approval_choice(entry: WorklistEntry, now: datetime) -> tuple[str, str]:
    """(label, value) for the approvals list; the label names the study, job, waiting time and holder, not the patient."""
    pending, r = entry.approval, entry.approval.request
    label = (
        f"ImagingStudy/{r.imaging_study_id} · patient ID {r.patient_id or '-'} · job {pending.thread_id} · "
        f"waiting {waiting_text(entry.waiting_s(now))}"
    )
    if entry.claim is not None:
        label += f" · claimed by {entry.claim.holder.name}"
    return label, pending.interrupt_id


def worklist_markdown(entries: Sequence[WorklistEntry], now: datetime) -> str:
    """The worklist as a table, longest waiting first: what each result is and who reviews it."""
    if not entries:
        return "No approval is waiting (with these filters)."
    rows = [
        "| ImagingStudy | Patient ID | Waiting | Engine | Modality | QA flags | Claimed by |",
        "|---|---|---:|---|---|---|---|",
    ]
    for e in entries:
        r = e.approval.request
        rows.append(
            f"| {cell(r.imaging_study_id)} | {cell(r.patient_id or '-')} | {waiting_text(e.waiting_s(now))} | "
            f"{cell(e.engine)} | {cell(e.modality)} | {cell(', '.join(e.flag_codes) or '-')} | {claim_text(e.claim)} |"
        )
    return "\n".join(rows)


def claim_status_markdown(claim: Claim | None, viewer: Principal | None) -> str:
    """The chosen approval's claim line: who holds it until when (you, or another reviewer), or nobody."""
    if claim is None:
        return "**Not claimed.** Claim it while you review it; deciding claims it too."
    yours = viewer is not None and (viewer.id, viewer.issuer) == (claim.holder.id, claim.holder.issuer)
    who = "you" if yours else "another reviewer: only they can decide it until then"
    return f"**Claimed by** {claim_text(claim)} ({who})"


def claim_text(claim: Claim | None) -> str:
    """Who holds an approval and until when, as literal Markdown; '-' when nobody does."""
    if claim is None:
        return "-"
    return f"{cell(claim.holder.name)} ({cell(claim.holder.id)}) until {utc_text(claim.expires_at)}"


def progress_log(event: Mapping[str, Any]) -> str:
    stage = str(event.get("stage", "?"))
    percent = float(event.get("percent", 0))
    bar = "█" * int(percent // 10) + "░" * (10 - int(percent // 10))
    text = f"{STAGE_LABELS.get(stage, stage)} · {percent:.0f}% `{bar}`"
    if event.get("error"):
        text += f"\n\n✗ {cell(event['error'])}"
    return text


def outcomes_markdown(report: RunReport) -> str:
    """What a decision led to: each study's outcome, or how many approvals still wait."""
    return "\n".join(
        f"ImagingStudy/{cell(o['imaging_study_id'])}: **{cell(o['outcome'])}** — {cell(o['detail'])}"
        for o in report.outcomes
    ) or f"Job {report.thread_id}: {len(report.pending)} approval(s) still pending."


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
            f"| `{job.thread_id}` | {job.kind} | {cell(job.label)} | {job.created_at[:19].replace('T', ' ')} | "
            f"{job.status} | {len(report.pending) if report else '-'} |"
        )
    lines += ["", "#### Studies", "| Job | ImagingStudy | Outcome | Seconds | Detail |", "|---|---|---|---:|---|"]
    count = 0
    for job in jobs:
        report = reports.get(job.thread_id)
        for outcome in report.outcomes if report else []:
            count += 1
            lines.append(
                f"| `{job.thread_id}` | {cell(outcome['imaging_study_id'])} | **{cell(outcome['outcome'])}** | "
                f"{float(outcome.get('seconds', 0)):.1f} | {cell(outcome.get('detail'))} |"
            )
        for pending in report.pending if report else []:
            count += 1
            lines.append(
                f"| `{job.thread_id}` | {cell(pending.request.imaging_study_id)} | **waiting for approval** | | "
                "see the Approvals tab |"
            )
    if not count:
        lines.append("| | | no study outcome yet | | |")
    return "\n".join(lines)


def readable_error(exc: BaseException) -> str:
    """The project's errors already name the resource and what to do; keep their text."""
    # KeyError's str() is the repr of its argument; the message is the argument itself.
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip() or type(exc).__name__
    return f"{cell(text)} (see the status line above and the server log for details)"
