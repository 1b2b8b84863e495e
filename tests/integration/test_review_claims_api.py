"""Two radiologists on one worklist, through `imaging-agent serve`: the second sees the first's claim and
cannot decide until it is released or expires.

The service runs as its own process with a short claim time (IMAGING_AGENT_CLAIM_MINUTES), against the
session's Orthanc and FHIR server; accounts come from `imaging-agent users add`, tokens from the service.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.settings import Settings
from tests.integration.test_api_service import CLI, Service, _env, _wait_for_approval, running_service
from tests.integration.workflow_helpers import (
    assert_nothing_written,
    assert_written_once,
    phantom_spec,
    retire,
    seed_phantom,
    task_of,
)
from tools.workflow.rejection_reasons import REJECTION_REASON_SYSTEM

pytestmark = pytest.mark.integration

PASSWORDS = {"dr-anne": "anne claims first 1", "dr-boris": "boris comes second 1"}
CLAIM_MINUTES = 0.4  # long enough for the refusals below on a busy machine, short enough to wait out


@pytest.fixture(scope="module")
def service(live_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    run_dir = tmp_path_factory.mktemp("claims-api") / "run"
    env = {**_env(run_dir, live_settings), "IMAGING_AGENT_CLAIM_MINUTES": str(CLAIM_MINUTES)}
    users = {name: ("radiologist", password) for name, password in PASSWORDS.items()}
    with running_service(run_dir, env, users) as service:
        yield service


def _bearer(service: Service, username: str) -> dict[str, str]:
    response = service.token(username, PASSWORDS[username])
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _listed(service: Service, headers: dict[str, str], approval_id: str, **filters: str) -> dict[str, Any] | None:
    listing = service.http.get("/api/v1/approvals", headers=headers, params=filters)
    assert listing.status_code == 200, listing.text
    return next((a for a in listing.json() if a["approval_id"] == approval_id), None)


def test_the_second_reviewer_sees_the_claim_and_decides_after_release_or_expiry(
    service: Service, live_settings: Settings, tmp_path: Path
) -> None:
    released_study = seed_phantom(live_settings, tmp_path / "released", phantom_spec(4721, "CLAIM-RELEASE"))
    expired_study = seed_phantom(live_settings, tmp_path / "expired", phantom_spec(4722, "CLAIM-EXPIRE"))
    try:
        anne, boris = _bearer(service, "dr-anne"), _bearer(service, "dr-boris")
        approvals = {}
        for study in (released_study, expired_study):
            started = service.http.post("/api/v1/jobs", json={"kind": "study", "imaging_study_id": study.imaging_study_id}, headers=anne)
            assert started.status_code == 202, started.text
            job = _wait_for_approval(service, anne, started.json()["job_id"])
            approvals[study.imaging_study_id] = job["report"]["pending"][0]["interrupt_id"]
        first, second = approvals[released_study.imaging_study_id], approvals[expired_study.imaging_study_id]

        # The worklist: longest waiting first, with what a reviewer filters on.
        listing = service.http.get("/api/v1/approvals", headers=boris).json()
        ours = [a["approval_id"] for a in listing if a["approval_id"] in (first, second)]
        assert ours == [first, second]
        entry = _listed(service, boris, first)
        assert entry is not None and entry["claim"] is None and entry["engine"] == "lung-threshold" and entry["modality"] == "CT"
        assert entry["imaging_study_id"] == released_study.imaging_study_id and entry["waiting_s"] >= 0
        assert _listed(service, boris, first, engine="monai-bundle") is None
        assert _listed(service, boris, first, modality="CT", engine="lung-threshold") is not None
        flagged = "any" if entry["qa_flags"] else "none"
        assert _listed(service, boris, first, flag=flagged) is not None

        # Anne claims; Boris sees who holds it and is refused, with the study, the holder and until when.
        claimed = service.http.post(f"/api/v1/approvals/{first}/claim", headers=anne)
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["holder_id"] == "dr-anne"
        seen = _listed(service, boris, first)
        assert seen is not None and seen["claim"]["holder_id"] == "dr-anne" and seen["claim"]["holder_name"] == "Dr. dr-anne"
        until = datetime.fromisoformat(claimed.json()["expires_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        refused = service.http.post(
            f"/api/v1/approvals/{first}/decision", json={"decision": "approve"}, headers=boris
        )
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert f"ImagingStudy/{released_study.imaging_study_id}" in detail and "Dr. dr-anne (dr-anne" in detail
        assert f"until {until}" in detail and detail.startswith("Nothing was decided")
        assert service.http.post(f"/api/v1/approvals/{first}/claim", headers=boris).status_code == 409
        assert service.http.delete(f"/api/v1/approvals/{first}/claim", headers=boris).status_code == 409
        assert_nothing_written(live_settings, released_study)

        # Released: Boris rejects with a code from the list and his own words.
        assert service.http.delete(f"/api/v1/approvals/{first}/claim", headers=anne).json() == {"released": True}
        assert _listed(service, boris, first)["claim"] is None  # type: ignore[index]
        codes = {r["code"] for r in service.http.get("/api/v1/rejection-reasons", headers=boris).json()}
        assert "contour-leak" in codes and "other" in codes
        rejected = service.http.post(
            f"/api/v1/approvals/{first}/decision",
            json={"decision": "reject", "reason_code": "contour-leak", "reason": "leaks into the liver"},
            headers=boris,
        )
        assert rejected.status_code == 200, rejected.text
        assert [o["outcome"] for o in rejected.json()["outcomes"]] == ["rejected"]
        task = task_of(live_settings, released_study)
        [coding] = task.statusReason.coding
        assert (coding.system, coding.code) == (REJECTION_REASON_SYSTEM, "contour-leak")
        assert task.statusReason.text == "leaks into the liver"
        assert _listed(service, boris, first) is None

        # Anne claims the other one and walks away; `imaging-agent approvals list` shows her too.
        claimed = service.http.post(f"/api/v1/approvals/{second}/claim", headers=anne)
        assert claimed.status_code == 200, claimed.text
        refused = service.http.post(f"/api/v1/approvals/{second}/decision", json={"decision": "approve"}, headers=boris)
        assert refused.status_code == 409 and "Dr. dr-anne" in refused.json()["detail"]
        env = _env(service.run_dir, live_settings)
        listed = subprocess.run([str(CLI), "approvals", "list"], env=env, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        [line] = [row for row in listed.stdout.splitlines() if second[:12] in row]
        assert "Dr. dr-anne" in line

        # Her claim expires: Boris approves.
        expires = datetime.fromisoformat(claimed.json()["expires_at"])
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
        assert _listed(service, boris, second)["claim"] is None  # type: ignore[index]
        approved = service.http.post(f"/api/v1/approvals/{second}/decision", json={"decision": "approve"}, headers=boris)
        assert approved.status_code == 200, approved.text
        assert [o["outcome"] for o in approved.json()["outcomes"]] == ["completed"]
        assert_written_once(live_settings, expired_study)
    finally:
        retire(live_settings, [released_study, expired_study])
