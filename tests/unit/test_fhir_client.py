"""FhirClient against httpx.MockTransport: headers, paging, errors, retries."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from pydantic import SecretStr

from agent.parts import fhir_client
from agent.settings import Settings
from tools.fhir.client import FhirClient
from tools.fhir.errors import FhirConflictError, FhirError, FhirNotFoundError, FhirValidationError
from tools.http import HttpAuth, RetryPolicy
from tools.http.retry import ServiceUnavailableError

pytestmark = pytest.mark.unit

BASE = "http://fhir.test:8090/fhir"
NO_WAIT = RetryPolicy(attempts=3, backoff_s=0, max_backoff_s=0, timeout_s=5)

Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """A MockTransport handler that records every request it is sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def fhir_json(
    status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(
        status, content=content, headers={"Content-Type": "application/fhir+json", **(headers or {})}
    )


def outcome(code: str, diagnostics: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics, **extra}],
    }


def patient(pid: str, version: str = "1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "meta": {"versionId": version}}


def searchset(ids: list[str], next_url: str | None) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{BASE}/Patient"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": patient(i), "search": {"mode": "match"}} for i in ids],
    }


def call(
    server: Server,
    method: str,
    *args: Any,
    auth: HttpAuth | None = None,
    retry: RetryPolicy = NO_WAIT,
    page_size: int = 3,
    **kwargs: Any,
) -> Any:
    """Run one client method against `server`."""
    transport = httpx.MockTransport(server)
    with FhirClient(BASE, transport=transport, auth=auth or HttpAuth(), retry=retry, page_size=page_size) as client:
        return getattr(client, method)(*args, **kwargs)


# --- search and paging ----------------------------------------------------------------------


def test_search_follows_next_links_across_three_pages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        offset = request.url.params.get("_offset")
        if offset is None:
            return fhir_json(200, searchset(["p1", "p2", "p3"], f"{BASE}/Patient?_count=3&_offset=3"))
        if offset == "3":
            # A relative next link is resolved against the base URL.
            return fhir_json(200, searchset(["p4", "p5", "p6"], "Patient?_count=3&_offset=6"))
        return fhir_json(200, searchset(["p7"], None))

    server = Server(handler)
    found = call(server, "search", "Patient", {"identifier": "urn:test|", "_tag": ["a", "b"]})

    assert [r.id for r in found] == [f"p{i}" for i in range(1, 8)]
    assert all(isinstance(r, Patient) for r in found)
    assert len(server.requests) == 3
    first = server.requests[0]
    assert first.url.path == "/fhir/Patient"
    assert first.url.params.get_list("_tag") == ["a", "b"]
    assert first.url.params["identifier"] == "urn:test|"
    assert first.url.params["_count"] == "3"
    assert first.headers["Accept"] == "application/fhir+json"
    assert str(server.requests[2].url) == f"{BASE}/Patient?_count=3&_offset=6"


def test_search_stops_at_max_results() -> None:
    server = Server(lambda r: fhir_json(200, searchset(["a", "b", "c"], f"{BASE}/Patient?page=2")))
    found = call(server, "search", "Patient", max_results=2, page_size=10)
    assert [r.id for r in found] == ["a", "b"]
    assert len(server.requests) == 1
    assert server.requests[0].url.params["_count"] == "2"


def test_search_skips_included_resources_and_outcomes() -> None:
    body = searchset(["p1"], None)
    body["entry"] += [
        {"resource": {"resourceType": "Organization", "id": "o1"}, "search": {"mode": "include"}},
        {"resource": outcome("informational", "slow query"), "search": {"mode": "outcome"}},
    ]
    found = call(Server(lambda r: fhir_json(200, body)), "search", "Patient")
    assert [(type(r).__name__, r.id) for r in found] == [("Patient", "p1")]


def test_search_refuses_a_next_link_on_another_server() -> None:
    server = Server(lambda r: fhir_json(200, searchset(["p1"], "http://elsewhere.test/fhir/Patient?page=2")))
    with pytest.raises(FhirError, match="elsewhere.test") as info:
        call(server, "search", "Patient")
    assert "Refusing" in str(info.value)
    assert len(server.requests) == 1


def test_search_bundle_returns_the_first_page() -> None:
    server = Server(lambda r: fhir_json(200, searchset(["p1", "p2", "p3"], f"{BASE}/Patient?page=2")))
    bundle = call(server, "search_bundle", "Patient", {"name": "x"})
    assert isinstance(bundle, Bundle)
    assert len(bundle.entry) == 3
    assert len(server.requests) == 1


# --- create and update ----------------------------------------------------------------------


