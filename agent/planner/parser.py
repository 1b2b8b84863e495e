"""Reading one user sentence: identifiers verbatim from the raw text, intent words from the rest.

Ids are taken verbatim from the token after `study` / `ImagingStudy/` (FHIR id syntax,
`[A-Za-z0-9-.]{1,64}`, FHIR R4 datatypes "id"); an id without a digit needs a marker
(`study id abc`, `study: abc`, `ImagingStudy/abc`), so `the study description` is no id;
several: `study a1 and study b2`, or `studies a1, b2 and c3` (ids with a digit).
An MRN follows `patient` / `MRN`; an engine is a known engine name, or the word after `engine`.
Identifiers are cut out of the text before its words are read, so an id is never a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.planner.lexicon import CLAUSE_BREAKS, ENGINE_PATTERNS, FILLER, LEXICON, PHRASES, is_word, lemma

FHIR_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")
"""FHIR R4 `id` datatype: the only ids the planner passes on."""

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
_JOB_ID = re.compile(r"\b(?:job|thread)\s*(?:id)?\s*[:#=]?\s*(?P<id>(?:study|batch)-[A-Za-z0-9\-]{1,80})", re.I)
_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "fifth": 4,
             "5th": 4, "last": -1}
_ORDINAL = re.compile(
    rf"\b(?:the\s+)?(?P<n>{'|'.join(_ORDINALS)})\s+(?:one|study|scan|exam|case|job|result|of\s+them)\b", re.I
)
_ENGINE_NAMED = re.compile(
    r"\bengine\s*[:=]?\s*(?P<a>[A-Za-z0-9][A-Za-z0-9\-_.]{0,63})"
    r"|\b(?:with|using|via)\s+(?:the\s+)?(?P<b>[A-Za-z0-9][A-Za-z0-9\-_.]{0,63})\s+engine\b",
    re.I,
)


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
    job_ids: list[str] = field(default_factory=list)
    ordinal: int | None = None
    """"the second one" -> 1, "the last one" -> -1: an index into the conversation's latest list."""
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
        return "MR" if self.has("mr") else "PT" if self.has("pt") else "DX" if self.has("xray") else "CT"

    @property
    def scope_all(self) -> bool:
        """A work list ("all pending CT"), not the studies of an earlier answer ("all of them")."""
        return self.has("all", "pending", "available") and not self.has("them")

    @property
    def refers_back(self) -> bool:
        return (self.singular_study or self.has("ref")) and not self.scope_all and not self.has("them")


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with the spans blanked out, its length kept: spans found in a blanked text fit the original."""
    for start, end in spans:
        text = text[:start] + " " * (end - start) + text[end:]
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
        if not explicit or is_word(candidate) or not FHIR_ID.fullmatch(candidate):
            continue
        if candidate not in ids:
            ids.append(candidate)
        spans.append((match.start(), match.start("id") + len(candidate)))
    return ids, spans


def _take_mrn(text: str) -> tuple[str | None, list[tuple[int, int]]]:
    for match in _MRN.finditer(text):
        candidate = match.group("id").rstrip(".")
        if not is_word(candidate):
            return candidate, [(match.start(), match.start("id") + len(candidate))]
    return None, []


def _take_engine(text: str) -> tuple[str | None, list[tuple[int, int]]]:
    found: list[tuple[int, str, tuple[int, int]]] = []
    for name, pattern in ENGINE_PATTERNS.items():
        for match in pattern.finditer(text):
            found.append((match.start(), name, match.span()))
    if not found:
        for match in _ENGINE_NAMED.finditer(text):
            group = "a" if match.group("a") else "b"
            if not is_word(match.group(group)):
                found.append((match.start(), match.group(group), match.span()))
    if not found:
        return None, []
    found.sort()
    return found[0][1], [span for _, _, span in found]


def _take_jobs(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    matches = list(_JOB_ID.finditer(text))
    return list(dict.fromkeys(m.group("id") for m in matches)), [(m.start("id"), m.end("id")) for m in matches]


def _take_ordinal(text: str) -> tuple[int | None, list[tuple[int, int]]]:
    match = _ORDINAL.search(text)
    if match is None:
        return None, []
    return _ORDINALS[match.group("n").lower()], [match.span("n")]


def parse_request(text: str) -> Request:
    """Read one user sentence: identifiers verbatim from the raw text, intent words from the rest."""
    request = Request(text=text)
    request.job_ids, job_spans = _take_jobs(text)
    text_without_jobs = _blank(text, job_spans)
    request.study_ids, id_spans = _take_ids(text_without_jobs)
    id_spans += job_spans
    request.mrn, mrn_spans = _take_mrn(_blank(text, id_spans))
    request.engine, engine_spans = _take_engine(_blank(text, id_spans + mrn_spans))
    request.ordinal, ordinal_spans = _take_ordinal(_blank(text, id_spans + mrn_spans + engine_spans))
    rest = _blank(text, id_spans + mrn_spans + engine_spans + ordinal_spans).lower()
    for pattern, replacement in PHRASES:
        rest = pattern.sub(replacement, rest)
    request.question = "?" in rest
    negated = False
    reporting = ""  # "report ... to FHIR" is a write; "the FHIR report" is not
    for token in re.findall(r"[a-z0-9]+|[,.;!?]", rest):
        if token in CLAUSE_BREAKS:
            negated, reporting = False, ""
            continue
        word = lemma(token)
        concepts = LEXICON.get(word, frozenset())
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
            request.unknown_words += word not in FILLER and not token.isdigit()
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
    if request.has("volume") and not request.has("segment"):
        request.concepts.add("stored")  # volumes asked for, not computed: what the report holds
    return request

