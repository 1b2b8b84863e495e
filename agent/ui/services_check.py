"""The header's status line: does the PACS answer, does the FHIR server answer."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from agent.parts import fhir_client, pacs_client
from agent.settings import Settings
from agent.ui.markdown import cell


class ServiceCheck(BaseModel):
    name: str
    url: str
    ok: bool
    detail: str


def check_services(settings: Settings) -> list[ServiceCheck]:
    """One quick try per service (no retries): a status line must not hang on a dead server."""
    quick = settings.model_copy(update={"http_retry_attempts": 1, "http_timeout_s": min(settings.http_timeout_s, 5.0)})
    checks: list[ServiceCheck] = []
    try:
        with pacs_client(quick) as pacs:
            ok = pacs.ping()
        detail = "DICOMweb answers" if ok else "no DICOMweb answer"
    except Exception as exc:  # any failure is a status to show, not a crash of the page
        ok, detail = False, str(exc)
    checks.append(ServiceCheck(name="PACS", url=settings.dicomweb_url, ok=ok, detail=detail))
    try:
        with fhir_client(quick) as fhir:
            capabilities = fhir.capabilities()
        ok, detail = True, f"FHIR {capabilities.fhirVersion or 'server'} answers"
    except Exception as exc:
        ok, detail = False, str(exc)
    checks.append(ServiceCheck(name="FHIR", url=settings.fhir_url, ok=ok, detail=detail))
    return checks


def services_markdown(checks: Sequence[ServiceCheck]) -> str:
    parts = []
    for check in checks:
        if check.ok:
            parts.append(f"✓ **{check.name}** up ({check.url})")
        else:
            hint = "" if "imaging-agent services" in check.detail else (
                " Start the local services with `imaging-agent services up`, or fix the URL in `.env`."
            )
            parts.append(f"✗ **{check.name}** not reachable at {check.url}: {cell(check.detail)}{hint}")
    return " &nbsp;·&nbsp; ".join(parts)
