"""Errors raised by the FHIR client, readable by a radiologist or an operator.

Each error names the resource, says what the server answered (its OperationOutcome issues,
FHIR R4 https://hl7.org/fhir/R4/operationoutcome.html) and what to do next. A server that
cannot be reached at all surfaces as `tools.http.retry.ServiceUnavailableError` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class FhirError(RuntimeError):
    """A FHIR interaction failed; `status` is None when no HTTP answer is to blame."""

    default_hint = "Check the FHIR server's log for details and try again."

    def __init__(
        self,
        action: str,
        *,
        status: int | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        issues: list[str] | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.action = action
        self.status = status
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.issues = list(issues or [])
        self.detail = detail
        self.hint = hint or self.default_hint
        super().__init__(self._message())

    @property
    def target(self) -> str:
        """`Type/id`, `Type` or "the server": what the message talks about."""
        if self.resource_type and self.resource_id:
            return f"{self.resource_type}/{self.resource_id}"
        return self.resource_type or "the server"

    def _message(self) -> str:
        answer = f" (HTTP {self.status})" if self.status is not None else ""
        said = [self.detail] if self.detail else []
        said += self.issues
        what = "; ".join(said) if said else "no explanation given"
        return f"FHIR {self.action} of {self.target} failed{answer}: {what}. {self.hint}"


class FhirNotFoundError(FhirError):
    """404 Not Found or 410 Gone."""

    default_hint = (
        "Check the resource type and id; the resource may never have existed on this "
        "server or may have been deleted."
    )


class FhirConflictError(FhirError):
    """409 Conflict or 412 Precondition Failed (a stale If-Match version, FHIR R4 http.html
    "Managing Resource Contention"; or, on a conditional create, several matches)."""

    default_hint = (
        "Someone else changed the resource since it was read: read it again, re-apply "
        "the change to the new version and retry."
    )


class FhirValidationError(FhirError):
    """400 Bad Request or 422 Unprocessable Entity: the server rejected what was sent."""

    default_hint = (
        "The server rejected the request as invalid: fix what the issues above name and "
        "send it again."
    )


def _issue_text(issue: Mapping[str, Any]) -> str:
    severity = issue.get("severity") or "error"
    code = issue.get("code") or "unknown"
    details = issue.get("details")
    details_text = details.get("text") if isinstance(details, Mapping) else None
    texts = [t for t in (issue.get("diagnostics"), details_text) if isinstance(t, str) and t]
    text = " — ".join(dict.fromkeys(texts)) or "no diagnostics"
    expression = issue.get("expression") or issue.get("location")
    where = ""
    if isinstance(expression, list) and expression:
        where = f" (at {', '.join(str(e) for e in expression)})"
    return f"{severity}/{code}: {text}{where}"


def operation_outcome_issues(body: object) -> list[str]:
    """One line per OperationOutcome.issue: severity/code: diagnostics or details.text (at expression)."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return []
    issues = body.get("issue")
    if not isinstance(issues, list):
        return []
    return [_issue_text(issue) for issue in issues if isinstance(issue, Mapping)]


def _response_issues(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    return operation_outcome_issues(body)


_ERROR_CLASSES: dict[int, type[FhirError]] = {
    400: FhirValidationError,
    404: FhirNotFoundError,
    409: FhirConflictError,
    410: FhirNotFoundError,
    412: FhirConflictError,
    422: FhirValidationError,
}

_STATUS_HINTS: dict[int, str] = {
    401: "The FHIR server needs credentials: set IMAGING_AGENT_FHIR_AUTH and its username/password or token.",
    403: "The FHIR credentials in use may not do this: ask the server's administrator for the right scope.",
    410: "The resource was deleted on the server; search for its replacement instead.",
}


def error_from_response(
    response: httpx.Response,
    *,
    action: str,
    resource_type: str | None,
    resource_id: str | None,
    hint: str | None = None,
) -> FhirError:
    """The FhirError subclass for an HTTP error answer, with the OperationOutcome's issues."""
    status = response.status_code
    cls = _ERROR_CLASSES.get(status, FhirError)
    issues = _response_issues(response)
    return cls(
        action,
        status=status,
        resource_type=resource_type,
        resource_id=resource_id,
        issues=issues,
        detail=None if issues else response.reason_phrase or None,
        hint=hint or _STATUS_HINTS.get(status),
    )
