"""The two local servers of the development setup: Orthanc (PACS) and sekmet-fhir (FHIR R4).

Their configuration is written into the run directory from `deploy/orthanc.json` and the
settings, so several independent setups (the demo, the test suite) can run side by side on
different ports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from agent.private_files import protect_run_dir
from agent.services.process import ServiceError, ServiceSpec
from agent.settings import PROJECT_ROOT, Settings

ORTHANC_BASE_CONFIG = PROJECT_ROOT / "deploy" / "orthanc.json"
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _orthanc_executable() -> str:
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if found is None:
        raise ServiceError(
            "Orthanc is not installed. Run ./scripts/bootstrap.sh (it installs the Debian packages "
            "orthanc and orthanc-dicomweb), or point IMAGING_AGENT_DICOMWEB_URL at an existing PACS."
        )
    if not ORTHANC_DICOMWEB_PLUGIN.exists():
        raise ServiceError(
            f"The Orthanc DICOMweb plugin is missing ({ORTHANC_DICOMWEB_PLUGIN}). "
            "Install the Debian package orthanc-dicomweb (./scripts/bootstrap.sh does it)."
        )
    return found


def orthanc_config(settings: Settings) -> dict[str, Any]:
    """deploy/orthanc.json with this setup's ports, storage, credentials and DICOM policy.

    Closed by default: the HTTP API answers only 127.0.0.1 and only with the user and password;
    the DICOM server is off unless `orthanc_dicom_enabled` is set, and then it accepts only the
    agent's own AE, from 127.0.0.1, addressed to this Orthanc's AET, for the services it uses.
    """
    storage = settings.run_dir / "orthanc" / "storage"
    config: dict[str, Any] = json.loads(ORTHANC_BASE_CONFIG.read_text())
    config.update(
        HttpPort=settings.orthanc_http_port,
        DicomPort=settings.orthanc_dicom_port,
        DicomAet=settings.orthanc_aet,
        StorageDirectory=str(storage),
        IndexDirectory=str(storage),
        Plugins=[str(ORTHANC_DICOMWEB_PLUGIN)],
        # Orthanc has no bind-address option: refusing non-loopback clients is the HTTP guard.
        RemoteAccessAllowed=False,
        AuthenticationEnabled=True,
        RegisteredUsers={settings.orthanc_username: settings.local_orthanc_password().get_secret_value()},
        # Orthanc cannot bind its DICOM port to 127.0.0.1 either: off unless asked for.
        DicomServerEnabled=settings.orthanc_dicom_enabled,
        DicomCheckCalledAet=True,
        DicomCheckModalityHost=True,
        DicomAlwaysAllowEcho=False,
        DicomAlwaysAllowStore=False,
        DicomAlwaysAllowFind=False,
        DicomAlwaysAllowGet=False,
        DicomAlwaysAllowMove=False,
        DicomModalitiesInDatabase=False,
        # The one peer: the agent itself (IMAGING_AGENT_DIMSE_CALLING_AET) on this machine, for
        # what tools/dimse uses (C-ECHO, C-STORE, C-FIND, and C-GET to read stored results back
        # for their bytes). Port 104 is never called: no C-MOVE.
        DicomModalities={
            "imaging-agent": {
                "AET": settings.dimse_calling_aet,
                "Host": "127.0.0.1",
                "Port": 104,
                "AllowEcho": True,
                "AllowFind": True,
                "AllowStore": True,
                "AllowGet": True,
                "AllowMove": False,
                "AllowNAction": False,
                "AllowEventReport": False,
                "AllowStorageCommitment": False,
            }
        },
        ExecuteLuaEnabled=False,
        RestApiWriteToFileSystemEnabled=False,
    )
    return config


def orthanc_spec(settings: Settings) -> ServiceSpec:
    base = settings.run_dir / "orthanc"
    (base / "storage").mkdir(parents=True, exist_ok=True)
    config_file = base / "orthanc.json"
    # The file holds the HTTP password: write it 0600 whatever the umask.
    config_file.touch(mode=0o600)
    config_file.chmod(0o600)
    config_file.write_text(json.dumps(orthanc_config(settings), indent=2))
    ports = [settings.orthanc_http_port] + ([settings.orthanc_dicom_port] if settings.orthanc_dicom_enabled else [])
    return ServiceSpec(
        name="Orthanc (PACS)",
        command=[_orthanc_executable(), str(config_file)],
        cwd=base,
        ports=ports,
        health_url=f"http://127.0.0.1:{settings.orthanc_http_port}/system",
        health_auth=(settings.orthanc_username, settings.local_orthanc_password()),
        pid_file=base / "orthanc.pid",
        log_file=base / "orthanc.log",
        executable_marker=str(config_file),
    )


def fhir_spec(settings: Settings) -> ServiceSpec:
    base = settings.run_dir / "fhir"
    (base / "data").mkdir(parents=True, exist_ok=True)
    executable = settings.fhir_venv / "bin" / "sekmet"
    if not executable.exists():
        raise ServiceError(
            f"The FHIR server is not installed ({executable} is missing). "
            "Run ./scripts/bootstrap.sh: it creates .venv-fhir with sekmet-fhir==0.1.1."
        )
    base_url = f"http://127.0.0.1:{settings.fhir_port}/fhir"
    config_file = base / "settings.yaml"
    # JSON is valid YAML, and json.dumps quotes every path safely.
    config_file.write_text(
        json.dumps(
            {
                "base_url": base_url,
                "host": "127.0.0.1",
                "port": settings.fhir_port,
                "data_dir": str(base / "data"),
                "db_path": str(base / "data" / "fhir.db"),
                "simulator": {"enabled": False},
                "log_inbound": False,
            },
            indent=2,
        )
    )
    return ServiceSpec(
        name="FHIR R4 server (sekmet-fhir)",
        command=[str(executable), "serve", "--config", str(config_file)],
        cwd=base,
        env={"SEKMET_CONFIG": str(config_file), "SEKMET_DB": str(base / "data" / "fhir.db")},
        ports=[settings.fhir_port],
        health_url=f"{base_url}/metadata",
        pid_file=base / "fhir.pid",
        log_file=base / "fhir.log",
        executable_marker=str(config_file),
    )


def local_services(settings: Settings) -> list[ServiceSpec]:
    # Both servers store PHI and the Orthanc config holds its password: they run under the
    # private umask, inside a 0700 run directory (agent/private_files.py).
    protect_run_dir(settings.run_dir)
    return [orthanc_spec(settings), fhir_spec(settings)]
