"""The two local servers of the development setup: Orthanc (PACS) and sekmet-fhir (FHIR R4).

Their configuration is written into the run directory from `deploy/orthanc.json` and the
settings, so several independent setups (the demo, the test suite) can run side by side on
different ports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def orthanc_spec(settings: Settings) -> ServiceSpec:
    base = settings.run_dir / "orthanc"
    storage = base / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = json.loads(ORTHANC_BASE_CONFIG.read_text())
    config.update(
        HttpPort=settings.orthanc_http_port,
        DicomPort=settings.orthanc_dicom_port,
        DicomAet=settings.orthanc_aet,
        StorageDirectory=str(storage),
        IndexDirectory=str(storage),
        Plugins=[str(ORTHANC_DICOMWEB_PLUGIN)],
        # Orthanc has no bind-address option: refusing non-loopback clients is the guard.
        RemoteAccessAllowed=False,
        # C-FIND is only answered for known AETs; the agent's own is the one to know.
        DicomModalities={"imaging-agent": [settings.dimse_calling_aet, "127.0.0.1", 104]},
    )
    config_file = base / "orthanc.json"
    config_file.write_text(json.dumps(config, indent=2))
    return ServiceSpec(
        name="Orthanc (PACS)",
        command=[_orthanc_executable(), str(config_file)],
        cwd=base,
        ports=[settings.orthanc_http_port, settings.orthanc_dicom_port],
        health_url=f"http://127.0.0.1:{settings.orthanc_http_port}/system",
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
    return [orthanc_spec(settings), fhir_spec(settings)]
