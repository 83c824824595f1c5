"""The jobs service: the webhook receiver, the bearer-token REST API over the registry, the dashboard.

Secrets (JOBS_API_TOKEN, TRAINING_WEBHOOK_SECRET) are read from the environment once, here, and kept
in this closure only: never logged, stored or answered. Every error is {"error": "..."}.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from brightrun.errors import ConfigError
from jobs import registry, webhooks
from jobs.cancel import cancel
from jobs.runfolder import ROOT, Conflict, NotFound
from jobs.service import customer, models_api, queue, ratings_api, receiver, start, store, training_api, views
from jobs.service.db import make_engine
from jobs.service.tokens import api_tokens
from versions import answer

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("jobs.service")
# Module level: annotations are strings here (PEP 563), resolved against this module's names.
BEARER = HTTPBearer(auto_error=False, description="JOBS_API_TOKEN")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


class ServiceError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class StartRun(BaseModel):
    """POST /api/training/jobs: what `python -m jobs train` takes on its command line."""

    model_config = ConfigDict(extra="forbid")
    preset: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=64)
    data: str | None = Field(default=None, description="an already converted data folder")
    input: str | None = Field(default=None, description="a brightrun-v4 file (converted if needed)")
    hardware: str | None = Field(default=None, max_length=64)
    overrides: list[str] = Field(default_factory=list, description='Axolotl "key=value" overrides')
    heldout_eval: bool = True


BODY_SECONDS = 10.0  # a whole request body must arrive within this; a trickling client is cut off
SECURITY_HEADERS = [
    # The dashboard loads only its own files (jobs/service/static: no inline script or style).
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class BodyLimit:
    """ASGI middleware: no request body over `limit` bytes, nor slower than `seconds` in all, on any
    route; security headers on every answer. FastAPI reads a JSON body whole before a route's
    dependencies (the bearer check) run, so without this a client with no token could make the
    service hold any amount, or hold a connection open by sending a byte now and then. The webhook
    also caps its own read (receiver.read_body)."""

    def __init__(self, app, limit: int, seconds: float = BODY_SECONDS):
        self.app, self.limit, self.seconds = app, limit, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = f"body over {self.limit} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await error(413, too_big)(scope, receive, send)
        received = 0
        deadline = time.monotonic() + self.seconds

        async def limited():
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise HTTPException(408, f"request body not received within {self.seconds:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, too_big)  # FastAPI and our handler turn it into the answer
            return message

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, limited, with_headers)


@functools.cache
def gpus() -> dict:
    """GPUs as the driver lists them; not torch (seconds to import, and a CPU build sees none)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"present": False, "count": 0}
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {"present": False, "count": 0}
    count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return {"present": count > 0, "count": count}


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


ABSOLUTE = re.compile(r"(?<![\w.])/(?:[^\s'\"/:]+/)+")  # a directory part of an absolute path


def public(message: str, places: dict[Path, str], limit: int = 2000) -> str:
    """An error for a caller: the server's own folders by their names, no other absolute path, bounded."""
    for path, name in sorted(places.items(), key=lambda kv: -len(str(kv[0]))):
        message = message.replace(str(path), name)
    message = ABSOLUTE.sub("…/", message)
    return message if len(message) <= limit else message[:limit] + " …"