def test_conditional_create_sends_if_none_exist_and_returns_the_existing_match() -> None:
    server = Server(lambda r: fhir_json(200, patient("existing", "4")))
    condition = "identifier=urn:dicom:uid|urn:oid:1.2.3"
    new = Patient(identifier=[{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}])

    created = call(server, "create", new, if_none_exist=condition)

    assert isinstance(created, Patient)
    assert (created.id, created.meta.versionId) == ("existing", "4")
    (request,) = server.requests
    assert request.method == "POST"
    assert request.url == httpx.URL(f"{BASE}/Patient")
    assert request.headers["If-None-Exist"] == condition
    assert request.headers["Prefer"] == "return=representation"
    assert request.headers["Content-Type"] == "application/fhir+json"
    sent = json.loads(request.content)
    assert sent == {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
    }


def test_create_with_empty_body_reads_the_location() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return fhir_json(201, None, {"Location": f"{BASE}/Patient/new1/_history/1"})
        return fhir_json(200, patient("new1"))

    server = Server(handler)
    created = call(server, "create", Patient(active=True))
    assert created.id == "new1"
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("POST", "/fhir/Patient"),
        ("GET", "/fhir/Patient/new1/_history/1"),
    ]


def test_update_with_empty_body_and_no_location_reads_the_resource() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return fhir_json(200, None)
        return fhir_json(200, patient("p1", "2"))

    server = Server(handler)
    updated = call(server, "update", Patient.model_validate(patient("p1")), if_match="1")
    assert updated.meta.versionId == "2"
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("PUT", "/fhir/Patient/p1"),
        ("GET", "/fhir/Patient/p1"),
    ]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({}, "neither a body nor a Location"), ({"Location": "http://evil.test/Patient/x"}, "evil.test")],
)
def test_create_with_empty_body_and_no_usable_location_is_an_error(
    headers: dict[str, str], expected: str
) -> None:
    server = Server(lambda r: fhir_json(201, None, headers))
    with pytest.raises(FhirError, match=expected):
        call(server, "create", Patient(active=True))
    assert len(server.requests) == 1


def test_conditional_create_with_several_matches_says_so() -> None:
    server = Server(lambda r: fhir_json(412, outcome("duplicate", "2 matches")))
    with pytest.raises(FhirConflictError, match="More than one Patient matches 'identifier=urn:x|1'"):
        call(server, "create", Patient(active=True), if_none_exist="identifier=urn:x|1")


def test_update_sends_weak_etag_in_if_match() -> None:
    server = Server(lambda r: fhir_json(200, patient("p1", "4")))
    updated = call(server, "update", Patient.model_validate(patient("p1", "3")), if_match="3")
    assert updated.meta.versionId == "4"
    (request,) = server.requests
    assert (request.method, request.url.path) == ("PUT", "/fhir/Patient/p1")
    assert request.headers["If-Match"] == 'W/"3"'


def test_stale_if_match_raises_a_readable_conflict() -> None:
    conflict = outcome("conflict", 'Version conflict: If-Match W/"3" but current is 5')
    server = Server(lambda r: fhir_json(412, conflict))
    with pytest.raises(FhirConflictError) as info:
        call(server, "update", Patient.model_validate(patient("p1", "3")), if_match="3")
    error = info.value
    assert (error.status, error.resource_type, error.resource_id) == (412, "Patient", "p1")
    message = str(error)
    assert "Patient/p1" in message
    assert "current is 5" in message
    assert "Someone else changed the resource" in message
    assert "read it again" in message


def test_update_without_id_is_refused_before_sending() -> None:
    server = Server(lambda r: fhir_json(200, patient("x")))
    with pytest.raises(FhirError, match="has no id"):
        call(server, "update", Patient(active=True))
    assert server.requests == []


# --- errors -----------------------------------------------------------------------------------


def test_operation_outcome_issues_end_up_in_the_error() -> None:
    body = outcome(
        "invariant",
        "Observation.status is required",
        details={"text": "missing status"},
        expression=["Observation.status"],
    )
    server = Server(lambda r: fhir_json(422, body))
    with pytest.raises(FhirValidationError) as info:
        call(server, "create", Patient(active=True))
    assert info.value.issues == [
        "error/invariant: Observation.status is required — missing status (at Observation.status)"
    ]
    assert "Observation.status is required" in str(info.value)
    assert "FHIR create of Patient failed (HTTP 422)" in str(info.value)


def test_bad_request_is_not_retried() -> None:
    server = Server(lambda r: fhir_json(400, outcome("invalid", "unknown element 'foo'")))
    with pytest.raises(FhirValidationError, match="unknown element"):
        call(server, "create", Patient(active=True))
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [404, 410])
def test_missing_resource_raises_not_found(status: int) -> None:
    server = Server(lambda r: fhir_json(status, outcome("not-found", "Patient/gone not found")))
    with pytest.raises(FhirNotFoundError, match="Patient/gone") as info:
        call(server, "read", "Patient", "gone")
    assert info.value.status == status


