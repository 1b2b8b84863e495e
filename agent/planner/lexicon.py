"""The offline planner's words: what each word means to it, and what it ignores.

A word maps to one or more concepts (`store` -> store, `show` -> show and list); the parser
(`agent.planner.parser`) reads a sentence as the set of concepts of its words that are not
negated. Fillers carry no meaning; words that are neither (names, typos) are counted as unknown.
Multi-word phrases are first rewritten to one word (`sign off` -> `signoff`).
"""

from __future__ import annotations

import re

from tools.segmentation.catalog import engine_names

_ENGINE_SPELLINGS: dict[str, str] = {
    "lung-threshold": r"\blung[\s\-_]*threshold(?:ing)?\b|\bthreshold(?:ing)?\b",
    "monai-bundle": r"\bmonai(?:[\s\-_]*bundle)?\b",
    "medimageparse": r"\bmed[\s\-_]*image[\s\-_]*parse\b",
}
"""How users write the engines that ship ("MONAI", "threshold", "Med Image Parse")."""

# An engine the catalog gains later is still understood by its exact name.
ENGINE_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(_ENGINE_SPELLINGS.get(name, rf"\b{re.escape(name)}\b"), re.I) for name in engine_names()
}
"""The engines the planner knows by name (the segmentation catalog's), and how users write them."""

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
    "stored": ("stored", "saved", "archived", "existing", "recorded"),
    "last": ("last", "latest", "recent", "recently", "newest", "previously"),
    "prior": ("prior", "priors", "previous", "earlier", "older", "compare", "comparison", "longitudinal",
              "progression", "trend", "since", "baseline"),
    "audit": ("audit", "trail", "lineage", "provenance", "approver", "approved", "who", "chain"),
    "job": ("job", "jobs"),
    "failed": ("failed", "failure", "failures", "failing", "error", "errors", "broken"),
    "retry": ("retry", "reattempt"),
    "rerun": ("rerun", "redo"),
    "cancel": ("cancel", "abort", "withdraw"),
    "them": ("them", "those", "these", "both"),
    "unsupported": ("delete", "remove", "erase", "drop", "purge", "wipe", "destroy", "modify",
                    "edit", "change", "rename", "move", "merge", "anonymize", "anonymise", "deidentify",
                    "email", "mail", "print", "forward", "share", "discharge", "schedule", "book",
                    "prescribe", "copy", "overwrite", "replace", "retract", "revoke", "undo",
                    "shutdown", "kill", "restart", "reset", "install", "reboot"),
    "ref": ("it", "that", "this", "same"),
    "heart": ("heart", "cardiac"),
    "xray": ("xray", "xrays", "radiograph", "radiographs", "cxr", "cxrs", "dx"),
    "verify": ("verify", "confirm", "ensure", "really"),
    "organ": ("liver", "kidney", "spleen", "brain", "bone", "tumor", "tumour", "nodule", "lesion",
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

FILLER = frozenset(
    "please pls kindly can could would will you i me my we us our want wanna like need to the a an of for "
    "in on at into onto from with using via by and then also now just only its there is "
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


LEXICON = _build_lexicon()

# A negation ("don't store") holds until the clause ends: "don't store, just segment" segments.
CLAUSE_BREAKS = frozenset({",", ".", ";", "!", "?", "but", "then", "instead", "however", "just", "only"})


def lemma(word: str) -> str:
    """The lexicon form of an inflected word (storing -> store, studies -> study), or the word."""
    if word in LEXICON or word in FILLER:
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
    return next((c for c in candidates if c in LEXICON), word)


PHRASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.I), replacement)
    for pattern, replacement in (
        (r"n[’']t\b", " not"),
        (r"\brt[\s\-_]*struct(?:ure)?s?\b|\bstructure[\s\-]*sets?\b|\brtss\b", " rtstruct "),
        (r"\bsign[\s\-]*off\b", " signoff "),
        (r"\bx[\s\-]?rays?\b", " xray "),
        (r"\bcheck\s+(?:that|whether|if)\b", " verify "),
        (r"\bwork[\s\-]*list\b", " worklist "),
        (r"\bkick[\s\-]*off\b", " start "),
        (r"\bchanges?\s+(?:since|from|over|between)\b", " since "),
        (r"\bre[\s\-]*run\b|\brun\b(?=[^.;!?]*\bagain\b)", " rerun "),
        (r"\bre[\s\-]*try\b|\btry\b(?=[^.;!?]*\bagain\b)", " retry "),
        (r"\blook\s+up\b", " find "),
        (r"\btell\s+me\s+about\b", " describe "),
        (r"\bhow\s+many\b", " count "),
        (r"\bwhat\s+can\s+you\s+do\b|\bwhat\s+do\s+you\s+(?:understand|know)\b"
         r"|\bhow\s+(?:do|can|should)\s+i\s+use\b|\bhow\s+does\s+(?:this|it)\s+work\b", " help "),
    )
)
"""Phrases rewritten to one lexicon word before the words are read ("n't" -> "not")."""


def is_word(candidate: str) -> bool:
    """A grammar or filler word: never taken for an identifier ("study for ...")."""
    lowered = candidate.lower()
    return lowered in FILLER or lemma(lowered) in LEXICON

