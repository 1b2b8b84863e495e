"""The offline planner's grammar, defined once: what users can say and the tool calls it maps to.

The `help` answer and the README table ("The offline planner's grammar") are both generated
from `GRAMMAR`; a unit test runs every example through the planner and checks that README.md
holds exactly `markdown_table()`. After changing a line, refresh the README table with

    python -m agent.planner.grammar --markdown

Case-insensitive; fillers such as please, can you, could you, I want to, the, all, every are
ignored; `<id>` is a FHIR ImagingStudy id, `<MRN>` a patient's MRN (DICOM PatientID).

Beyond the table:
- Write words: store, save, send, push, upload, persist, archive (to the PACS unless FHIR is
  named); write ... PACS; update, mark, post, sync ... FHIR / EHR / record; report ... to FHIR
  (or record / report first: `record the volumes of study <id> in the EHR`); process; run the
  pipeline / batch. Negated words do not count: `don't store`, `without saving`.
- Follow-ups (line 19) point at the ids of earlier results, which the chat keeps in its state
  (`graphs/referents.py`): `that study` / `it` is the study the latest single-study answer was
  about, or the one study of the latest list; `the second one` / `the last one` index the latest
  list (studies, or jobs after `list jobs`); `them` / `all of them` / `both` are that whole list;
  `the same for ...` repeats the previous request on those. When the conversation holds no such
  study, the planner asks for the id (see `agent.planner.parser` for the id rules).
- A volume asked for without a segmentation verb (`show the lung volumes of ...`) is read from the
  stored report (line 14), never computed again; `segment` / `measure` computes it (line 5).
- Refused with an answer, never a tool: delete, remove, edit, anonymize and other verbs no tool
  does; structures other than the lungs and the heart (liver, kidney, ...).
- After tool results it takes the next step of a multi-step request (line 6) or answers with a
  summary: counts, ImagingStudy ids, volumes in mL, QA flags, approvals pending. Free text from
  DICOM or FHIR (`untrusted_text`) is never repeated, only mentioned.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from agent.planner.lexicon import ENGINE_PATTERNS


@dataclass(frozen=True)
class GrammarLine:
    """One line of the grammar: what a user says, and what the planner calls for it."""

    number: str
    """"1", "2", ...; "-" for everything outside the grammar."""
    examples: tuple[str, ...]
    """Sentences the planner understands (tested one by one); "..." stands for the rest of a request."""
    calls: str
    """What the planner calls, in markdown with each tool name in backticks."""
    lead: str = ""
    """Words before the examples."""
    note: str = ""
    """Words after the examples."""

    def says(self) -> str:
        """The "You say" cell: the examples in backticks, with the words around them."""
        examples = ", ".join(f"`{example}`" for example in self.examples)
        return " ".join(part for part in (self.lead, examples, self.note) if part)


_PENDING_CT = 'status="registered", modality="CT"'
_ENGINES = ", ".join(f"`{name}`" for name in ENGINE_PATTERNS)

GRAMMAR: tuple[GrammarLine, ...] = (
    GrammarLine("1", ("help", "what can you do", "?"), "nothing: it answers with this grammar"),
    GrammarLine(
        "2",
        ("list pending CT studies", "find new scans", "which exams are waiting?"),
        f'`search_imaging_studies({_PENDING_CT})` (`available` / `completed` studies: status "available"; '
        'MR, PET: modality "MR", "PT")',
    ),
    GrammarLine(
        "3", ("show study <id>", "describe study <id>", "open ImagingStudy/<id>"), "`show_study(imaging_study_id=<id>)`"
    ),
    GrammarLine(
        "4",
        ("find patient <MRN>", "look up MRN <MRN>", "pending studies for patient <MRN>"),
        "`search_patients(identifier=<MRN>)`; asking for studies: "
        "`search_imaging_studies(..., patient_identifier=<MRN>)`",
    ),
    GrammarLine(
        "5",
        ("segment the lungs for study <id>", "contour study <id> with monai-bundle", "measure the left lung of study <id>"),
        '`segment(imaging_study_id=<id>[, engine][, targets=["left-lung"]])` (a read: nothing is written)',
    ),
    GrammarLine(
        "6",
        ("segment the lungs of all pending CT", "contour every waiting CT exam"),
        f"`search_imaging_studies({_PENDING_CT})`, then one `segment` per returned id, in one message",
    ),
    GrammarLine(
        "7",
        (
            "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS",
            "... and update FHIR",
            "process all pending CT studies",
        ),
        f"`run_batch({_PENDING_CT}[, engine])` (write: waits for approval)",
    ),
    GrammarLine(
        "8",
        (
            "store the results for study <id> in PACS",
            "update FHIR for study <id>",
            "process study <id>",
            "run the pipeline for study <id>",
        ),
        "`store_results_to_pacs` / `update_fhir` / `run_study_pipeline` `(imaging_study_id=<id>[, engine])` "
        "(write: waits for approval; PACS and FHIR together: `run_study_pipeline`)",
    ),
    GrammarLine(
        "9",
        ("build the RTSTRUCT for study <id>", "build the SEG and SR for study <id>", "report for study <id>"),
        "`write_rtstruct_seg_sr(imaging_study_id=<id>)` (build only); `generate_report(imaging_study_id=<id>)`",
    ),
    GrammarLine("10", ("fetch the series of study <id>", "download study <id>"), "`fetch_series(imaging_study_id=<id>)`"),
    GrammarLine("11", ("list pending approvals", "what is waiting for approval?"), "`list_pending_approvals()`"),
    GrammarLine(
        "12",
        ("approve ...", "reject ..."),
        "`list_pending_approvals()` only, and the answer that approvals are given in the approval card "
        "(buttons) or with `imaging-agent approvals approve ID`",
    ),
    GrammarLine(
        "13",
        ("... with <engine>", "... using <engine>", "engine <name>"),
        "the `engine` argument of lines 5-10",
        note=f"(engines: {_ENGINES})",
    ),
    GrammarLine(
        "14",
        ("show me the lung volumes for the last processed study", "stored results of study <id>",
         "what was saved for study <id>?"),
        "`stored_results(imaging_study_id=<id>)`; `last` / `latest` processed without an id: `stored_results()` "
        "(reads the DiagnosticReport, Observations, PACS series and approvals; nothing is recomputed)",
    ),
    GrammarLine(
        "15",
        ("list jobs", "which jobs failed?", "show job <job>"),
        '`list_jobs(status="all" / "failed" / "waiting-approval")`; `show_job(job_id=<job>)` (steps, failures, '
        "who it waits for)",
    ),
    GrammarLine(
        "16",
        ("audit trail of study <id>", "who approved study <id>?", "show the provenance of study <id>"),
        "`audit_study(imaging_study_id=<id>)`",
    ),
    GrammarLine(
        "17",
        ("compare study <id> with its priors", "prior studies of study <id>", "volume change since the previous scan of study <id>"),
        "`prior_studies(imaging_study_id=<id>)`",
    ),
    GrammarLine(
        "18",
        ("retry study <id>", "re-run study <id> with monai-bundle", "cancel job <job>"),
        "`retry_study(imaging_study_id=<id>)` / `rerun_study(imaging_study_id=<id>, engine)` / "
        "`cancel_job(job_id=<job>)` (operator actions: a signed-in operator; retry and re-run still wait for approval)",
    ),
    GrammarLine(
        "19",
        ("... that study", "... the second one", "the same for all of them"),
        "the line the rest of the sentence asks for, on the ids of the conversation's latest results "
        "(`the same`: the previous request again)",
    ),
    GrammarLine(
        "20",
        ("segment the heart on study <id>", "segment the lungs and heart of study <id>"),
        '`segment(imaging_study_id=<id>, engine="medimageparse", targets=["heart"])` (lungs too: '
        '`targets=["lungs", "heart"]`; a chest radiograph; a read: nothing is written)',
    ),
    GrammarLine(
        "21",
        ("draft reports for pending chest X-rays", "draft reports for all waiting radiographs"),
        '`run_batch(status="registered", modality="DX", engine="medimageparse")` (write: waits for approval; '
        "the drafts come from CXRReportGen when its endpoint is set)",
    ),
    GrammarLine(
        "22",
        ("check that study <id> is a chest CT", "verify study <id> is a chest x-ray"),
        "`check_input(imaging_study_id=<id>)` (MedImageInsight's zero-shot check; a read)",
    ),
    GrammarLine(
        "-",
        ("what's the weather", "delete all studies", "store now"),
        "nothing: what it understood, and this grammar",
        lead="anything else, e.g.",
        note="(no study named)",
    ),
)


def markdown_table() -> str:
    """The grammar as the markdown table in README.md."""
    rows = ["| # | You say (examples; wording may vary) | The planner calls |", "|---|---|---|"]
    rows += [f"| {line.number} | {line.says()} | {line.calls} |" for line in GRAMMAR]
    return "\n".join(rows)


def help_text(intro: str = "") -> str:
    """The planner's answer to `help`, and to anything it does not understand (after `intro`)."""
    lines = [intro] if intro else []
    lines.append(
        "I am the offline intent planner (no language model). I understand these requests "
        "(any wording close to them; <id> is an ImagingStudy id from a search):"
    )
    lines += [f"{line.number}{'.' if line.number != '-' else ''} {line.says()} -> {line.calls}" for line in GRAMMAR]
    lines.append(
        "Storing in the PACS and updating FHIR always wait for a radiologist's approval; I cannot approve."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agent.planner.grammar", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the README table, not the help answer")
    print(markdown_table() if parser.parse_args(argv).markdown else help_text())


if __name__ == "__main__":
    main()
