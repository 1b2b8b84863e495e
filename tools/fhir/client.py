"""FHIR R4 REST client over httpx, sync (`FhirClient`) and async (`AsyncFhirClient`).

Implements the interactions the agent needs from FHIR R4 RESTful API
(https://hl7.org/fhir/R4/http.html): read, search with paging (Bundle.link "next", see
"Paging" in https://hl7.org/fhir/R4/search.html), conditional create (If-None-Exist),
versioned update (If-Match, "Managing Resource Contention"), transaction and the
capabilities interaction. Bodies are parsed into `fhir.resources.R4B` models.

Every request goes through `tools.http.retry` with the configured `RetryPolicy`; an
unreachable server raises `ServiceUnavailableError`, an error answer a `FhirError`.
Logs carry method, resource type, id, status and elapsed time, never bodies or query
strings (search values can be patient names).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

import httpx
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.domainresource import DomainResource
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from tools.fhir.errors import FhirError, error_from_response, operation_outcome_issues
from tools.http.config import HttpAuth, RetryPolicy
from tools.http.retry import ServiceUnavailableError, asend_with_retry, send_with_retry

log = logging.getLogger(__name__)

SERVICE = "FHIR server"
FHIR_JSON = "application/fhir+json"

# The FHIR R4 `id` datatype; checking it also keeps untrusted ids from reshaping the URL path.
_ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_UNAVAILABLE_STATUS = frozenset({429, 502, 503, 504})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_AUTH = HttpAuth()
_DEFAULT_RETRY = RetryPolicy()

SearchParams = Mapping[str, str | Sequence[str]]
R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class _Call(Generic[R]):
    """One HTTP request, the model its answer must parse into, and what error messages name."""

    request: httpx.Request
    model: type[R]
    action: str
    resource_type: str
    resource_id: str | None = None
    precondition_hint: str | None = None


def _model_class(resource_type: str, action: str) -> type[Resource]:
    try:
        cls = get_fhir_model_class(resource_type)
    except ValueError:
        cls = None
    if cls is None or not issubclass(cls, Resource):
        raise FhirError(
            action,
            resource_type=resource_type,
            detail=f"{resource_type!r} is not an R4 resource type",
            hint="Use a type from https://hl7.org/fhir/R4/resourcelist.html, e.g. ImagingStudy.",
        )
    return cls


def _check_id(value: str, action: str, resource_type: str, what: str = "id") -> None:
    if not _ID_PATTERN.fullmatch(value):
        raise FhirError(
            action,
            resource_type=resource_type,
            detail=f"the {what} {value!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)",
            hint="Use the id exactly as the server returned it.",
        )


def _query(params: SearchParams | None, count: int) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = []
    for name, value in (params or {}).items():
        # A repeated parameter means AND in FHIR search; a comma inside one value means OR.
        values = [value] if isinstance(value, str) else list(value)
        query.extend((name, v) for v in values)
    if not any(name == "_count" for name, _ in query):
        query.append(("_count", str(count)))
    return query


def _body(resource: Resource) -> bytes:
    return resource.model_dump_json(exclude_none=True).encode("utf-8")


def _validation_summary(exc: ValidationError) -> str:
    # include_input=False: the offending values may be patient data.
    parts = [
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)[:3]
    ]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _parse(call: _Call[R], response: httpx.Response) -> R:
    def fail(detail: str, hint: str) -> FhirError:
        return FhirError(
            call.action,
            status=response.status_code,
            resource_type=call.resource_type,
            resource_id=call.resource_id,
            detail=detail,
            hint=hint,
        )

    try:
        data = response.json()
    except ValueError:
        raise fail(
            "the answer is not JSON",
            "Check that IMAGING_AGENT_FHIR_URL is a FHIR base URL and the server speaks "
            "application/fhir+json.",
        ) from None
    resource_type = data.get("resourceType") if isinstance(data, dict) else None
    if not isinstance(resource_type, str):
        raise fail("the answer has no resourceType", "Check that IMAGING_AGENT_FHIR_URL is a FHIR base URL.")
    expected = call.model.get_resource_type()
    if resource_type != expected:
        raise fail(
            f"expected a {expected} but the server sent a {resource_type}",
            "Check that IMAGING_AGENT_FHIR_URL is a FHIR R4 base URL.",
        )
    try:
        return call.model.model_validate(data)
    except ValidationError as exc:
        raise fail(
            f"the server's {resource_type} is not valid FHIR R4 ({_validation_summary(exc)})",
            "The server stores data this client cannot trust; report it to the server's administrator.",
        ) from None


def _search_matches(bundle: Bundle) -> list[Resource]:
    """Bundle entries with search.mode "match": _include'd resources and outcomes are not results."""
    return [
        entry.resource
        for entry in bundle.entry or []
        if entry.resource is not None and (entry.search is None or entry.search.mode in (None, "match"))
    ]


