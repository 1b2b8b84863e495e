"""The demo PACS is closed: Orthanc's HTTP API wants the password, its DICOM port is off by
default, and when it is on only the agent's own AE from 127.0.0.1 may use it."""

from __future__ import annotations

import socket

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from agent.parts import pacs_client
from agent.settings import Settings
from tests.integration.test_pacs_live import synthetic_ct_series, token

pytestmark = pytest.mark.integration


def _orthanc(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.orthanc_http_port}"


def test_rest_and_dicomweb_without_credentials_are_401(live_settings: Settings) -> None:
    for path in ("/system", "/patients", "/instances", "/dicom-web/studies", "/app/explorer.html"):
        assert httpx.get(_orthanc(live_settings) + path, timeout=10).status_code == 401, path
    wrong = httpx.get(_orthanc(live_settings) + "/patients", auth=("imaging-agent", "guess"), timeout=10)
    assert wrong.status_code == 401
    # The agent's own client is given the credentials by the settings.
    with pacs_client(live_settings) as pacs:
        assert pacs.ping() is True
    # Orthanc listens on every interface (it has no bind option) but answers only 127.0.0.1:
    # the right password from another address is still refused.
    password = live_settings.local_orthanc_password().get_secret_value()
    auth = (live_settings.orthanc_username, password)
    assert httpx.get(_orthanc(live_settings) + "/patients", auth=auth, timeout=10).status_code == 200
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as elsewhere:
        assert elsewhere.get(_orthanc(live_settings) + "/patients", auth=auth).status_code in (401, 403)


def test_dicom_port_is_closed_by_default(live_settings: Settings) -> None:
    """live_settings leaves the DICOM server at its default; Orthanc cannot bind it to 127.0.0.1."""
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", live_settings.orthanc_dicom_port))


def _associate(settings: Settings, calling_aet: str, called_aet: str | None = None, source: str = "127.0.0.1"):  # noqa: ANN202
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate(
        "127.0.0.1", settings.orthanc_dicom_port, ae_title=called_aet or settings.orthanc_aet, bind_address=(source, 0)
    )


@pytest.mark.parametrize(
    ("who", "calling", "called", "source"),
    [
        ("an unknown AE", "INTRUDER", None, "127.0.0.1"),
        ("the agent's AE from another address", "IMAGING_AGENT", None, "127.0.0.2"),
        ("the agent's AE calling another AET", "IMAGING_AGENT", "NOT_ORTHANC", "127.0.0.1"),
    ],
)
def test_c_store_from_anyone_but_the_agent_is_refused(
    dicom_settings: Settings, who: str, calling: str, called: str | None, source: str
) -> None:
    [instance] = synthetic_ct_series(f"Intruder^{token()}", slices=1)
    assoc = _associate(dicom_settings, calling, called, source)
    stored = False
    if assoc.is_established:
        status = assoc.send_c_store(instance)
        stored = status is not None and getattr(status, "Status", None) == 0x0000
        assoc.release()
    assert not stored, f"{who} stored an instance"
    with pacs_client(dicom_settings) as pacs:
        assert pacs.search_studies({"StudyInstanceUID": instance.StudyInstanceUID}) == []


def test_the_agents_own_ae_may_store(dicom_settings: Settings) -> None:
    [instance] = synthetic_ct_series(f"Agent^{token()}", slices=1)
    assoc = _associate(dicom_settings, dicom_settings.dimse_calling_aet)
    assert assoc.is_established
    status = assoc.send_c_store(instance)
    assoc.release()
    assert status.Status == 0x0000
