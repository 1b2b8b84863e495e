"""Settings for every part of imaging-agent, read from the environment and `.env`.

Every field here is listed, with its default, in `.env.example`. The names in the
environment are the field names in upper case with the prefix ``IMAGING_AGENT_``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.private_files import read_or_create_secret
from tools.dimse.peers import Peer
from tools.http.config import AuthKind, HttpAuth, RetryPolicy
from tools.intake.routing import DEFAULT_RULES, RoutingRule
from tools.segmentation.catalog import EngineOptions, MedImageParseOptions
from tools.state.database import DatabaseUrlError, parse_database_url, sqlite_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMAGING_AGENT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
        # Settings hold passwords and keys (a database URL, API keys): an error names the setting and
        # what is wrong with it, never echoes the values given.
        hide_input_in_errors=True,
    )

    run_dir: Path = Field(default=PROJECT_ROOT / "run", description="service data, work files, checkpoints")

    # Local services started by `imaging-agent services up`.
    orthanc_http_port: int = 8042
    orthanc_dicom_port: int = 4242
    orthanc_aet: str = "ORTHANC"
    fhir_port: int = 8090
    fhir_venv: Path = Field(default=PROJECT_ROOT / ".venv-fhir")
    service_start_timeout_s: float = 60.0
    # Started by `imaging-agent services up --scale` only: PostgreSQL 15 and Redis from Debian, on
    # 127.0.0.1, their data in the run directory. PostgreSQL refuses to run as root, so as root it
    # runs as this system user (created on first use).
    postgres_port: int = 5433
    postgres_system_user: str = "imaging-agent-db"
    redis_port: int = 6380

    # PACS.
    dicomweb_url: str = "http://127.0.0.1:8042/dicom-web"
    dicomweb_auth: AuthKind = "none"
    dicomweb_username: str | None = None
    dicomweb_password: SecretStr | None = None
    dicomweb_token: SecretStr | None = None
    dicomweb_stow_batch_size: int = Field(default=32, ge=1)
    pacs_store: Literal["dicomweb", "dimse"] = Field(
        default="dicomweb",
        description="how approved results reach the PACS: STOW-RS, or C-STORE to the DIMSE peer below (verified by "
        "C-FIND and C-GET); prefer dicomweb, C-STORE measured about 8 MB/s against Orthanc",
    )
    dimse_host: str = "127.0.0.1"
    dimse_port: int = 4242
    dimse_called_aet: str = "ORTHANC"
    dimse_calling_aet: str = "IMAGING_AGENT"

    # EHR.
    fhir_url: str = "http://127.0.0.1:8090/fhir"
    fhir_auth: AuthKind = "none"
    fhir_username: str | None = None
    fhir_password: SecretStr | None = None
    fhir_token: SecretStr | None = None
    fhir_page_size: int = Field(default=50, ge=1)
    patient_identifier_system: str = Field(
        default="urn:imaging-agent:patient-id",
        description="FHIR Identifier.system for DICOM PatientID (your hospital's MRN system)",
    )

    # Segmentation.
    default_engine: str = Field(default="lung-threshold", description="engine used when none is named")
    fallback_engines: list[str] = Field(
        default_factory=list,
        description="engines tried in order when the chosen one fails or its QA fails, e.g. [\"lung-threshold\"]",
    )
    monai_bundle_dir: Path | None = Field(default=None, description="MONAI bundle for the monai-bundle engine")
    torch_device: str | None = Field(default=None, description="cpu, cuda, cuda:1; default: cuda when present")
    medimageparse_url: str | None = Field(default=None, description="Azure AI Foundry MedImageParse scoring URL")
    medimageparse_key: SecretStr | None = None
    medimageparse_batch_size: int = Field(default=8, ge=1, description="slices per scoring request")
    medimageparse_timeout_s: float = Field(default=60.0, gt=0, description="per scoring request")
    medimageparse_mode: Literal["2d", "3d"] = "2d"
    cxrreportgen_url: str | None = Field(
        default=None, description="Azure AI Foundry CXRReportGen scoring URL: chest radiograph studies get draft findings"
    )
    cxrreportgen_key: SecretStr | None = None
    cxrreportgen_timeout_s: float = Field(default=120.0, gt=0, description="per CXRReportGen request")
    medimageinsight_url: str | None = Field(
        default=None, description="Azure AI Foundry MedImageInsight scoring URL: checks each input before segmenting"
    )
    medimageinsight_key: SecretStr | None = None
    medimageinsight_timeout_s: float = Field(default=60.0, gt=0, description="per MedImageInsight request")
    input_check: Literal["off", "flag", "refuse"] = Field(
        default="flag", description="with MedImageInsight: a series that is not what the goal expects is flagged or refused"
    )

    # Web app.

    # Workflow.
    batch_concurrency: int = Field(default=2, ge=1, description="studies processed at the same time")

    # Planner (LLM). "auto": OpenAI-compatible when a key or base URL is set, else the offline planner.
    llm_provider: Literal["auto", "offline", "openai", "azure"] = "auto"
    llm_model: str = Field(default="gpt-4o-mini", description="model name (Azure: ignored, the deployment decides)")
    llm_temperature: float = Field(default=0.0, ge=0, le=2)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = Field(default=None, description="any OpenAI-compatible server: vLLM, Ollama, LM Studio")
    azure_openai_endpoint: str | None = None
    azure_openai_deployment: str | None = None
    azure_openai_api_version: str = "2024-10-21"
    azure_openai_api_key: SecretStr | None = None

    # HTTP behaviour shared by both clients.
    http_timeout_s: float = Field(default=30.0, gt=0)
    http_retry_attempts: int = Field(default=4, ge=1)
    http_retry_backoff_s: float = Field(default=0.5, ge=0)

    # Where the runtime's state lives: LangGraph's checkpoints and the project's tables (jobs, leases,
    # decisions, local accounts). Unset: the SQLite file run/agent.sqlite. For several processes or
    # machines: postgresql://USER:PASSWORD@HOST:PORT/DATABASE (`services up --scale` starts one).
    database_url: SecretStr | None = Field(default=None, description="sqlite:////abs/path or postgresql://...")

    # One runner per job: a lease per job in the runtime's database. On this host a
    # runner counts as gone when its process has exited; a runner on another host (a shared run dir)
    # when its heartbeat is older than job_lease_s. A running job renews it every job_lease_heartbeat_s.
    job_lease_s: float = Field(default=60.0, gt=0, description="heartbeat age after which another host's runner counts as gone")
    job_lease_heartbeat_s: float = Field(default=10.0, gt=0, description="how often a running job renews its lease")
    # A reviewer's claim on a pending approval (the worklist): others see who holds it, and their
    # decisions are refused until it is released, the decision recorded, or this many minutes pass.
    claim_minutes: float = Field(default=15.0, gt=0, description="how long a reviewer's claim on an approval lasts")

    # Workers (`imaging-agent worker`, Celery over Redis). Unset broker: every job runs in the process
    # that starts it, as in the demo. Set: the API, the CLI and the chat put jobs on the broker and
    # the workers run them. A worker that dies mid-task leaves its message unacknowledged; Redis hands
    # it to another worker once it is older than the visibility timeout, so keep that above the
    # longest single task (one study, or a resume up to its writes) and as short as you can wait.
    broker_url: SecretStr | None = Field(
        default=None, description="redis://:PASSWORD@HOST:PORT/0 (`services up --scale` writes run/redis/broker-url)"
    )
    broker_visibility_timeout_s: float = Field(
        default=300.0, gt=0, description="an unfinished task of a dead worker goes to another worker after this long"
    )
    # The work store: DICOM copies, volumes, masks, built results (checkpoints hold their paths and
    # hashes). A job resumed on another machine needs them, so workers on several machines share
    # one folder, mounted at the same path on each.
    work_dir: Path | None = Field(default=None, description="the work store; default RUN_DIR/work; shared by all workers")
    # Where a job's segmentation runs. "inline": on the worker (or process) that runs the job. "engines":
    # as a task of its own on the `engines` queue, which `imaging-agent worker --queues engines` takes
    # (GPU machines); the job's worker is free while it waits, and the engine worker's result resumes
    # the job. Needs the broker and a work store every worker shares.
    engine_queue: Literal["inline", "engines"] = Field(
        default="inline", description="inline: the job's own worker segments; engines: engine workers do"
    )

    # Telemetry. Traces go to an OpenTelemetry collector only when its endpoint is set, under the
    # standard OTel names (so a deployment's usual OTEL_* environment works unchanged); the exporter
    # reads the other standard variables (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _CERTIFICATE) itself.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector base URL, e.g. http://127.0.0.1:4318 (traces go to /v1/traces); unset: no traces",
    )
    otel_service_name: str = Field(
        default="imaging-agent", validation_alias=AliasChoices("OTEL_SERVICE_NAME"), description="service.name of the spans"
    )
    # GET /metrics of the API service (Prometheus). Its figures hold no patient data (states, steps,
    # engine names, counts), but job volumes are the department's business: set a token for a scrape
    # beyond 127.0.0.1 (Prometheus: `authorization: {credentials_file: ...}`).
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token a scrape of /metrics must send; unset: /metrics is open like /health"
    )

    @model_validator(mode="after")
    def _broker_url_is_redis(self) -> Settings:
        if self.broker_url is not None:
            scheme = urlsplit(self.broker_url.get_secret_value()).scheme
            if scheme not in ("redis", "rediss"):
                raise ValueError(
                    f"IMAGING_AGENT_BROKER_URL must be a Redis URL (redis://:PASSWORD@HOST:PORT/0), not a {scheme or 'schemeless'} "
                    "URL; the workers run on Celery with Redis only"
                )
        return self

    @model_validator(mode="after")
    def _engine_queue_has_workers(self) -> Settings:
        if self.engine_queue == "engines" and self.broker_url is None:
            raise ValueError(
                "IMAGING_AGENT_ENGINE_QUEUE=engines sends segmentation to engine workers over the broker: set "
                "IMAGING_AGENT_BROKER_URL too, or leave IMAGING_AGENT_ENGINE_QUEUE at inline"
            )
        return self

    @model_validator(mode="after")
    def _database_url_is_usable(self) -> Settings:
        if self.database_url is not None:
            try:
                parse_database_url(self.database_url.get_secret_value())
            except DatabaseUrlError as exc:
                raise ValueError(f"IMAGING_AGENT_DATABASE_URL: {exc}") from None
        return self

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.job_lease_heartbeat_s >= self.job_lease_s:
            raise ValueError(
                f"IMAGING_AGENT_JOB_LEASE_HEARTBEAT_S ({self.job_lease_heartbeat_s}) must be below "
                f"IMAGING_AGENT_JOB_LEASE_S ({self.job_lease_s}), or a running job would count as gone"
            )
        return self

    # Identity and the API service (issue 10): who may decide, and how they prove it.
    api_host: str = Field(default="127.0.0.1", description="address of `imaging-agent serve`")
    api_port: int = Field(default=8000, description="port of `imaging-agent serve`")
    signing_window_s: float = Field(
        default=600.0, gt=0, description="an approval needs a sign-in at most this many seconds old"
    )
    access_token_ttl_s: float = Field(default=1800.0, gt=0, description="lifetime of an API access token")
    login_max_failures: int = Field(default=5, ge=1, description="wrong passwords in a row before a lockout")
    login_lockout_s: float = Field(default=900.0, ge=0, description="how long a locked account stays locked")
    local_radiologists: list[str] = Field(
        default_factory=list,
        description='OS accounts that may decide at a terminal without a service, e.g. ["alice"]',
    )

    # OpenID Connect (issue 10): a hospital's identity provider for the browser login (code + PKCE)
    # and for API clients' bearer JWTs. Unset issuer: OpenID Connect is off.
    oidc_issuer: str | None = Field(default=None, description="the provider's issuer, exactly as its discovery says")
    oidc_client_id: str | None = Field(default=None, description="this service's client id at the provider")
    oidc_client_secret: SecretStr | None = Field(default=None, description="unset: a public client (PKCE only)")
    oidc_audience: str | None = Field(default=None, description="`aud` of API access tokens; default: the client id")
    oidc_roles_claim: str = Field(default="roles", description='claim with the roles; dotted: "realm_access.roles"')
    oidc_scopes: str = Field(default="openid profile", description="scopes the browser login asks for")
    oidc_redirect_url: str | None = Field(
        default=None, description="this service's /auth/callback URL, as registered at the provider"
    )

    # --- Closed demo PACS, PHI at rest, MONAI bundles as code (issue 10) ---
    # The local Orthanc's HTTP API always asks for this user; the agent's DICOMweb client uses it
    # whenever IMAGING_AGENT_DICOMWEB_AUTH is none and the URL is the local Orthanc's.
    orthanc_username: str = Field(default="imaging-agent", description="user of the local Orthanc's HTTP API")
    orthanc_password: SecretStr | None = Field(
        default=None, description="empty: generated once into RUN_DIR/orthanc/http-password (mode 0600)"
    )
    orthanc_dicom_enabled: bool = Field(
        default=False,
        description="open the local Orthanc's DICOM port (C-STORE/C-FIND, only for IMAGING_AGENT_DIMSE_CALLING_AET "
        "from 127.0.0.1); Orthanc cannot bind it to one address, so it is off by default",
    )
    retention_days: float | None = Field(
        default=None, ge=0, description="`imaging-agent purge` default: delete finished jobs' work files older than this"
    )
    llm_free_text: bool = Field(
        default=True, description="false: study and series descriptions are withheld from the LLM planner"
    )
    exclude_gtv: bool = Field(
        default=True,
        description="leave a GTV found in an RTSTRUCT of the study (in the PACS, same frame of reference) out of "
        "every structure, as radiotherapy lung contours do",
    )
    monai_bundle_sha256: str | None = Field(
        default=None,
        description="sha256 of the MONAI bundle's weights and configs (a refusal prints it); the bundle loads "
        "only when it matches, or when it lies under trusted_bundle_dir",
    )
    trusted_bundle_dir: Path | None = Field(
        default=None, description="bundles under this directory (ones you trained or vetted) load without a sha256 pin"
    )

    result_overlay: bool = Field(
        default=False,
        description="also build, approve and store a secondary-capture series: outlines burned into copies of "
        "three axial slices, marked NOT FOR DIAGNOSIS (for PACS viewers without SEG or RTSTRUCT)",
    )
    result_kos: bool = Field(
        default=False, description="also build, approve and store a Key Object Selection pointing at the results"
    )

    # The agent's DICOM node (`imaging-agent listen`).
    intake_ae_title: str = Field(default="IMAGING_AGENT", max_length=16, description="the node's own AE title")
    intake_host: str = Field(default="127.0.0.1", description="address the node listens on")
    intake_port: int = Field(default=11112, description="port the node listens on")
    intake_peers: list[Peer] = Field(
        default_factory=list,
        description='senders allowed to store, as JSON: [{"ae_title": "CT_SCANNER", "host": "10.0.0.5"}]; none: '
        "every association is refused",
    )
    intake_stable_age_s: float = Field(
        default=10.0, gt=0, description="a series is complete when nothing new arrived for this long (Orthanc's StableAge)"
    )
    intake_store_to_pacs: bool = Field(
        default=True, description="store each received series in the PACS (STOW) before its job, so results have their source there"
    )
    intake_routes: list[RoutingRule] = Field(
        default_factory=lambda: list(DEFAULT_RULES),
        description="JSON list of routing rules (modality, body_parts, series_description regex -> engine); "
        "the first match decides, a series no rule matches is kept and not processed",
    )
    intake_with_service: bool = Field(
        default=False, description="`imaging-agent serve` also runs the DICOM node (as `imaging-agent listen` would)"
    )
    intake_tls_cert: Path | None = Field(default=None, description="PEM certificate of the node: DICOM over TLS")
    intake_tls_key: Path | None = Field(default=None, description="PEM private key of that certificate")
    intake_tls_ca: Path | None = Field(
        default=None, description="PEM CA bundle: senders must present a certificate signed by it"
    )

    @model_validator(mode="after")
    def _follow_local_ports(self) -> Settings:
        # Relative paths in .env mean "inside the project", wherever the command runs from.
        if not self.run_dir.is_absolute():
            self.run_dir = PROJECT_ROOT / self.run_dir
        if not self.fhir_venv.is_absolute():
            self.fhir_venv = PROJECT_ROOT / self.fhir_venv
        if self.work_dir is not None and not self.work_dir.is_absolute():
            self.work_dir = PROJECT_ROOT / self.work_dir
        if self.trusted_bundle_dir is not None and not self.trusted_bundle_dir.is_absolute():
            self.trusted_bundle_dir = PROJECT_ROOT / self.trusted_bundle_dir
        for name in ("intake_tls_cert", "intake_tls_key", "intake_tls_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_absolute():
                setattr(self, name, PROJECT_ROOT / path)
        # Moving a local service to another port should not also require editing its URL.
        if "dicomweb_url" not in self.model_fields_set:
            self.dicomweb_url = f"http://127.0.0.1:{self.orthanc_http_port}/dicom-web"
        if "fhir_url" not in self.model_fields_set:
            self.fhir_url = f"http://127.0.0.1:{self.fhir_port}/fhir"
        if "dimse_port" not in self.model_fields_set:
            self.dimse_port = self.orthanc_dicom_port
        return self

    @property
    def work_root(self) -> Path:
        """The work store every job of this process reads and writes."""
        return self.work_dir if self.work_dir is not None else self.run_dir / "work"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def token_secret_path(self) -> Path:
        """The API's token signing secret (0600)."""
        return self.run_dir / "api-token-secret"

    @property
    def cli_token_path(self) -> Path:
        """The token `imaging-agent login` keeps for the CLI (0600)."""
        return self.run_dir / "cli-login.json"

    @property
    def intake_dir(self) -> Path:
        """Where the DICOM node keeps what it received, by study and series."""
        return self.run_dir / "intake"

    @property
    def state_path(self) -> Path:
        """The embedded default's SQLite file: checkpoints, jobs, leases, decisions and accounts."""
        return self.run_dir / "agent.sqlite"

    def state_database_url(self) -> str:
        """The runtime's database: IMAGING_AGENT_DATABASE_URL, else the SQLite file in the run directory."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return sqlite_url(self.state_path)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.http_retry_attempts,
            backoff_s=self.http_retry_backoff_s,
            timeout_s=self.http_timeout_s,
        )

    def local_orthanc_password(self) -> SecretStr:
        """The local Orthanc's HTTP password: the setting, else the one generated into the run directory."""
        return self.orthanc_password or read_or_create_secret(self.run_dir / "orthanc" / "http-password")

    def _is_local_orthanc(self, url: str) -> bool:
        parsed = urlsplit(url)
        return parsed.hostname in ("127.0.0.1", "localhost") and parsed.port == self.orthanc_http_port

    def dicomweb_http_auth(self) -> HttpAuth:
        if self.dicomweb_auth == "none" and self._is_local_orthanc(self.dicomweb_url):
            # The local Orthanc never answers without credentials (agent/services/local.py).
            return HttpAuth(kind="basic", username=self.orthanc_username, password=self.local_orthanc_password())
        return HttpAuth(
            kind=self.dicomweb_auth,
            username=self.dicomweb_username,
            password=self.dicomweb_password,
            token=self.dicomweb_token,
        )

    def fhir_http_auth(self) -> HttpAuth:
        return HttpAuth(
            kind=self.fhir_auth,
            username=self.fhir_username,
            password=self.fhir_password,
            token=self.fhir_token,
        )

    def engine_options(self) -> EngineOptions:
        """What the segmentation engines are built from (tools/segmentation/catalog.py)."""
        return EngineOptions(
            monai_bundle_dir=self.monai_bundle_dir,
            monai_bundle_sha256=self.monai_bundle_sha256,
            trusted_bundle_dir=self.trusted_bundle_dir,
            torch_device=self.torch_device,
            medimageparse=MedImageParseOptions(
                url=self.medimageparse_url,
                key=self.medimageparse_key,
                batch_size=self.medimageparse_batch_size,
                timeout_s=self.medimageparse_timeout_s,
                mode=self.medimageparse_mode,
                retry=self.retry_policy(),
            ),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead."""
    return Settings()
