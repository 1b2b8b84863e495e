"""Values placed into FHIR search strings, escaped so that they stay one value.

In a FHIR R4 search a comma separates alternatives (OR), a pipe separates a token's system from
its code, and `$` separates the parts of a composite; a value that holds one of them must escape
it with a backslash, and the backslash itself ("Escaping Search Parameters",
https://hl7.org/fhir/R4/search.html#escaping). Unescaped, an engine name such as
`x,urn:imaging-agent:task|abc` widens a Task search to an unrelated Task. Every search and
conditional create built from a value (a UID, a patient identifier, a name from the planner)
builds it here; search strings typed by an operator (a work-list query) are FHIR syntax and pass
as they are.
"""

from __future__ import annotations

from urllib.parse import quote

_SPECIAL = ("\\", ",", "|", "$")  # the backslash first, so the escapes added after stay single
# Kept as they are in a conditional-create query: the FHIR separators and escapes, and URI characters.
_QUERY_SAFE = ":/|\\,$.-_~@"


def escape_value(value: str) -> str:
    """One literal search value: its commas, pipes, dollars and backslashes escaped."""
    for char in _SPECIAL:
        value = value.replace(char, "\\" + char)
    return value


def token(system: str | None, code: str) -> str:
    """A token search value `system|code` (system None: the code in any system)."""
    return escape_value(code) if system is None else f"{escape_value(system)}|{escape_value(code)}"


def condition(name: str, value: str) -> str:
    """A one-parameter search string for If-None-Exist / `ifNoneExist` ("identifier=system|code").

    The server reads it as a URL query, so `&`, `=`, `#`, `+` and `%` in `value` are
    percent-encoded; the FHIR separators stay readable. `value` is a search value already (from
    `token` or `escape_value`)."""
    return f"{name}={quote(value, safe=_QUERY_SAFE)}"
