"""Markdown as a reader sees it: the HTML a CommonMark + GFM-tables renderer makes of it, and its text."""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

_RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def rendered_html(markdown: str) -> str:
    return _RENDERER.render(markdown)


def rendered_text(markdown: str) -> str:
    """The characters on screen: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", rendered_html(markdown)))
