"""Record text shown literally: in the terminal (rich markup) and in the app (Markdown and HTML).

DICOM and FHIR free text (descriptions, names, reasons, error details) is data, never formatting
(docs/architecture.md, "Untrusted text"). A StudyDescription "[bold red]APPROVED[/bold red]" must
print as those characters, "CT [/x] CHEST" must not stop a card with a markup error, and
"**APPROVED**", "<img ...>" or a link must reach the reviewer's screen as typed. Everything that
prints or renders such text goes through here.
"""

from __future__ import annotations

import re

from rich.markup import escape
from rich.text import Text

# Characters that start Markdown or HTML anywhere in a line: emphasis, code, links and images,
# raw HTML and autolinks (both angle brackets, so no tag survives even as a substring), table
# cells, strikethrough, Gradio's LaTeX, and the escape itself.
_INLINE = re.compile(r"([\\`*_\[\]<>|~$])")
# Only meaningful at the start of a line (where a value may land): headings, list items, thematic
# breaks and setext underlines; the one group that matched is the character to escape.
_LINE_START = re.compile(r"^\s*(?:(#)#{0,5}(?=\s|$)|([+-])(?=\s|$)|\d{1,9}([.)])(?=\s|$)|([=-])[=-]*\s*$)")
# GFM turns bare URLs, www. names and e-mail addresses into links; an entity like &lt; into "<".
_AUTOLINK = re.compile(r"(?i)(?<=[a-z])(:)(?=//)|(?<=www)(\.)|(@)|(&)(?=#?[a-z0-9]+;)")


def markup_literal(value: object) -> str:
    """For an f-string that rich reads as markup: the value's brackets are printed, not applied."""
    return escape(str(value))


def terminal_text(value: object, default: str = "-", style: str = "") -> Text:
    """A table cell or line rich prints as is (a Text is never parsed for markup)."""
    return Text(default if value is None or str(value) == "" else str(value), style=style)


def markdown_literal(value: object, default: str = "-") -> str:
    """The value as one line of Markdown that renders exactly as its characters, inside a table too."""
    text = " ".join(str(value if value is not None else "").split()) or default
    text = _INLINE.sub(r"\\\1", text)
    text = _AUTOLINK.sub(lambda m: "\\" + next(g for g in m.groups() if g), text)
    match = _LINE_START.match(text)
    if match:
        group = next(i for i in range(1, 5) if match.group(i) is not None)
        text = text[: match.start(group)] + "\\" + text[match.start(group) :]
    return text


def markdown_paragraphs(text: str) -> str:
    """Several lines shown as typed: each line literal, line breaks kept, blank lines kept as paragraphs.

    For the assistant's replies in the web chat: a model that read an injected StudyDescription can
    repeat it, and a Markdown image there would make the reviewer's browser fetch an attacker's URL."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(
        "  \n".join(markdown_literal(line) for line in paragraph.splitlines() if line.strip()) for paragraph in paragraphs
    )


def markdown_code_block(text: str, info: str = "text") -> str:
    """A fenced block holding `text` verbatim: the fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def markdown_code(value: object) -> str:
    """An inline code span holding the value verbatim (UIDs, hashes): backticks inside cannot close it.

    Pipes are escaped as GFM tables need; tables read `\\|` before the code span does."""
    text = " ".join(str(value if value is not None else "-").split()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
