"""The offline intent planner: a deterministic chat model for when no LLM is configured.

It maps a small, documented goal grammar to the same tool calls an LLM would make, and answers
everything else with what it understood plus this grammar. It never guesses a tool, never invents
an identifier, never calls a write tool (run_study_pipeline, run_batch, store_results_to_pacs,
update_fhir) unless the sentence asks to store, write, update or process results, and it cannot
approve or reject anything: that is a radiologist's decision in the approval card.

Grammar (case-insensitive; fillers such as please, can you, could you, I want to, the, all,
every are ignored; `<id>` is a FHIR ImagingStudy id):

| # | You say (examples; wording may vary) | The planner calls |
|---|---|---|
| 1 | `help`, `what can you do`, `?` | nothing: it answers with this grammar |
| 2 | `list pending CT studies`, `find new scans`, `which exams are waiting?` | `search_imaging_studies(status="registered", modality="CT")` (`available` / `completed` studies: status "available"; MR, PET: modality "MR", "PT") |
| 3 | `show study <id>`, `describe study <id>`, `open ImagingStudy/<id>` | `show_study(imaging_study_id=<id>)` |
| 4 | `find patient <MRN>`, `look up MRN <MRN>`; `pending studies for patient <MRN>` | `search_patients(identifier=<MRN>)`; `search_imaging_studies(..., patient_identifier=<MRN>)` |
| 5 | `segment the lungs for study <id>`, `contour study <id> with monai-bundle`, `left lung volume of study <id>` | `segment(imaging_study_id=<id>[, engine][, targets=["left-lung"]])` (a read: nothing is written) |
| 6 | `segment the lungs of all pending CT`, `contour every waiting CT exam` | `search_imaging_studies(status="registered", modality="CT")`, then one `segment` per returned id, in one message |
| 7 | `analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS`, `... and update FHIR`, `process all pending CT studies` | `run_batch(status="registered", modality="CT"[, engine])` (write: waits for approval) |
| 8 | `store the results for study <id> in PACS`; `update FHIR for study <id>`; `process study <id>`, `run the pipeline for study <id>` | `store_results_to_pacs` / `update_fhir` / `run_study_pipeline` `(imaging_study_id=<id>[, engine])` (write: waits for approval; PACS and FHIR together: `run_study_pipeline`) |
| 9 | `build the RTSTRUCT for study <id>` (also SEG, SR); `report for study <id>` | `write_rtstruct_seg_sr(imaging_study_id=<id>)` (build only); `generate_report(imaging_study_id=<id>)` |
| 10 | `fetch the series of study <id>`, `download study <id>` | `fetch_series(imaging_study_id=<id>)` |
| 11 | `list pending approvals`, `what is waiting for approval?` | `list_pending_approvals()` |
| 12 | `approve ...`, `reject ...` | `list_pending_approvals()` only, and the answer that approvals are given in the approval card (buttons) or with `imaging-agent approvals approve ID` |
| 13 | `... with <engine>`, `... using <engine>`: `lung-threshold`, `monai-bundle`, `medimageparse`, or `engine <name>` | the `engine` argument of lines 5-10 |
| - | anything else (`what's the weather`, `delete all studies`, `store now` without a study) | nothing: what it understood, and this grammar |

Details:
- Ids are taken verbatim from the token after `study` / `ImagingStudy/` (FHIR id syntax,
  `[A-Za-z0-9-.]{1,64}`, FHIR R4 datatypes "id"); an id without a digit needs a marker
  (`study id abc`, `study: abc`, `ImagingStudy/abc`), so `the study description` is no id;
  several: `study a1 and study b2`, or `studies a1, b2 and c3` (ids with a digit).
  `that study` / `it` means the one study of the latest search, if it found exactly one;
  otherwise the planner asks for the id.
- Write words: store, save, send, push, upload, persist, archive (to the PACS unless FHIR is
  named); write ... PACS; update, mark, post, sync ... FHIR / EHR / record; report ... to FHIR
  (or record / report first: `record the volumes of study <id> in the EHR`); process; run the
  pipeline / batch. Negated words do not count: `don't store`, `without saving`.
- Refused with an answer, never a tool: delete, remove, edit, anonymize and other verbs no tool
  does; structures other than the lungs (liver, heart, ...).
- After tool results it takes the next step of a multi-step request (line 6) or answers with a
  summary: counts, ImagingStudy ids, volumes in mL, QA flags, approvals pending. Free text from
  DICOM or FHIR (`untrusted_text`) is never repeated, only mentioned.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError

from graphs.planner_tools.models import (
    ApprovalItem,
    ApprovalList,
    BuiltResults,
    JobStarted,
    PatientList,
    ReportText,
    SegmentationSummary,
    SeriesFetched,
    StructureResult,
    StudyDetail,
    StudyList,
)


@dataclass(frozen=True)
class GrammarRule:
    """One line of the grammar as the help answer shows it."""

    say: str
    calls: str


GRAMMAR: tuple[GrammarRule, ...] = (
    GrammarRule("help / what can you do / ?", "this list"),
    GrammarRule("list pending CT studies", "search_imaging_studies"),
    GrammarRule("show study <id>", "show_study"),
    GrammarRule("find patient <MRN>", "search_patients"),
    GrammarRule("segment the lungs for study <id> [with <engine>]", "segment (nothing is written)"),
    GrammarRule("segment the lungs of all pending CT", "search_imaging_studies, then segment per study"),
    GrammarRule(
        "analyze all pending CT scans for lung segmentation and store RTSTRUCT in PACS (or: and update FHIR)",
        "run_batch (waits for a radiologist's approval)",
    ),
    GrammarRule("store the results for study <id> in PACS", "store_results_to_pacs (waits for approval)"),
    GrammarRule("update FHIR for study <id>", "update_fhir (waits for approval)"),
    GrammarRule("process study <id> / run the pipeline for study <id>", "run_study_pipeline (waits for approval)"),
    GrammarRule("build the RTSTRUCT for study <id> (SEG, SR)", "write_rtstruct_seg_sr (build only)"),
    GrammarRule("report for study <id>", "generate_report"),
    GrammarRule("fetch the series of study <id>", "fetch_series"),
    GrammarRule("list pending approvals", "list_pending_approvals"),
    GrammarRule(
        "approve / reject", "not possible for me: use the approval card or `imaging-agent approvals approve ID`"
    ),
    GrammarRule("... with <engine> (lung-threshold, monai-bundle, medimageparse)", "the engine argument"),
)

APPROVAL_HOWTO = (
    "I cannot approve or reject results. A radiologist decides in the approval card (Approve / Reject "
    "buttons) or on the command line with `imaging-agent approvals approve ID` or "
    "`imaging-agent approvals reject ID --reason ...`."
)

FHIR_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")
"""FHIR R4 `id` datatype: the only ids the planner passes on."""

KNOWN_ENGINES: dict[str, re.Pattern[str]] = {
    "lung-threshold": re.compile(r"\blung[\s\-_]*threshold(?:ing)?\b|\bthreshold(?:ing)?\b", re.I),
    "monai-bundle": re.compile(r"\bmonai(?:[\s\-_]*bundle)?\b", re.I),
    "medimageparse": re.compile(r"\bmed[\s\-_]*image[\s\-_]*parse\b", re.I),
}

# -- the lexicon: word -> concepts ---------------------------------------------------------

_CONCEPTS: dict[str, tuple[str, ...]] = {
    "segment": ("segment", "segmentation", "analyze", "analyse", "analysis", "contour", "contouring",
                "autocontour", "delineate", "outline", "measure", "measurement"),
    "process": ("process", "processing", "reprocess"),
    "run": ("run", "start", "execute", "launch", "trigger", "kick"),
    "pipeline": ("pipeline", "workflow", "batch"),
    "store": ("store", "save", "send", "push", "upload", "persist", "archive"),
    "write": ("write",),
    "pacs": ("pacs", "orthanc"),
    "fhir": ("fhir", "ehr", "emr", "record", "chart"),
    "update": ("update", "mark", "post", "sync"),
    "mark": ("mark",),
    "build": ("build", "create", "make", "generate", "produce", "draft", "prepare", "write"),
    "object": ("rtstruct", "seg", "sr", "objects"),
    "report": ("report",),
    "fetch": ("fetch", "download", "retrieve", "pull"),
    "get": ("get", "load", "grab"),
    "pixels": ("series", "image", "images", "slice", "slices", "pixels", "dicom", "dicoms"),
    "volume": ("volume", "volumes"),
    "show": ("show", "open", "describe", "display", "view", "detail", "details", "info", "information",
             "inspect", "summary", "summarize", "summarise", "about", "check", "look"),
    "list": ("list", "find", "search", "show", "display", "get", "give", "which", "what", "any", "count",
             "query", "see", "look", "browse", "there", "check"),
    "pending": ("pending", "wait", "waiting", "registered", "new", "unprocessed", "outstanding", "queued",
                "unreported", "todo", "await", "awaiting"),
    "available": ("available", "completed", "complete", "done", "processed", "finished", "reported"),
    "all": ("all", "every", "each", "everything", "entire", "whole", "worklist", "batch"),
    "study": ("study", "scan", "exam", "examination", "case", "worklist", "ct", "cts"),
    "approve": ("approve", "reject", "decline", "accept", "deny", "denied", "signoff", "authorize",
                "authorise", "unapprove"),
    "approval": ("approval", "approvals", "signoff"),
    "help": ("help", "commands", "command", "usage", "grammar", "hello", "hi", "hey", "options",
             "capabilities", "menu", "examples"),
    "negation": ("not", "no", "never", "without", "dont", "nor", "skip"),
    "unsupported": ("delete", "remove", "erase", "drop", "purge", "wipe", "destroy", "cancel", "modify",
                    "edit", "change", "rename", "move", "merge", "anonymize", "anonymise", "deidentify",
                    "email", "mail", "print", "forward", "share", "discharge", "schedule", "book",
                    "prescribe", "compare", "copy", "overwrite", "replace", "retract", "revoke", "undo",
                    "shutdown", "kill", "restart", "reset", "install", "reboot"),
    "ref": ("it", "that", "this", "same"),
    "organ": ("liver", "heart", "kidney", "spleen", "brain", "bone", "tumor", "tumour", "nodule", "lesion",
              "aorta", "trachea", "airway", "vessel", "stomach", "pancreas", "prostate", "bladder", "colon",
              "spine", "vertebra", "rib", "breast", "thyroid", "esophagus", "oesophagus", "muscle", "fat",
              "bowel", "gallbladder", "cord"),
    "lung": ("lung", "lungs", "pulmonary"),
    "left": ("left",),
    "right": ("right",),
    "ct": ("ct", "cts"),
    "mr": ("mr", "mri", "mris"),
    "pt": ("pet",),
    "patient": ("patient", "patients"),
}

_FILLER = frozenset(
    "please pls kindly can could would will you i me my we us our want wanna like need to the a an of for "
    "in on at into onto from with using via by and then also now just only them those these its there is "
    "are be been being has have do does did some yet already their s go ahead thanks thank ok okay quickly "
    "immediately as so if when let lets same one ones id ids number data engine model algorithm contours "
    "structures structure results result output outputs file files tell up default anything something".split()
)

_IRREGULAR = {
    "studies": "study", "wrote": "write", "written": "write", "sent": "send", "built": "build",
    "ran": "run", "running": "run", "got": "get", "gotten": "get", "shown": "show", "found": "find",
    "made": "make", "gave": "give", "given": "give", "saw": "see", "seen": "see", "analyses": "analysis",
    "cases": "case", "lungs": "lungs", "series": "series", "mris": "mris", "cts": "cts",
}



def _build_lexicon() -> dict[str, frozenset[str]]:
    lexicon: dict[str, set[str]] = {}
    for concept, words in _CONCEPTS.items():
        for word in words:
            lexicon.setdefault(word, set()).add(concept)
    return {word: frozenset(concepts) for word, concepts in lexicon.items()}


_LEXICON = _build_lexicon()

_CLAUSE_BREAKS = frozenset({",", ".", ";", "!", "?", "but", "then", "instead", "however", "just", "only"})


def _lemma(word: str) -> str:
    """The lexicon form of an inflected word (storing -> store, studies -> study), or the word."""
    if word in _LEXICON or word in _FILLER:
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    candidates: list[str] = []
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    for suffix in ("ing", "ed"):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            candidates += [stem, stem + "e", stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem]
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("s"):
        candidates.append(word[:-1])
    if word.endswith("d"):
        candidates.append(word[:-1])
    return next((c for c in candidates if c in _LEXICON), word)


# -- parsing a request -----------------------------------------------------------------------

_STUDY_ID = re.compile(
    r"\b(?:imaging\s*study|study)\b(?P<sep>(?:\s*(?:\bid\b|\bnumber\b|\bno\.|#|:|/|=))*)\s*"
    r"(?P<id>[A-Za-z0-9][A-Za-z0-9\-\.]{0,63})",
    re.I,
)
_DIGIT_ID = r"[A-Za-z0-9\-\.]*\d[A-Za-z0-9\-\.]*"
_STUDY_ID_LIST = re.compile(
    rf"\bstudies\b\s*:?\s*(?P<ids>{_DIGIT_ID}(?:\s*(?:,|\band\b|&)\s*{_DIGIT_ID})*)",
    re.I,
)
_MRN = re.compile(
    r"\b(?:patient|mrn|medical\s+record\s+number|patient\s*id)\b"
    r"(?:\s*(?:\bwith\b|\bthe\b|\bid\b|\bidentifier\b|\bmrn\b|\bnumber\b|\bno\.|#|:|=))*\s*"
    r"(?P<id>[A-Za-z0-9][A-Za-z0-9\-\._^]{0,63})",
    re.I,
)
_ENGINE_NAMED = re.compile(
    r"\bengine\s*[:=]?\s*(?P<a>[A-Za-z0-9][A-Za-z0-9\-_.]{0,63})"
    r"|\b(?:with|using|via)\s+(?:the\s+)?(?P<b>[A-Za-z0-9][A-Za-z0-9\-_.]{0,63})\s+engine\b",
    re.I,
)
_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.I), replacement)
    for pattern, replacement in (
        (r"n[’']t\b", " not"),
        (r"\brt[\s\-_]*struct(?:ure)?s?\b|\bstructure[\s\-]*sets?\b|\brtss\b", " rtstruct "),
        (r"\bsign[\s\-]*off\b", " signoff "),
        (r"\bwork[\s\-]*list\b", " worklist "),
        (r"\bkick[\s\-]*off\b", " start "),
        (r"\blook\s+up\b", " find "),
        (r"\btell\s+me\s+about\b", " describe "),
        (r"\bhow\s+many\b", " count "),
        (r"\bwhat\s+can\s+you\s+do\b|\bwhat\s+do\s+you\s+(?:understand|know)\b"
         r"|\bhow\s+(?:do|can|should)\s+i\s+use\b|\bhow\s+does\s+(?:this|it)\s+work\b", " help "),
    )
)


def _is_word(candidate: str) -> bool:
    """A grammar or filler word: never taken for an identifier ("study for ...")."""
    lowered = candidate.lower()
    return lowered in _FILLER or _lemma(lowered) in _LEXICON


@dataclass
class Request:
    """What one user sentence asks for, as the planner understood it."""

    text: str
    concepts: set[str] = field(default_factory=set)
    """Concepts of the words that are not negated."""
    recognised: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    organs: list[str] = field(default_factory=list)
    study_ids: list[str] = field(default_factory=list)
    mrn: str | None = None
    engine: str | None = None
    singular_study: bool = False
    unknown_words: int = 0
    question: bool = False

    def has(self, *concepts: str) -> bool:
        return any(c in self.concepts for c in concepts)

    @property
    def status(self) -> str:
        return "available" if self.has("available") and not self.has("pending") else "registered"

    @property
    def modality(self) -> str:
        return "MR" if self.has("mr") else "PT" if self.has("pt") else "CT"

    @property
    def scope_all(self) -> bool:
        return self.has("all", "pending", "available")

    @property
    def refers_back(self) -> bool:
        return (self.singular_study or self.has("ref")) and not self.scope_all


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + " " + text[end:]
    return text


def _take_ids(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    ids: list[str] = []
    spans: list[tuple[int, int]] = []
    for match in _STUDY_ID_LIST.finditer(text):
        for raw in re.split(r"\s*(?:,|\band\b|&)\s*", match.group("ids"), flags=re.I):
            candidate = raw.rstrip(".")
            if FHIR_ID.fullmatch(candidate) and candidate not in ids:
                ids.append(candidate)
        spans.append(match.span())
    for match in _STUDY_ID.finditer(_blank(text, spans)):
        candidate = match.group("id").rstrip(".")
        # "study description" is not an id: a bare word after "study" needs a digit, or an
        # explicit marker ("study id abc", "ImagingStudy/abc").
        explicit = bool(match.group("sep").strip()) or any(ch.isdigit() for ch in candidate)
        if not explicit or _is_word(candidate) or not FHIR_ID.fullmatch(candidate):
            continue
        if candidate not in ids:
            ids.append(candidate)
        spans.append((match.start(), match.start("id") + len(candidate)))
    return ids, spans


def _take_mrn(text: str) -> tuple[str | None, list[tuple[int, int]]]:
    for match in _MRN.finditer(text):
        candidate = match.group("id").rstrip(".")
        if not _is_word(candidate):
            return candidate, [(match.start(), match.start("id") + len(candidate))]
    return None, []


def _take_engine(text: str) -> tuple[str | None, list[tuple[int, int]]]:
    found: list[tuple[int, str, tuple[int, int]]] = []
    for name, pattern in KNOWN_ENGINES.items():
        for match in pattern.finditer(text):
            found.append((match.start(), name, match.span()))
    if not found:
        for match in _ENGINE_NAMED.finditer(text):
            group = "a" if match.group("a") else "b"
            if not _is_word(match.group(group)):
                found.append((match.start(), match.group(group), match.span()))
    if not found:
        return None, []
    found.sort()
    return found[0][1], [span for _, _, span in found]


def parse_request(text: str) -> Request:
    """Read one user sentence: identifiers verbatim from the raw text, intent words from the rest."""
    request = Request(text=text)
    request.study_ids, id_spans = _take_ids(text)
    request.mrn, mrn_spans = _take_mrn(_blank(text, id_spans))
    request.engine, engine_spans = _take_engine(_blank(text, id_spans + mrn_spans))
    rest = _blank(text, id_spans + mrn_spans + engine_spans).lower()
    for pattern, replacement in _PHRASES:
        rest = pattern.sub(replacement, rest)
    request.question = "?" in rest
    negated = False
    reporting = ""  # "report ... to FHIR" is a write; "the FHIR report" is not
    for token in re.findall(r"[a-z0-9]+|[,.;!?]", rest):
        if token in _CLAUSE_BREAKS:
            negated, reporting = False, ""
            continue
        word = _lemma(token)
        concepts = _LEXICON.get(word, frozenset())
        if "negation" in concepts:
            negated = True
            continue
        if not negated:
            if word in ("record", "report") and not request.recognised and not request.concepts - {"list", "ref"}:
                request.concepts.add("update")  # the imperative "record/report ... in FHIR"
            if word == "report":
                reporting = "report"
            elif reporting == "report" and token == "to":
                reporting = "report to"
            elif reporting == "report to" and "fhir" in concepts:
                request.concepts.add("update")
        if word in ("study", "scan", "exam", "examination", "case"):
            request.singular_study = request.singular_study or token == word
        if not concepts:
            request.unknown_words += word not in _FILLER and not token.isdigit()
            continue
        if negated:
            continue
        request.concepts |= concepts
        if "unsupported" in concepts:
            request.unsupported.append(token)
        if "organ" in concepts:
            request.organs.append(token)
        if concepts - {"list", "ref", "study", "ct"}:
            request.recognised.append(token)
    if request.has("lung") and request.has("volume"):
        request.concepts.add("segment")
    return request


# -- planning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
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


def help_text(intro: str = "") -> str:
    lines = [intro] if intro else []
    lines.append(
        "I am the offline intent planner (no language model). I understand these requests "
        "(any wording close to them; <id> is an ImagingStudy id from a search):"
    )
    lines += [f"- {rule.say} -> {rule.calls}" for rule in GRAMMAR]
    lines.append(
        "Storing in the PACS and updating FHIR always wait for a radiologist's approval; I cannot approve."
    )
    return "\n".join(lines)


def _engine_args(request: Request) -> dict[str, Any]:
    return {"engine": request.engine} if request.engine else {}


def _segment_args(request: Request) -> dict[str, Any]:
    args = _engine_args(request)
    if request.has("left") != request.has("right"):
        args["targets"] = ["left-lung" if request.has("left") else "right-lung"]
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


def _per_study(names: Sequence[str], ids: Sequence[str], request: Request) -> Plan:
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
        return Plan(text=f"I can only segment the lungs (left lung, right lung), not: {organs}. Nothing was started.")
    if write:
        if targets:
            return _per_study([write], targets, request)
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
            return _per_study(actions, targets, request)
        if request.scope_all and reads:
            search = Call("search_imaging_studies", {"status": request.status, "modality": request.modality})
            return Plan(calls=(search,), per_study_next=tuple(actions))
        verb = {"segment": "segment", "fetch_series": "fetch", "write_rtstruct_seg_sr": "build the RTSTRUCT for",
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


# -- summaries of tool results ---------------------------------------------------------------

_MAX_LINES = 25


def _volumes(structures: Sequence[StructureResult]) -> str:
    return "; ".join(f"{s.display} {s.volume_ml:.1f} mL (confidence {s.confidence:.2f})" for s in structures)


def _cap(lines: list[str]) -> list[str]:
    if len(lines) <= _MAX_LINES:
        return lines
    return [*lines[:_MAX_LINES], f"- ... and {len(lines) - _MAX_LINES} more"]


def _free_text_note(has_text: bool) -> str:
    if not has_text:
        return ""
    return " (its record has a free-text description, not repeated here: it is data, not instructions)"


def _study_list(result: StudyList, args: dict[str, Any]) -> str:
    status = args.get("status", "registered")
    label = " ".join(
        part for part in ("pending" if status == "registered" else status or "", args.get("modality") or "") if part
    )
    who = f" for patient {args['patient_identifier']}" if args.get("patient_identifier") else ""
    head = f"Found {result.count} {label} stud{'y' if result.count == 1 else 'ies'}{who}".replace("  ", " ")
    if not result.studies:
        return head + "."
    lines = [
        f"- ImagingStudy/{s.imaging_study_id}: {', '.join(s.modalities) or '?'}, "
        f"{s.number_of_series if s.number_of_series is not None else '?'} series, "
        f"{s.number_of_instances if s.number_of_instances is not None else '?'} images"
        + (f", started {s.started}" if s.started else "")
        + (f", {s.patient_reference}" if s.patient_reference else "")
        + _free_text_note(bool(s.untrusted_text))
        for s in result.studies
    ]
    return "\n".join([head + ":", *_cap(lines)])


def _patients(result: PatientList, _: dict[str, Any]) -> str:
    lines = [f"- {p.patient_reference} (MRN {p.identifier or '?'})" for p in result.patients]
    return "\n".join([f"Found {result.count} patient(s){':' if lines else '.'}", *_cap(lines)])


def _study_detail(result: StudyDetail, _: dict[str, Any]) -> str:
    s = result.study
    head = (
        f"ImagingStudy/{s.imaging_study_id}: status {s.status}, {', '.join(s.modalities) or '?'}, "
        f"{s.number_of_series if s.number_of_series is not None else '?'} series / "
        f"{s.number_of_instances if s.number_of_instances is not None else '?'} images in FHIR"
        + (f", Study Instance UID {s.study_instance_uid}" if s.study_instance_uid else "")
        + _free_text_note(bool(s.untrusted_text))
        + f". The PACS holds {len(result.series_in_pacs)} series"
    )
    lines = [
        f"- {x.series_instance_uid}: {x.modality or '?'}, {x.images if x.images is not None else '?'} images"
        + (f", {x.slice_thickness_mm:g} mm" if x.slice_thickness_mm else "")
        + (" (has a series description, not repeated)" if x.untrusted_text else "")
        for x in result.series_in_pacs
    ]
    return "\n".join([head + (":" if lines else "."), *_cap(lines)])


def _fetched(result: SeriesFetched, _: dict[str, Any]) -> str:
    return (
        f"Fetched series {result.series_instance_uid} of ImagingStudy/{result.imaging_study_id}: "
        f"{result.images} images ({result.reason})."
    )


def _segmentation(result: SegmentationSummary, _: dict[str, Any]) -> str:
    flags = "; ".join(result.qa_flags) if result.qa_flags else "none"
    return (
        f"ImagingStudy/{result.imaging_study_id} ({result.engine} {result.engine_version}): "
        f"{_volumes(result.structures) or 'no structure found'}. QA flags: {flags}. "
        "Computed locally; nothing was written to the PACS or FHIR."
    )


def _built(result: BuiltResults, _: dict[str, Any]) -> str:
    objects = ", ".join(f"{o.kind} {o.sop_instance_uid}" for o in result.objects) or "none"
    return (
        f"Built {len(result.objects)} draft object(s) for ImagingStudy/{result.imaging_study_id}: {objects}. "
        "Not stored: storing needs the study pipeline and a radiologist's approval."
    )


def _report(result: ReportText, _: dict[str, Any]) -> str:
    return f"Report for ImagingStudy/{result.imaging_study_id}. {result.conclusion}\n{result.report_text.rstrip()}"


def _approval_line(a: ApprovalItem) -> str:
    return (
        f"- approval {a.approval_id} for ImagingStudy/{a.imaging_study_id} (job {a.job}): "
        f"{_volumes(a.structures) or 'no structure'}; {a.qa_flags} QA flag(s)"
    )


def _approvals(result: ApprovalList, _: dict[str, Any]) -> str:
    if not result.approvals:
        return "No approval is waiting."
    head = f"{result.count} approval(s) wait for a radiologist:"
    return "\n".join([head, *_cap([_approval_line(a) for a in result.approvals])])


def _job(result: JobStarted, _: dict[str, Any]) -> str:
    lines = [f"Started {result.kind} job {result.job_thread_id}."]
    if result.pending_approvals:
        lines.append(f"Nothing has been written: {len(result.pending_approvals)} approval(s) wait for a radiologist:")
        lines += _cap([_approval_line(a) for a in result.pending_approvals])
    lines += [f"- ImagingStudy/{o.get('imaging_study_id', '?')}: {o.get('outcome', '?')} — {o.get('detail', '')}"
              for o in result.outcomes]
    if not result.done and not result.pending_approvals:
        lines.append("It is still running; nothing is written before a radiologist approves.")
    return "\n".join(lines)


_SUMMARIES: dict[str, tuple[type[BaseModel], Callable[[Any, dict[str, Any]], str]]] = {
    "search_imaging_studies": (StudyList, _study_list),
    "search_patients": (PatientList, _patients),
    "show_study": (StudyDetail, _study_detail),
    "fetch_series": (SeriesFetched, _fetched),
    "segment": (SegmentationSummary, _segmentation),
    "write_rtstruct_seg_sr": (BuiltResults, _built),
    "generate_report": (ReportText, _report),
    "list_pending_approvals": (ApprovalList, _approvals),
    "run_study_pipeline": (JobStarted, _job),
    "store_results_to_pacs": (JobStarted, _job),
    "update_fhir": (JobStarted, _job),
    "run_batch": (JobStarted, _job),
}


def _error_text(content: str) -> str:
    first = content.strip().splitlines()[0] if content.strip() else "no detail"
    return first.removeprefix("Error: ")[:300]


def summarize_result(message: ToolMessage, name: str, args: dict[str, Any]) -> str:
    """One tool result in words: identifiers, counts, volumes, flags; never untrusted free text."""
    content = message.content if isinstance(message.content, str) else json.dumps(message.content)
    if message.status == "error":
        return f"{name} failed: {_error_text(content)}"
    known = _SUMMARIES.get(name)
    if known is None:
        return f"{name} answered (a result I do not summarise)."
    model, render = known
    try:
        return render(model.model_validate_json(content), args)
    except ValidationError:
        return f"{name} failed or returned something I could not read: {_error_text(content)}"


# -- the chat model ----------------------------------------------------------------------------


def _tool_name(tool: Any) -> str:
    name = getattr(tool, "name", None)
    if isinstance(name, str):
        return name
    if isinstance(tool, dict) and isinstance(tool.get("name"), str):
        return tool["name"]
    return str(convert_to_openai_tool(tool)["function"]["name"])


def _calls_by_id(messages: Sequence[BaseMessage]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        call["id"]: (call["name"], call["args"])
        for m in messages
        if isinstance(m, AIMessage)
        for call in m.tool_calls
        if call.get("id")
    }


def _results(messages: Sequence[BaseMessage]) -> list[tuple[ToolMessage, str, dict[str, Any]]]:
    calls = _calls_by_id(messages)
    out: list[tuple[ToolMessage, str, dict[str, Any]]] = []
    for m in messages:
        if isinstance(m, ToolMessage):
            name, args = calls.get(m.tool_call_id, (m.name or "", {}))
            out.append((m, m.name or name, args))
    return out


def _search_ids(message: ToolMessage) -> list[str] | None:
    """The ImagingStudy ids of a search result, or None when it is not a readable search result."""
    if message.status == "error":
        return None
    try:
        result = StudyList.model_validate_json(str(message.content))
    except ValidationError:
        return None
    return [s.imaging_study_id for s in result.studies]


def _previous_single_study(messages: Sequence[BaseMessage]) -> str | None:
    """The one study the latest search returned, for "that study" / "it"; None otherwise."""
    for message, name, _ in reversed(_results(messages)):
        if name == "search_imaging_studies":
            ids = _search_ids(message)
            if ids is not None and len(ids) == 1 and FHIR_ID.fullmatch(ids[0]):
                return ids[0]
            return None
    return None


class OfflinePlanner(BaseChatModel):
    """A deterministic planner over the grammar in this module's docstring; no network, no LLM."""

    tool_names: tuple[str, ...] | None = None
    """Names of the bound tools; None until `bind_tools`, and then the planner only answers in text."""

    @property
    def _llm_type(self) -> str:
        return "offline-intent-planner"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"tool_names": self.tool_names}

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> OfflinePlanner:
        """A copy that may call these tools (by name); `tool_choice` and other options are ignored."""
        return self.model_copy(update={"tool_names": tuple(_tool_name(t) for t in tools)})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.reply(messages))])

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        """The next message of the conversation: tool calls, or a text answer."""
        last_human = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)), None)
        if last_human is None:
            return AIMessage(help_text())
        request = parse_request(messages[last_human].text)
        plan = plan_request(request, _previous_single_study(messages[:last_human]))
        after = messages[last_human + 1 :]
        results = _results(after)
        if not results:
            if not plan.calls:
                return AIMessage(plan.text)
            return self._call(plan.calls, len(messages))
        called = {name for _, name, _ in results}
        if plan.per_study_next and not called & set(plan.per_study_next):
            ids = _search_ids(results[-1][0]) if results[-1][1] == "search_imaging_studies" else None
            valid = [i for i in ids or [] if FHIR_ID.fullmatch(i)]
            if valid:
                next_plan = _per_study(plan.per_study_next, valid, request)
                return self._call(next_plan.calls, len(messages))
        lines = [summarize_result(m, name, args) for m, name, args in results]
        if plan.per_study_next and not called & set(plan.per_study_next):
            lines.append("No study to work on, so nothing more was done.")
        if plan.closing:
            lines.append(plan.closing)
        return AIMessage("\n".join(lines))

    def _call(self, calls: Sequence[Call], position: int) -> AIMessage:
        if self.tool_names is None:
            return AIMessage(help_text(
                "No tools are connected to this planner, so I can only explain what I understand."
            ))
        missing = sorted({c.name for c in calls} - set(self.tool_names))
        if missing:
            return AIMessage(
                f"I would call {', '.join(missing)}, but that tool is not available here; nothing was done."
            )
        return AIMessage(
            content="",
            tool_calls=[
                {"name": c.name, "args": c.args, "id": _call_id(position, index, c), "type": "tool_call"}
                for index, c in enumerate(calls)
            ],
        )


def _call_id(position: int, index: int, call: Call) -> str:
    """Deterministic and unique within a conversation: the message position and the call's index."""
    key = json.dumps([position, index, call.name, call.args], sort_keys=True)
    return "call_" + hashlib.sha256(key.encode()).hexdigest()[:24]