def create_app(
    runs_dir: str | Path = "runs",
    db_url: str | None = None,
    data_dir: str | Path = "data",
    model: str = "70b-qlora",
    preset: str = "balanced",
    evaluate: bool = True,
    runs_mode: str | None = None,
    poll: float = 30.0,
) -> FastAPI:
    tokens = api_tokens(os.environ.get("JOBS_API_TOKEN"), os.environ.get("JOBS_API_TOKENS"))  # (name, token)
    secret = os.environ.get("TRAINING_WEBHOOK_SECRET")
    if not tokens or not secret:
        raise RuntimeError(
            "JOBS_API_TOKEN (or JOBS_API_TOKENS) and TRAINING_WEBHOOK_SECRET must both be set in the "
            "environment"
        )
    # Absolute: the launcher subprocess of a started run works from the repo root, not from our cwd.
    runs = Path(runs_dir).resolve()
    data_root = Path(data_dir).resolve()
    places = {runs: "runs", data_root: "data", ROOT: "."}
    registry.use_runs_dir(runs)
    url = registry.database_url(db_url)
    engine = make_engine(url)
    settings, dispatcher = training_api.configure(
        engine, runs, data_root, url, secret, model, preset, evaluate, runs_mode, poll, gpus()["count"]
    )
    try:
        answerer = answer.Answerer.from_env()  # MODELS_SERVER_URL / _API_KEY, MODELS_TEST_*: "test a model"
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        dispatcher.start()
        yield
        dispatcher.stop()
        answerer.close()  # the generation worker, if one was started

    app = FastAPI(
        title="BrightRun LoRA jobs",
        version="1",
        description="Training jobs: signed webhook events in, the registry out (bearer token).",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=receiver.MAX_BODY)
    # For tests and tools; the secrets are deliberately not on app.state (the answerer's key is not shown).
    app.state.engine, app.state.answerer = engine, answerer

    def authorized(credentials: Credentials) -> str:
        """The token's name (who, in the registry's records); 401 for any other token. Every token is
        compared, in constant time each, so the time taken does not say which one came close."""
        given = credentials.credentials.encode() if credentials else b""
        found = [name for name, value in tokens if hmac.compare_digest(given, value.encode())]
        if not found:
            raise ServiceError(401, "missing or invalid bearer token")
        return found[0]

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error(exc.status, exc.message, headers)

    @app.exception_handler(customer.Refused)
    async def customer_refused(request: Request, exc: customer.Refused):
        # The customer's routes (training_api.py): their refusals, in one place, as every other 4xx.
        message = public(exc.message, places)
        log.info("%s %s refused (%d): %s", request.method, request.url.path, exc.status, message)
        return error(exc.status, message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # 400, not FastAPI's 422, and without echoing the input back.
        parts = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        return error(400, "invalid request: " + "; ".join(parts[:5]))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Starlette re-raises it after this answer, and uvicorn logs the traceback: one line here.
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return error(500, "internal error")

    @app.get("/health", tags=["service"])
    def health():
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            reachable = True
        except Exception as exc:  # noqa: BLE001 -- a health check reports, it does not fail
            log.warning("health: database unreachable (%s)", type(exc).__name__)
            reachable = False
        gpu = dict(gpus())
        # Their plan's shape first (status, gpu_available, gpu_count), then ours.
        body = {
            "status": "healthy" if reachable else "unhealthy",
            "gpu_available": gpu["present"],
            "gpu_count": gpu["count"],
            "registry": reachable,
            "ok": reachable,
            "database": engine.dialect.name,
            "gpu": gpu,
        }
        return JSONResponse(body, status_code=200 if reachable else 503)

    @app.post(
        "/api/training/webhook",
        tags=["webhook"],
        summary="Receive a signed training status event",
        openapi_extra={
            "parameters": [
                {
                    "name": webhooks.SIGNATURE_HEADER,
                    "in": "header",
                    "required": True,
                    "description": "hex HMAC-SHA256 of the raw body under TRAINING_WEBHOOK_SECRET",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": receiver.inline_schema(receiver.Event)}},
            },
            "responses": {
                str(code): {"description": why}
                for code, why in [
                    (400, "malformed JSON or wrong shape"),
                    (401, "bad signature, or a stale or future timestamp"),
                    (404, "unknown job_id"),
                    (409, "replayed event_id (already delivered)"),
                    (413, "body over 1 MB"),
                    (415, "not application/json"),
                ]
            },
        },
    )
    async def webhook(request: Request):
        # async for the capped body read; the database work goes to the threadpool.
        try:
            body = await receiver.read_body(request)
            # A pod of one of our own pod jobs signs with that job's key (it never holds a master secret).
            pod_job = await run_in_threadpool(pod_job_of, body)
            event = receiver.verify(
                request.headers.get("content-type"),
                request.headers.get(webhooks.SIGNATURE_HEADER),
                body,
                secret,
                per_run=webhooks.run_keys_required() or pod_job is not None,
            )
            applied = await run_in_threadpool(store.apply, engine, event, pod_job is not None)
        except receiver.Rejected as exc:
            log.info("webhook rejected (%d): %s", exc.status, exc.message)
            if exc.status == 409 and pod_job is not None:  # applied before, its pass-on maybe not: again
                await run_in_threadpool(training_api.relay, engine, settings, pod_job, body)
            return error(exc.status, exc.message)
        if pod_job is not None:  # its customer gets it too, signed with their secret, in order
            await run_in_threadpool(training_api.relay, engine, settings, pod_job, body)
        return {"ok": True, "applied": applied}

    def pod_job_of(body: bytes) -> str | None:
        """The job id of an event for one of the service's pod jobs, or None (it picks the key)."""
        job_id = receiver.claimed_job_id(body)
        if job_id is None:
            return None
        job = queue.get(engine, job_id)
        return job_id if job is not None and job.mode == "pod" else None

    @app.get("/api/training/jobs", tags=["jobs"], dependencies=[Depends(authorized)])
    def list_jobs(status: str | None = Query(default=None, description=" | ".join(registry.STATUSES))):
        if status is not None and status not in registry.STATUSES:
            raise ServiceError(400, f"unknown status; one of {', '.join(registry.STATUSES)}")
        return {"jobs": views.list_jobs(engine, status)}

    @app.get("/api/training/jobs/{job_id}", tags=["jobs"], dependencies=[Depends(authorized)])
    def get_job(job_id: str):
        job = views.job_detail(engine, job_id) if receiver.valid_job_id(job_id) else None
        if job is None:
            raise ServiceError(404, "no such job")
        return job

    @app.post("/api/training/jobs", tags=["jobs"], status_code=202, dependencies=[Depends(authorized)])
    def start_job(request: StartRun):
        # A sync endpoint: the threadpool absorbs the first in-process Axolotl check (~10 s).
        if request.data and request.input:
            raise ServiceError(400, "give input (a brightrun file) or data (a converted folder), not both")
        try:
            run_id = start.start_run(
                request.preset,
                request.model,
                request.input,
                request.data,
                request.hardware,
                request.overrides,
                str(runs),
                url,
                request.heldout_eval,
                data_root=data_root,
            )
        except ConfigError as exc:
            raise ServiceError(400, public(str(exc), places)) from None
        except SQLAlchemyError as exc:
            log.error("start: database error %s", type(exc).__name__)
            raise ServiceError(503, "the registry database is unavailable; try again") from None
        except Exception as exc:  # noqa: BLE001 -- whatever a request made fail is its answer, not a 500
            log.exception("start: %s", type(exc).__name__)
            raise ServiceError(
                400, f"the job could not be prepared from this request ({type(exc).__name__})"
            ) from None
        log.info("started run %s", run_id)
        return {"id": run_id, "status": "queued"}

    @app.delete(
        "/api/training/jobs/{job_id}", tags=["jobs"], status_code=202, dependencies=[Depends(authorized)]
    )
    def cancel_job(job_id: str):
        if not receiver.valid_job_id(job_id):
            raise ServiceError(404, "no such job")
        try:
            status = cancel(job_id, str(runs), url)
        except NotFound:
            raise ServiceError(404, "no such job") from None
        except Conflict as exc:
            raise ServiceError(409, str(exc)) from None
        except ConfigError as exc:
            raise ServiceError(400, public(str(exc), places)) from None
        log.info("cancel %s: %s", job_id, status)
        return {"id": job_id, "status": status}

    # The customer's app: /training/start, status, stop; /models/list, /models/test (training_api.py).
    app.include_router(
        training_api.router(
            engine, settings, authorized, lambda message: public(message, places), answerer, dispatcher.poke
        )
    )

    # Named models and their versions (versions/): /api/models...
    app.include_router(
        models_api.router(engine, runs, authorized, lambda message: public(message, places), answerer)
    )
    app.include_router(ratings_api.router(engine, authorized, lambda message: public(message, places)))

    # The dashboard: public files; the page asks for the token and sends it with each API call.
    @app.get("/", include_in_schema=False)
    def index():
        page = STATIC / "index.html"
        if not page.is_file():
            raise ServiceError(404, "no dashboard installed")
        return FileResponse(page)

    @app.get("/rate", include_in_schema=False)
    def rating_page():  # blind human ratings of a version's answers (issue 27): rate.html#version=NAME@vN
        page = STATIC / "rate.html"
        if not page.is_file():
            raise ServiceError(404, "no dashboard installed")
        return FileResponse(page)

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app
