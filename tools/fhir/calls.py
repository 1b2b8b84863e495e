"""The FHIR R4 interactions the agent uses, as data: the request each one sends, and how a
successful answer is read back into a `fhir.resources.R4B` model.

Read, search with paging (Bundle.link "next", "Paging" in https://hl7.org/fhir/R4/search.html),
conditional create (If-None-Exist), versioned update (If-Match, "Managing Resource
Contention"), transaction and capabilities (https://hl7.org/fhir/R4/http.html). Nothing here
sends; `tools.fhir.client.FhirClient` does, through the project's retry loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import httpx
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.domainresource import DomainResource
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from tools.fhir.errors import FhirError

FHIR_JSON = "application/fhir+json"

# The FHIR R4 `id` datatype; checking it also keeps untrusted ids from reshaping the URL path.
_ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DEFAULT_PORTS = {"http": 80, "https": 443}

SearchParams = Mapping[str, str | Sequence[str]]
R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class Call(Generic[R]):
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


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme))


def _next_link(bundle: Bundle) -> str | None:
    return next((link.url for link in bundle.link or [] if link.relation == "next" and link.url), None)


def search_matches(bundle: Bundle) -> list[Resource]:
    """Bundle entries with search.mode "match": _include'd resources and outcomes are not results."""
    return [
        entry.resource
        for entry in bundle.entry or []
        if entry.resource is not None and (entry.search is None or entry.search.mode in (None, "match"))
    ]


def _validation_summary(exc: ValidationError) -> str:
    # include_input=False: the offending values may be patient data.
    parts = [
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)[:3]
    ]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_answer(call: Call[R], response: httpx.Response) -> R:
    """The successful answer to ``call`` as its model; a FhirError when it is not one."""

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


class FhirCalls:
    """Builds each interaction's request against one server, refusing bad input before sending.

    Requests are built by the client's `httpx.Client`, so they carry its headers and timeout.
    """

    def __init__(self, http: httpx.Client, base_url: str, page_size: int) -> None:
        self._http = http
        self.base_url = base_url
        self.page_size = page_size
        self._base = httpx.URL(base_url + "/")

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

    def _on_server(self, url: str, call: Call[R]) -> httpx.URL:
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

    def read(self, resource_type: str, resource_id: str) -> Call[DomainResource]:
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
        return Call(request, model, "read", resource_type, resource_id)

    def search(self, resource_type: str, params: SearchParams | None, max_results: int | None) -> Call[Bundle]:
        _model_class(resource_type, "search")
        if max_results is not None and max_results < 1:
            raise ValueError(f"max_results must be at least 1, got {max_results}")
        count = min(self.page_size, max_results) if max_results is not None else self.page_size
        request = self._build("GET", f"{self.base_url}/{resource_type}", params=_query(params, count))
        return Call(request, Bundle, "search", resource_type)

    def next_page(self, call: Call[Bundle], bundle: Bundle, seen: set[str]) -> Call[Bundle] | None:
        """The GET of the page after ``bundle``, or None on the last page; ``seen`` guards loops."""
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
        return Call(self._build("GET", url), Bundle, "search", call.resource_type)

    def create(self, resource: R, if_none_exist: str | None) -> Call[R]:
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
        return Call(request, type(resource), "create", resource_type, precondition_hint=hint)

    def update(self, resource: R, if_match: str | None) -> Call[R]:
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
        return Call(request, type(resource), "update", resource_type, resource.id)

    def transaction(self, bundle: Bundle) -> Call[Bundle]:
        if bundle.type not in ("transaction", "batch"):
            raise FhirError(
                "transaction",
                resource_type="Bundle",
                detail=f"the Bundle's type is {bundle.type!r}",
                hint="Set Bundle.type to 'transaction' (all or nothing) or 'batch'.",
            )
        headers = {"Prefer": "return=representation"}
        request = self._build("POST", self.base_url, body=_body(bundle), headers=headers)
        return Call(request, Bundle, "transaction", "Bundle")

    def capabilities(self) -> Call[CapabilityStatement]:
        request = self._build("GET", f"{self.base_url}/metadata")
        return Call(request, CapabilityStatement, "capabilities", "CapabilityStatement")

    def follow_up(self, call: Call[R], response: httpx.Response) -> Call[R]:
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
        return Call(self._build("GET", url), call.model, call.action, call.resource_type, resource_id)
