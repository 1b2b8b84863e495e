"""FHIR R4 REST client over httpx (https://hl7.org/fhir/R4/http.html).

`tools.fhir.calls` builds each interaction's request and reads its answer into a
`fhir.resources.R4B` model; this client sends them. Every request goes through
`tools.http.retry` with the configured `RetryPolicy`; an unreachable server raises
`ServiceUnavailableError`, an error answer a `FhirError`. Logs carry method, resource type,
id, status and elapsed time, never bodies or query strings (search values can be patient names).
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Self

import httpx
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.domainresource import DomainResource
from fhir.resources.R4B.resource import Resource

from tools.fhir.calls import FHIR_JSON, Call, FhirCalls, R, SearchParams, parse_answer, search_matches
from tools.fhir.errors import FhirError, error_from_response, operation_outcome_issues
from tools.http.config import HttpAuth, RetryPolicy
from tools.http.retry import ServiceUnavailableError, send_with_retry

log = logging.getLogger(__name__)

SERVICE = "FHIR server"

# 500 is retried too, but one left after every retry is the server's error, not an outage.
_UNAVAILABLE_STATUS = frozenset({429, 502, 503, 504})
_NO_AUTH = HttpAuth()
_DEFAULT_RETRY = RetryPolicy()


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


class FhirClient:
    """Synchronous FHIR R4 client; use as a context manager or call close()."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: HttpAuth = _NO_AUTH,
        retry: RetryPolicy = _DEFAULT_RETRY,
        page_size: int = 50,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.page_size = page_size
        basic = auth.basic()
        self._http = httpx.Client(
            headers={"Accept": FHIR_JSON, **auth.headers()},
            auth=httpx.BasicAuth(*basic) if basic else None,
            timeout=retry.timeout_s,
            transport=transport,
        )
        self._calls = FhirCalls(self._http, self.base_url, page_size)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- sending and checking -------------------------------------------------------------------

    def _send(self, call: Call[R]) -> httpx.Response:
        started = time.perf_counter()
        response = send_with_retry(lambda: self._http.send(call.request), self.retry, SERVICE, self.base_url)
        target = f"{call.resource_type}/{call.resource_id}" if call.resource_id else call.resource_type
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("FHIR %s %s -> %d in %.0f ms", call.request.method, target, response.status_code, elapsed_ms)
        return response

    def _check(self, call: Call[R], response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in _UNAVAILABLE_STATUS:
            # tools.http.retry hands back the last retryable answer; it still means "down".
            issues = operation_outcome_issues(_json_or_none(response))
            detail = "; ".join([f"HTTP {status}", *issues])
            raise ServiceUnavailableError(SERVICE, self.base_url, detail, self.retry.attempts)
        raise error_from_response(
            response,
            action=call.action,
            resource_type=call.resource_type,
            resource_id=call.resource_id,
            hint=call.precondition_hint if status == 412 else None,
        )

    def _result(self, call: Call[R]) -> R:
        response = self._send(call)
        self._check(call, response)
        return parse_answer(call, response)

    def _written(self, call: Call[R]) -> R:
        response = self._send(call)
        self._check(call, response)
        if response.content:
            return parse_answer(call, response)
        return self._result(self._calls.follow_up(call, response))

    # --- the interactions ---------------------------------------------------------------------

    def read(self, resource_type: str, id: str) -> DomainResource:
        """GET [base]/[type]/[id]; the version is in `resource.meta.versionId`.

        The answer must be the resource asked for: a server (or a proxy in front of it) that answers
        with another record would otherwise put one patient's data in another's chart.
        """
        resource = self._result(self._calls.read(resource_type, id))
        if resource.get_resource_type() != resource_type or resource.id != id:
            raise FhirError(
                "read",
                resource_type=resource_type,
                resource_id=id,
                detail=f"the server answered with {resource.get_resource_type()}/{resource.id} instead",
                hint="Check the FHIR server (and any proxy in front of it); nothing was read from this answer.",
            )
        return resource

    def search_bundle(
        self, resource_type: str, params: SearchParams | None = None, *, max_results: int | None = None
    ) -> Bundle:
        """The first page of GET [base]/[type]?params, as the server's searchset Bundle."""
        return self._result(self._calls.search(resource_type, params, max_results))

    def search(
        self, resource_type: str, params: SearchParams | None = None, *, max_results: int | None = None
    ) -> list[Resource]:
        """Every match of GET [base]/[type]?params, following the next links, at most max_results."""
        call: Call[Bundle] | None = self._calls.search(resource_type, params, max_results)
        seen: set[str] = set()
        found: list[Resource] = []
        while call is not None and (max_results is None or len(found) < max_results):
            bundle = self._result(call)
            found.extend(search_matches(bundle))
            call = self._calls.next_page(call, bundle, seen)
        return found[:max_results]

    def create(self, resource: R, *, if_none_exist: str | None = None) -> R:
        """POST [base]/[type]; with if_none_exist (e.g. "identifier=urn:dicom:uid|urn:oid:1.2.3")
        an existing match is returned (200) instead of creating a duplicate (201)."""
        return self._written(self._calls.create(resource, if_none_exist))

    def update(self, resource: R, *, if_match: str | None = None) -> R:
        """PUT [base]/[type]/[id]; if_match is the versionId read earlier (sent as W/"<v>")."""
        return self._written(self._calls.update(resource, if_match))

    def transaction(self, bundle: Bundle) -> Bundle:
        """POST [base] with a transaction (or batch) Bundle; returns the response Bundle."""
        return self._result(self._calls.transaction(bundle))

    def capabilities(self) -> CapabilityStatement:
        """GET [base]/metadata; a cheap health check of the server."""
        return self._result(self._calls.capabilities())
