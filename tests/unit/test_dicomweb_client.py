"""DicomwebClient against a scripted HTTP server on 127.0.0.1: retries, errors, QIDO
query strings and STOW-RS response parsing, with real sockets and no mocks."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tools.dicomweb.client import DicomwebClient
from tools.dicomweb.errors import PacsError
from tools.dicomweb.qido import qido_query
from tools.http import HttpAuth, RetryPolicy
from tools.http.retry import ServiceUnavailableError

pytestmark = pytest.mark.unit

FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=5.0, timeout_s=5.0)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: object, content_type: str | None = "application/dicom+json") -> Reply:
    headers = {"Content-Type": content_type} if content_type else {}
    return Reply(status, json.dumps(payload).encode(), headers)


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """Answers each request with the next scripted reply; the last one repeats."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.hits: list[Hit] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.hits.append(Hit(self.command, self.path, dict(self.headers), body))
                reply = server.replies[min(len(server.hits), len(server.replies)) - 1]
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dicom-web"

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.hits = []


@pytest.fixture(scope="module")
def module_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def server(module_server: ScriptedServer) -> ScriptedServer:
    module_server.script(Reply(500))
    return module_server


def study_json(uid: str, name: str) -> dict[str, object]:
    return {
        "0020000D": {"vr": "UI", "Value": [uid]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        "00100020": {"vr": "LO", "Value": ["P1"]},
        "00080020": {"vr": "DA", "Value": ["20240102"]},
        "00080050": {"vr": "SH", "Value": ["ACC1"]},
        "00081030": {"vr": "LO", "Value": ["CT chest"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        "00201206": {"vr": "IS", "Value": [2]},
        "00201208": {"vr": "IS", "Value": [10]},
    }


def ct_instance(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    return ds


def test_qido_retries_503_twice_then_parses_the_studies(server: ScriptedServer) -> None:
    server.script(Reply(503), Reply(503), json_reply(200, [study_json("1.2.3", "Doe^John")]))
    client = DicomwebClient(server.url, retry=FAST)

    studies = client.search_studies({"PatientID": "P1"})

    assert len(server.hits) == 3
    assert [s.model_dump() for s in studies] == [
        {
            "study_instance_uid": "1.2.3",
            "patient_id": "P1",
            "patient_name": "Doe^John",
            "study_date": dt.date(2024, 1, 2),
            "study_description": "CT chest",
            "accession_number": "ACC1",
            "modalities": ["CT", "SR"],
            "number_of_series": 2,
            "number_of_instances": 10,
        }
    ]
    assert "includefield=00081030" in server.hits[-1].path


def test_qido_gives_up_after_the_policy_attempts(server: ScriptedServer) -> None:
    server.script(Reply(503))
    client = DicomwebClient(server.url, retry=FAST)

    with pytest.raises(ServiceUnavailableError) as caught:
        client.search_studies()

    assert len(server.hits) == FAST.attempts
    assert caught.value.service == "PACS (DICOMweb)"
    assert caught.value.attempts == FAST.attempts
    assert "QIDO-RS study search" in str(caught.value)


def test_400_is_not_retried_and_names_the_request(server: ScriptedServer) -> None:
    server.script(json_reply(400, {"Details": "unknown attribute"}, "application/json"))
    client = DicomwebClient(server.url, retry=FAST)

    with pytest.raises(PacsError) as caught:
        client.search_series("1.2.3")

    assert len(server.hits) == 1
    assert caught.value.status == 400
    message = str(caught.value)
    assert "series search in study 1.2.3" in message
    assert "unknown attribute" in message
    assert "What to do" in message


def test_429_waits_for_retry_after(server: ScriptedServer) -> None:
    server.script(Reply(429, headers={"Retry-After": "1"}), json_reply(200, []))
    client = DicomwebClient(server.url, retry=FAST)

    started = time.monotonic()
    assert client.search_studies() == []
    waited = time.monotonic() - started

    assert len(server.hits) == 2
    assert waited >= 0.9, "Retry-After: 1 was not honoured"


def test_retry_after_is_capped_by_max_backoff(server: ScriptedServer) -> None:
    server.script(Reply(503, headers={"Retry-After": "30"}), json_reply(200, []))
    client = DicomwebClient(server.url, retry=RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.2))

    started = time.monotonic()
    client.search_studies()

    assert len(server.hits) == 2
    assert time.monotonic() - started < 10, "a 30 s Retry-After was not capped at max_backoff_s"


def test_retry_after_as_an_http_date_is_honoured(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("tools.http.retry.time.sleep", waits.append)
    when = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3), usegmt=True)
    server.script(Reply(503, headers={"Retry-After": when}), json_reply(200, []))
    client = DicomwebClient(server.url, retry=RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=5.0))

    client.search_studies()

    assert len(server.hits) == 2
    assert len(waits) == 1 and 1.0 < waits[0] <= 3.0, waits


def test_backoff_doubles_from_the_first_retry_like_http_retry(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DICOMweb session waits as tools.http.retry does: backoff_s, doubling, capped."""
    waits: list[float] = []
    monkeypatch.setattr("tools.http.retry.time.sleep", waits.append)
    server.script(*[Reply(503)] * 5, json_reply(200, []))
    client = DicomwebClient(server.url, retry=RetryPolicy(attempts=6, backoff_s=0.5, max_backoff_s=3.0))

    assert client.search_studies() == []
    assert len(server.hits) == 6
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_connection_refused_is_service_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = DicomwebClient(f"http://127.0.0.1:{port}/dicom-web", retry=FAST)

    with pytest.raises(ServiceUnavailableError) as caught:
        client.search_instances("1.2.3", "1.2.4")

    assert "connection refused or failed" in str(caught.value)
    assert client.ping() is False


def test_wildcard_name_search_sends_a_raw_star_and_filters_the_widened_match(server: ScriptedServer) -> None:
    server.script(json_reply(200, [study_json("1.2.3", "Doe^John"), study_json("1.2.4", "Doe John")]))
    client = DicomwebClient(server.url, retry=FAST)

    studies = client.search_studies({"PatientName": "Doe^J*"}, limit=5)

    path = server.hits[0].path
    assert "00100010=Doe?J*" in path
    assert "%2A" not in path and "%5E" not in path
    assert "includefield=00100010" in path and "limit=5" in path
    # "Doe John" matched the widened "Doe?J*" on the server but not the asked-for "Doe^J*".
    assert [s.study_instance_uid for s in studies] == ["1.2.3"]


def test_qido_query_rejects_unknown_keys_and_unsendable_values() -> None:
    with pytest.raises(ValueError, match="neither a DICOM keyword"):
        qido_query({"PatientNmae": "x"})
    with pytest.raises(ValueError, match="StudyDate"):
        qido_query({"StudyDate": "2024 01 02"})
    query, checks = qido_query({"StudyInstanceUID": "1.2.3,1.2.4", "StudyDate": "20240101-20240131"})
    assert query == "0020000D=1.2.3,1.2.4&00080020=20240101-20240131"
    assert checks == {}


def test_bearer_token_is_sent(server: ScriptedServer) -> None:
    server.script(json_reply(200, []))
    client = DicomwebClient(server.url, auth=HttpAuth(kind="bearer", token="s3cret"), retry=FAST)

    assert client.ping() is True
    assert server.hits[0].headers["Authorization"] == "Bearer s3cret"


def test_stow_failure_response_is_parsed_into_the_store_result(server: ScriptedServer) -> None:
    study = generate_uid()
    stored, refused, ignored = ct_instance(study), ct_instance(study), ct_instance(study)
    no_uid = ct_instance(study)
    del no_uid.SOPInstanceUID
    # Orthanc sends 409 with the DICOM JSON body and no Content-Type.
    body = {
        "00081199": {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [stored.SOPInstanceUID]}}],
        },
        "00081198": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [CTImageStorage]},
                    "00081155": {"vr": "UI", "Value": [refused.SOPInstanceUID]},
                    "00081197": {"vr": "US", "Value": [0xA900]},
                }
            ],
        },
    }
    server.script(Reply(503), json_reply(409, body, content_type=None))
    client = DicomwebClient(server.url, retry=FAST)

    result = client.store([stored, refused, ignored, no_uid])

    assert [h.method for h in server.hits] == ["POST", "POST"], "a 503 on STOW must be retried"
    assert result.stored == [stored.SOPInstanceUID]
    reasons = {f.sop_instance_uid: f for f in result.failed}
    assert reasons[refused.SOPInstanceUID].status == 0xA900
    assert "Data Set Does Not Match SOP Class" in reasons[refused.SOPInstanceUID].reason
    assert "neither success nor failure" in reasons[ignored.SOPInstanceUID].reason
    assert "missing SOPInstanceUID" in reasons["<no SOP Instance UID>"].reason
    assert not result.ok
    assert result.bytes_sent > 0
    assert refused.SOPInstanceUID.encode() in server.hits[-1].body
    assert b"multipart/related" in server.hits[-1].headers["Content-Type"].encode()


def test_wado_404_names_the_series_and_study(server: ScriptedServer) -> None:
    server.script(json_reply(404, {"Message": "Unknown resource"}, "application/json"))
    client = DicomwebClient(server.url, retry=FAST)

    with pytest.raises(PacsError) as caught:
        client.retrieve_series("1.2.3", "1.2.4")

    assert caught.value.status == 404
    assert "series 1.2.4 (study 1.2.3)" in str(caught.value)
    assert "transfer-syntax=*" in server.hits[0].headers["Accept"]
    assert len(server.hits) == 1


def test_instance_exists_asks_qido_for_the_sop_instance(server: ScriptedServer) -> None:
    hit = {"00080018": {"vr": "UI", "Value": ["1.2.5"]}, "00080016": {"vr": "UI", "Value": [CTImageStorage]}}
    server.script(json_reply(200, [hit]), json_reply(200, []), json_reply(404, {}))
    client = DicomwebClient(server.url, retry=FAST)

    assert client.instance_exists("1.2.3", "1.2.4", "1.2.5") is True
    assert client.instance_exists("1.2.3", "1.2.4", "1.2.6") is False
    assert client.instance_exists("1.2.3", "1.2.4", "1.2.7") is False
    assert server.hits[0].path.startswith("/dicom-web/studies/1.2.3/series/1.2.4/instances?00080018=1.2.5")