def _next_link(bundle: Bundle) -> str | None:
    return next((link.url for link in bundle.link or [] if link.relation == "next" and link.url), None)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme))


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


class _FhirCore:
    """Builds requests and interprets answers; the two clients only differ in how they send."""

    _http: httpx.Client | httpx.AsyncClient

    def __init__(self, base_url: str, *, auth: HttpAuth, retry: RetryPolicy, page_size: int) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.page_size = page_size
        self._base = httpx.URL(self.base_url + "/")
        self._headers = {"Accept": FHIR_JSON, **auth.headers()}
        basic = auth.basic()
        self._auth = httpx.BasicAuth(*basic) if basic else None


    # --- requests ---------------------------------------------------------------------------

    def _build(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        params: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        extra = dict(headers or {})
        if body is not None:
            extra["Content-Type"] = FHIR_JSON
        return self._http.build_request(method, url, params=params, content=body, headers=extra)

    def _on_server(self, url: str, call: _Call[R]) -> httpx.URL:
        """Resolve a server-given URL (next link, Location) and refuse any other origin."""
        resolved = self._base.join(url)
        if _origin(resolved) != _origin(self._base):
            raise FhirError(
                call.action,
                resource_type=call.resource_type,
                resource_id=call.resource_id,
                detail=f"the server pointed to {resolved.scheme}://{resolved.host}, not to {self._base.host}",
                hint="Refusing to send credentials to another server; "
                "check the FHIR server's base_url setting.",
            )
        return resolved

    def _read_call(self, resource_type: str, resource_id: str) -> _Call[DomainResource]:
        model = _model_class(resource_type, "read")
        if not issubclass(model, DomainResource):
            raise FhirError(
                "read",
                resource_type=resource_type,
                detail="read() returns DomainResources only",
                hint="Search for Bundles and other infrastructure resources instead.",
            )
        _check_id(resource_id, "read", resource_type)
        request = self._build("GET", f"{self.base_url}/{resource_type}/{resource_id}")
        return _Call(request, model, "read", resource_type, resource_id)

    def _search_call(
        self, resource_type: str, params: SearchParams | None, max_results: int | None
    ) -> _Call[Bundle]:
        _model_class(resource_type, "search")
        if max_results is not None and max_results < 1:
            raise ValueError(f"max_results must be at least 1, got {max_results}")
        count = min(self.page_size, max_results) if max_results is not None else self.page_size
        request = self._build("GET", f"{self.base_url}/{resource_type}", params=_query(params, count))
        return _Call(request, Bundle, "search", resource_type)

    def _next_call(self, call: _Call[Bundle], bundle: Bundle, seen: set[str]) -> _Call[Bundle] | None:
        link = _next_link(bundle)
        if link is None:
            return None
        url = self._on_server(link, call)
        if str(url) in seen:
            raise FhirError(
                "search",
                resource_type=call.resource_type,
                detail="the server's next link points back to a page already read",
                hint="The server's paging is broken; narrow the search so it fits one page.",
            )
        seen.add(str(url))
        return _Call(self._build("GET", url), Bundle, "search", call.resource_type)

    def _create_call(self, resource: R, if_none_exist: str | None) -> _Call[R]:
        resource_type = resource.get_resource_type()
        headers = {"Prefer": "return=representation"}
        hint = None
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
            hint = (
                f"More than one {resource_type} matches {if_none_exist!r}, which should identify one: "
                "remove the duplicates on the server, then retry."
            )
        url = f"{self.base_url}/{resource_type}"
        request = self._build("POST", url, body=_body(resource), headers=headers)
        return _Call(request, type(resource), "create", resource_type, precondition_hint=hint)

    def _update_call(self, resource: R, if_match: str | None) -> _Call[R]:
        resource_type = resource.get_resource_type()
        if not resource.id:
            raise FhirError(
                "update",
                resource_type=resource_type,
                detail="the resource has no id",
                hint="Read or create the resource first; an update needs the server's id.",
            )
        _check_id(resource.id, "update", resource_type)
        headers = {"Prefer": "return=representation"}
        if if_match is not None:
            _check_id(if_match, "update", resource_type, what="If-Match version")
            headers["If-Match"] = f'W/"{if_match}"'
        url = f"{self.base_url}/{resource_type}/{resource.id}"
        request = self._build("PUT", url, body=_body(resource), headers=headers)
        return _Call(request, type(resource), "update", resource_type, resource.id)

    def _transaction_call(self, bundle: Bundle) -> _Call[Bundle]:
        if bundle.type not in ("transaction", "batch"):
            raise FhirError(
                "transaction",
                resource_type="Bundle",
                detail=f"the Bundle's type is {bundle.type!r}",
                hint="Set Bundle.type to 'transaction' (all or nothing) or 'batch'.",
            )
        headers = {"Prefer": "return=representation"}
        request = self._build("POST", self.base_url, body=_body(bundle), headers=headers)
        return _Call(request, Bundle, "transaction", "Bundle")

    def _capabilities_call(self) -> _Call[CapabilityStatement]:
        request = self._build("GET", f"{self.base_url}/metadata")
        return _Call(request, CapabilityStatement, "capabilities", "CapabilityStatement")

    def _follow_up_call(self, call: _Call[R], response: httpx.Response) -> _Call[R]:
        """A GET of the written resource when the server ignored `Prefer: return=representation`
        and answered with no body (FHIR R4 http.html, create and update: Location header)."""
        location = response.headers.get("Location")
        if location:
            url = self._on_server(location, call)
            resource_id = url.path.rstrip("/").split("/_history/")[0].rsplit("/", 1)[-1]
        elif call.resource_id:
            # An update already names its resource, and servers may send no Location for it.
            url = httpx.URL(f"{self.base_url}/{call.resource_type}/{call.resource_id}")
            resource_id = call.resource_id
        else:
            raise FhirError(
                call.action,
                status=response.status_code,
                resource_type=call.resource_type,
                resource_id=call.resource_id,
                detail="the server answered with neither a body nor a Location header",
                hint="The write may have happened: search for the resource by its identifier "
                "before retrying.",
            )
        return _Call(self._build("GET", url), call.model, call.action, call.resource_type, resource_id)

    # --- answers -----------------------------------------------------------------------------

    def _log(self, call: _Call[R], response: httpx.Response, started: float) -> None:
        target = f"{call.resource_type}/{call.resource_id}" if call.resource_id else call.resource_type
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("FHIR %s %s -> %d in %.0f ms", call.request.method, target, response.status_code, elapsed_ms)

    def _check(self, call: _Call[R], response: httpx.Response) -> None:
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

    def _result(self, call: _Call[R], response: httpx.Response) -> R:
        self._check(call, response)
        return _parse(call, response)


class FhirClient(_FhirCore):
    """Synchronous FHIR R4 client; use as a context manager or call close()."""

    _http: httpx.Client

    def __init__(
        self,
        base_url: str,
        *,
        auth: HttpAuth = _NO_AUTH,
        retry: RetryPolicy = _DEFAULT_RETRY,
        page_size: int = 50,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, auth=auth, retry=retry, page_size=page_size)
        self._http = httpx.Client(
            headers=self._headers, auth=self._auth, timeout=retry.timeout_s, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[R]) -> httpx.Response:
        started = time.perf_counter()
        response = send_with_retry(lambda: self._http.send(call.request), self.retry, SERVICE, self.base_url)
        self._log(call, response, started)
        return response

    def _written(self, call: _Call[R]) -> R:
        response = self._send(call)
        self._check(call, response)
        if response.content:
            return _parse(call, response)
        follow_up = self._follow_up_call(call, response)
        return self._result(follow_up, self._send(follow_up))

    def read(self, resource_type: str, id: str) -> DomainResource:
        """GET [base]/[type]/[id]; the version is in `resource.meta.versionId`."""
        call = self._read_call(resource_type, id)
        return self._result(call, self._send(call))

    def search_bundle(
        self, resource_type: str, params: SearchParams | None = None, *, max_results: int | None = None
    ) -> Bundle:
        """The first page of GET [base]/[type]?params, as the server's searchset Bundle."""
        call = self._search_call(resource_type, params, max_results)
        return self._result(call, self._send(call))

    def search(
        self, resource_type: str, params: SearchParams | None = None, *, max_results: int | None = None
    ) -> list[Resource]:
        """Every match of GET [base]/[type]?params, following the next links, at most max_results."""
        call: _Call[Bundle] | None = self._search_call(resource_type, params, max_results)
        seen: set[str] = set()
        found: list[Resource] = []
        while call is not None and (max_results is None or len(found) < max_results):
            bundle = self._result(call, self._send(call))
            found.extend(_search_matches(bundle))
            call = self._next_call(call, bundle, seen)
        return found[:max_results]

    def create(self, resource: R, *, if_none_exist: str | None = None) -> R:
        """POST [base]/[type]; with if_none_exist (e.g. "identifier=urn:dicom:uid|urn:oid:1.2.3")
        an existing match is returned (200) instead of creating a duplicate (201)."""
        return self._written(self._create_call(resource, if_none_exist))

    def update(self, resource: R, *, if_match: str | None = None) -> R:
        """PUT [base]/[type]/[id]; if_match is the versionId read earlier (sent as W/"<v>")."""
        return self._written(self._update_call(resource, if_match))

    def transaction(self, bundle: Bundle) -> Bundle:
        """POST [base] with a transaction (or batch) Bundle; returns the response Bundle."""
        call = self._transaction_call(bundle)
        return self._result(call, self._send(call))

    def capabilities(self) -> CapabilityStatement:
        """GET [base]/metadata; a cheap health check of the server."""
        call = self._capabilities_call()
        return self._result(call, self._send(call))


class AsyncFhirClient(_FhirCore):
    """The asyncio twin of `FhirClient`: the same methods, as coroutines."""

    _http: httpx.AsyncClient

    def __init__(
        self,
        base_url: str,
        *,
        auth: HttpAuth = _NO_AUTH,
        retry: RetryPolicy = _DEFAULT_RETRY,
        page_size: int = 50,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, auth=auth, retry=retry, page_size=page_size)
        self._http = httpx.AsyncClient(
            headers=self._headers, auth=self._auth, timeout=retry.timeout_s, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[R]) -> httpx.Response:
        started = time.perf_counter()
        response = await asend_with_retry(
            lambda: self._http.send(call.request), self.retry, SERVICE, self.base_url
        )
        self._log(call, response, started)
        return response

    async def _written(self, call: _Call[R]) -> R:
        response = await self._send(call)
        self._check(call, response)
        if response.content:
            return _parse(call, response)
        follow_up = self._follow_up_call(call, response)
        return self._result(follow_up, await self._send(follow_up))

    async def read(self, resource_type: str, id: str) -> DomainResource:
        """GET [base]/[type]/[id]; the version is in `resource.meta.versionId`."""
        call = self._read_call(resource_type, id)
        return self._result(call, await self._send(call))

    async def search_bundle(
        self, resource_type: str, params: SearchParams | None = None, *, max_results: int | None = None
    ) -> Bundle:
        """The first page of GET [base]/[type]?params, as the server's searchset Bundle."""
        call = self._search_call(resource_type, params, max_results)
        return self._result(call, await self._send(call))

    async def search(
        self, resource_type: str, params: SearchParams | None = None, *, max_results: int | None = None
    ) -> list[Resource]:
        """Every match of GET [base]/[type]?params, following the next links, at most max_results."""
        call: _Call[Bundle] | None = self._search_call(resource_type, params, max_results)
        seen: set[str] = set()
        found: list[Resource] = []
        while call is not None and (max_results is None or len(found) < max_results):
            bundle = self._result(call, await self._send(call))
            found.extend(_search_matches(bundle))
            call = self._next_call(call, bundle, seen)
        return found[:max_results]

    async def create(self, resource: R, *, if_none_exist: str | None = None) -> R:
        """POST [base]/[type]; with if_none_exist an existing match is returned instead of a duplicate."""
        return await self._written(self._create_call(resource, if_none_exist))

    async def update(self, resource: R, *, if_match: str | None = None) -> R:
        """PUT [base]/[type]/[id]; if_match is the versionId read earlier (sent as W/"<v>")."""
        return await self._written(self._update_call(resource, if_match))

    async def transaction(self, bundle: Bundle) -> Bundle:
        """POST [base] with a transaction (or batch) Bundle; returns the response Bundle."""
        call = self._transaction_call(bundle)
        return self._result(call, await self._send(call))

    async def capabilities(self) -> CapabilityStatement:
        """GET [base]/metadata; a cheap health check of the server."""
        call = self._capabilities_call()
        return self._result(call, await self._send(call))
