"""The FastAPI application: endpoints of `imaging-agent serve` (OpenAPI at /docs), and the Gradio
app at /ui behind a browser sign-in (`agent/api/browser.py`; OpenID Connect when configured).

Every endpoint but health and /metrics (agent/api/metrics.py: a scrape token of its own) needs a
bearer token (401): one of this service's (local accounts) or the OpenID provider's access token
when IMAGING_AGENT_OIDC_ISSUER is set. Reading approvals and running jobs needs
the radiologist or operator role; a decision needs the radiologist role (403) and a sign-in
within the signing window (401, "sign in again"). The decision's reviewer is the token's
principal: nothing in the body names a person.

The approvals list is the reviewers' worklist (graphs/approval_worklist.py): longest waiting first,
filtered by QA flag, engine and modality, with the reviewer who claimed each one. A radiologist
claims an approval (POST .../claim) and releases it (DELETE .../claim); a decision on an approval
someone else holds is refused (409) naming the study, the holder and until when.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.middleware.sessions import SessionMiddleware

from agent.api.auth import TOKEN_URL, current_principal, requires, unauthorized
from agent.api.browser import LoginSessions, https_only, local_login_router, mount_ui, new_sessions
from agent.api.jobs import JobRunner
from agent.api.metrics import metrics_registry, metrics_router
from agent.api.models import (
    AccessToken,
    ApprovalView,
    ClaimView,
    Credentials,
    DecisionBody,
    Health,
    JobBody,
    JobView,
    RejectionReason,
    ReleaseView,
)
from agent.api.oidc_routes import bearer_verifier, oidc_router
from agent.identity import account_store, token_signer
from agent.intake import DicomNode, log_event
from agent.review import DecisionError, build_decision, claim_holder
from agent.runtime import AgentRuntime
from agent.settings import Settings
from agent.ui.layout import build_app
from graphs.approval_worklist import WorklistEntry, WorklistFilter, worklist
from graphs.approval_worklist import claim as claim_approval
from graphs.approval_worklist import release as release_approval
from graphs.runtime import PendingApproval, QueueUnavailableError, RunReport
from tools.identity.accounts import AuthenticationError
from tools.identity.principal import Principal, StaleAuthenticationError, require_fresh
from tools.review.edits import EditError
from tools.segmentation.catalog import UnknownEngineError
from tools.workflow.claims import ClaimHeldError
from tools.workflow.decisions import DecisionConflictError

Reader = Annotated[Principal, Depends(requires("radiologist", "operator"))]
Radiologist = Annotated[Principal, Depends(requires("radiologist"))]


def create_app(settings: Settings) -> FastAPI:
    # The Gradio app, mounted before serving, gets a runtime of its own now: another connection to
    # the same durable store (as the CLI has), so its lock and the API's job runner never share one.
    ui_runtime = AgentRuntime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = AgentRuntime(settings)
        try:
            with account_store(settings) as accounts:
                app.state.accounts = accounts
                app.state.signer = token_signer(settings)
                app.state.oidc = bearer_verifier(settings) if settings.oidc_issuer else None
                app.state.jobs = JobRunner(runtime)
                app.state.metrics = metrics_registry(runtime)
                node = DicomNode(settings, runtime, log_event) if settings.intake_with_service else None
                if node is not None:
                    node.start()
                try:
                    yield
                finally:
                    if node is not None:
                        node.stop()
                    app.state.jobs.wait(timeout_s=30)
        finally:
            runtime.close()
            ui_runtime.close()

    app = FastAPI(
        title="imaging-agent",
        summary="AI results between PACS and EHR, with radiologist approval before every write.",
        lifespan=lifespan,
    )

    @app.get("/api/v1/health", tags=["service"])
    def health() -> Health:
        return Health()

    app.include_router(metrics_router(settings.metrics_token))

    @app.post(TOKEN_URL, tags=["auth"], openapi_extra={"requestBody": {"content": {
        "application/x-www-form-urlencoded": {"schema": Credentials.model_json_schema()},
        "application/json": {"schema": Credentials.model_json_schema()},
    }}})
    async def token(request: Request) -> AccessToken:
        """Sign in with a local account (form or JSON: username, password)."""
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                credentials = Credentials.model_validate(await request.json())
            else:
                credentials = Credentials.model_validate(dict(await request.form()))
        except (ValidationError, ValueError) as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="send username and password") from exc
        try:
            principal = await run_in_threadpool(
                request.app.state.accounts.authenticate, credentials.username, credentials.password
            )
        except AuthenticationError as exc:
            raise unauthorized(str(exc)) from exc
        signer = request.app.state.signer
        return AccessToken(access_token=signer.issue(principal), expires_in=int(signer.ttl_s))

    @app.get("/api/v1/auth/me", tags=["auth"])
    def me(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        """Who the token belongs to (the CLI asks this after `imaging-agent login`)."""
        return principal

    @app.get("/api/v1/approvals", tags=["approvals"])
    def approvals(request: Request, _: Reader, only: Annotated[WorklistFilter, Query()]) -> list[ApprovalView]:
        """The worklist: pending approvals, longest waiting first, with who claimed each."""
        now = datetime.now(UTC)
        return [ApprovalView.of(e, now) for e in worklist(request.app.state.jobs.runtime, only)]

    @app.get("/api/v1/rejection-reasons", tags=["approvals"])
    def rejection_reasons(_: Reader) -> list[RejectionReason]:
        """The codes a rejection's `reason_code` takes."""
        return RejectionReason.all()

    @app.get("/api/v1/approvals/{approval_id}", tags=["approvals"])
    def approval(request: Request, approval_id: str, _: Reader) -> ApprovalView:
        return ApprovalView.of(_entry(request, approval_id), datetime.now(UTC))

    @app.post("/api/v1/approvals/{approval_id}/claim", tags=["approvals"])
    def claim(request: Request, approval_id: str, principal: Radiologist) -> ClaimView:
        """Claim the approval for the signed-in radiologist (or renew their claim): the others see it,
        and their decisions on it are refused until it is released, decided or expired (409 if another holds it)."""
        pending = _pending(request, approval_id)
        try:
            taken = claim_approval(request.app.state.jobs.runtime, pending, claim_holder(principal))
        except ClaimHeldError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        return ClaimView.of(taken)

    @app.delete("/api/v1/approvals/{approval_id}/claim", tags=["approvals"])
    def release(request: Request, approval_id: str, principal: Radiologist) -> ReleaseView:
        """Release the signed-in radiologist's claim (409 if another reviewer holds it)."""
        pending = _pending(request, approval_id)
        try:
            released = release_approval(request.app.state.jobs.runtime, pending, claim_holder(principal))
        except ClaimHeldError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        return ReleaseView(released=released)

    @app.post("/api/v1/approvals/{approval_id}/decision", tags=["approvals"])
    def decide(request: Request, approval_id: str, body: DecisionBody, principal: Radiologist) -> RunReport:
        """Approve, reject or modify (correct the contours, then approve the rebuilt result) as the signed-in
        radiologist; runs the writes before answering, or with workers records the decision and queues the
        job's resume (`queued` in the answer)."""
        try:
            require_fresh(principal, settings.signing_window_s)
        except StaleAuthenticationError as exc:
            raise unauthorized(str(exc)) from exc
        pending = _pending(request, approval_id)
        try:
            decision = build_decision(
                body.decision, principal, body.reason, signing_window_s=settings.signing_window_s,
                reason_code=body.reason_code, edits=body.edits,
            )
            return request.app.state.jobs.decide(pending.thread_id, pending.interrupt_id, decision)
        except (DecisionError, EditError) as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
        except (DecisionConflictError, ClaimHeldError) as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        except KeyError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=exc.args[0]) from exc
        except QueueUnavailableError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc

    @app.post("/api/v1/jobs", tags=["jobs"], status_code=status.HTTP_202_ACCEPTED)
    def start_job(request: Request, body: JobBody, _: Reader) -> JobView:
        """Start a batch over the work list or one study; it runs until it waits for approvals."""
        runner: JobRunner = request.app.state.jobs
        try:
            if body.kind == "batch":
                job_id = runner.start_batch(dict(parse_qsl(body.query)) if body.query else None, body.engine)
            else:
                job_id = runner.start_study(body.imaging_study_id, body.engine)
        except UnknownEngineError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
        except QueueUnavailableError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
        return JobView.of(runner.runtime.job(job_id))

    @app.get("/api/v1/jobs", tags=["jobs"])
    def jobs(request: Request, _: Reader) -> list[JobView]:
        runner: JobRunner = request.app.state.jobs
        return [JobView.of(j, runner.errors.get(j.thread_id)) for j in runner.runtime.jobs()]

    @app.get("/api/v1/jobs/{job_id}", tags=["jobs"])
    def job(request: Request, job_id: str, _: Reader) -> JobView:
        runner: JobRunner = request.app.state.jobs
        try:
            found = runner.runtime.job(job_id)
        except KeyError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=exc.args[0]) from exc
        return JobView.of(found, runner.errors.get(job_id), runner.runtime.report(job_id))

    _browser(app, settings, ui_runtime, new_sessions(settings))
    return app


def _browser(app: FastAPI, settings: Settings, runtime: AgentRuntime, sessions: LoginSessions) -> None:
    """/login and /logout (the OpenID provider's when configured, else local accounts) and the app at /ui."""
    # Authlib keeps a login's state, nonce and PKCE verifier in this cookie until the callback.
    app.add_middleware(
        SessionMiddleware, secret_key=secrets.token_urlsafe(32), session_cookie="imaging_agent_login",
        max_age=600, same_site="lax", https_only=https_only(settings),
    )
    app.include_router(oidc_router(settings, sessions) if settings.oidc_issuer else local_login_router(sessions))
    mount_ui(app, build_app(settings, runtime, identify=sessions.identify), sessions)


def _pending(request: Request, approval_id: str) -> PendingApproval:
    try:
        return request.app.state.jobs.runtime.find_pending(approval_id)
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=exc.args[0]) from exc


def _entry(request: Request, approval_id: str) -> WorklistEntry:
    pending = _pending(request, approval_id)
    for entry in worklist(request.app.state.jobs.runtime):
        if entry.approval.interrupt_id == pending.interrupt_id:
            return entry
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"approval {approval_id} was answered meanwhile")