def test_unsafe_id_is_refused_before_sending() -> None:
    server = Server(lambda r: fhir_json(200, patient("x")))
    with pytest.raises(FhirError, match="not a FHIR id"):
        call(server, "read", "Patient", "../metadata")
    with pytest.raises(FhirError, match="not an R4 resource type"):
        call(server, "read", "Nonsense", "x")
    assert server.requests == []


def test_answer_of_the_wrong_type_is_an_error() -> None:
    server = Server(lambda r: fhir_json(200, {"resourceType": "Organization", "id": "x"}))
    with pytest.raises(FhirError, match="expected a Patient but the server sent a Organization"):
        call(server, "read", "Patient", "x")


# --- retries ----------------------------------------------------------------------------------


def test_service_unavailable_is_retried_then_succeeds() -> None:
    answers = iter([fhir_json(503, None), fhir_json(200, patient("p1"))])
    server = Server(lambda r: next(answers))
    assert call(server, "read", "Patient", "p1").id == "p1"
    assert len(server.requests) == 2


def test_persistent_503_raises_service_unavailable() -> None:
    server = Server(lambda r: fhir_json(503, outcome("transient", "database locked")))
    with pytest.raises(ServiceUnavailableError, match="database locked") as info:
        call(server, "read", "Patient", "p1")
    assert info.value.service == "FHIR server"
    assert len(server.requests) == NO_WAIT.attempts


def test_too_many_requests_honours_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("tools.http.retry.time.sleep", waits.append)
    answers = iter([fhir_json(429, None, {"Retry-After": "2"}), fhir_json(200, patient("p1"))])
    server = Server(lambda r: next(answers))
    policy = RetryPolicy(attempts=3, backoff_s=0.001, max_backoff_s=5, timeout_s=5)

    assert call(server, "read", "Patient", "p1", retry=policy).id == "p1"
    assert waits == [2.0]
    assert len(server.requests) == 2


def test_connection_error_raises_service_unavailable_after_every_attempt() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server = Server(refuse)
    with pytest.raises(ServiceUnavailableError) as info:
        call(server, "capabilities")
    assert info.value.service == "FHIR server"
    assert info.value.attempts == 3
    assert "connection refused" in str(info.value)
    assert len(server.requests) == 3


# --- auth, transaction, settings ------------------------------------------------------------


def test_basic_auth_header() -> None:
    statement_json = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2024-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
    }
    server = Server(lambda r: fhir_json(200, statement_json))
    auth = HttpAuth(kind="basic", username="ris", password=SecretStr("s3cret"))
    statement = call(server, "capabilities", auth=auth)
    assert statement.fhirVersion == "4.0.1"
    expected = "Basic " + base64.b64encode(b"ris:s3cret").decode()
    assert server.requests[0].headers["Authorization"] == expected
    assert server.requests[0].url.path == "/fhir/metadata"


def test_bearer_auth_header() -> None:
    server = Server(lambda r: fhir_json(200, patient("p1")))
    call(server, "read", "Patient", "p1", auth=HttpAuth(kind="bearer", token=SecretStr("tok-123")))
    assert server.requests[0].headers["Authorization"] == "Bearer tok-123"


def test_transaction_posts_the_bundle_to_the_base() -> None:
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "201 Created", "location": "Patient/p1/_history/1"}}],
    }
    server = Server(lambda r: fhir_json(200, response))
    entry = {
        "resource": {"resourceType": "Patient", "active": True},
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:x|1"},
    }
    bundle = Bundle(type="transaction", entry=[entry])
    result = call(server, "transaction", bundle)
    assert result.type == "transaction-response"
    (request,) = server.requests
    assert (request.method, str(request.url)) == ("POST", BASE)
    assert json.loads(request.content)["entry"][0]["request"]["ifNoneExist"] == "identifier=urn:x|1"


def test_a_searchset_is_not_sent_as_a_transaction() -> None:
    server = Server(lambda r: fhir_json(200, {}))
    with pytest.raises(FhirError, match="Bundle.type"):
        call(server, "transaction", Bundle(type="searchset"))
    assert server.requests == []


def test_parts_build_the_fhir_client_from_the_fhir_settings() -> None:
    """`agent.parts.fhir_client` is where settings become a client: URL, auth, paging, retry."""
    settings = Settings(
        fhir_url="http://ehr.test/r4/",
        fhir_auth="bearer",
        fhir_token=SecretStr("t"),
        fhir_page_size=7,
        http_retry_attempts=2,
        http_timeout_s=3.0,
    )
    with fhir_client(settings) as client:
        assert client.base_url == "http://ehr.test/r4"
        assert client.page_size == 7
        assert (client.retry.attempts, client.retry.timeout_s) == (2, 3.0)
        assert client._http.headers["Authorization"] == "Bearer t"
