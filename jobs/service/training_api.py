"""The customer's routes (their "RunPod API"): /training/start, status, stop; /models/list and test.

Shapes (README "The customer's app", docs/customer-integration.md):
  POST /training/start           -> 200 {success, job_id, status, pod_id, endpoint_url, estimated_steps,
                                    estimated_duration_minutes, estimated_cost_usd, queue_position}
  GET  /training/status/{job_id} -> {success, job_id, status, brightrun_status, step, total_steps, metrics,
                                    cost_so_far_usd, pod_id, lora_artifact_path, error_message, ...}
  POST /training/stop/{job_id}   -> {success, job_id, status: cancelled | cancelling}
  GET  /models/list              -> {models: [...]} (as GET /api/models)
  POST /models/test              {model: "NAME" (its production version) | "NAME@vN", messages | prompt,
                                  max_tokens?, temperature?} -> {ref, answer, ...}
Every refusal is {"error": "..."} with a 4xx: 400 not a JSON object, 401 token, 404 unknown job, 409 the
same job_id again or a job already over, 422 a field (named) or the dataset (the converter's message).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from axolotl_configs.profiles import Profiles
from brightrun.errors import ConfigError
from jobs import payload, preflight, registry, webhooks
from jobs.cancel import cancel
from jobs.pod import stored
from jobs.runfolder import Conflict, NotFound
from jobs.service import customer, dataset, models_api, pods, queue, receiver, secrets, start
from jobs.service.dispatcher import Dispatcher
from versions import answer
from versions import registry as versions

log = logging.getLogger("jobs.service")


@dataclass
class Settings:
    """What `jobs service` was started with (its flags) and owns."""

    runs: Path
    data_root: Path
    db_url: str
    model: str  # the model profile a request without base_model gets
    preset: str
    evaluate: bool
    service_secret: str
    runs_mode: str = "local"  # local: on this machine; pods: one RunPod pod per job (jobs/pod/launch.py)
    poll: float = 30.0  # seconds between a pod launcher's polls
    slots: int = 1  # local jobs at once: this machine's GPUs over a job's (1 on a CPU)


def configure(
    engine: Engine,
    runs: Path,
    data_root: Path,
    db_url: str,
    service_secret: str,
    model: str,
    preset: str,
    evaluate: bool,
    runs_mode: str | None,
    poll: float,
    gpus: int,
) -> tuple[Settings, Dispatcher]:
    """The service's settings for their jobs, checked before it serves (RuntimeError: said, exit 2), and
    the dispatcher that starts them."""
    # With RunPod configured, one pod per job; without it (or --runs local), on this machine.
    runs_mode = runs_mode or ("pods" if os.environ.get("RUNPOD_API_KEY") else "local")
    if runs_mode not in ("local", "pods"):
        raise RuntimeError(f"--runs {runs_mode!r}: local or pods")
    if runs_mode == "pods" and not os.environ.get("RUNPOD_API_KEY"):
        raise RuntimeError(
            "--runs pods: RUNPOD_API_KEY is not set (the account key the launcher creates pods with)"
        )
    for name in ("WEBHOOK_URL_ALLOW", "DATASET_URL_ALLOW"):
        try:
            re.compile(os.environ.get(name) or "")
        except re.error as exc:
            raise RuntimeError(f"{name}: not a regular expression ({exc})") from None
    try:
        hardware = Profiles.load(preset, model).hardware  # the defaults a start gets: checked before serving
    except ConfigError as exc:
        raise RuntimeError(str(exc)) from None
    # One local run per job's GPUs (a CPU machine: one at a time), the rest queued (jobs/service/queue.py).
    per_job = max(1, int(hardware["gpu_count"])) if gpus else 1
    slots = max(1, gpus // per_job)
    settings = Settings(
        runs, data_root, db_url, model, preset, evaluate, service_secret, runs_mode, poll, slots
    )
    dispatcher = Dispatcher(
        engine,
        runs,
        db_url,
        service_secret,
        gpus,
        per_job,
        evaluate,
        poll,
        lambda job_id: route_events(engine, settings, job_id),
    )
    return settings, dispatcher


def route_events(engine: Engine, settings: Settings, job_id: str) -> None:
    """Events this process sends for a service job (its `queued`, a cancel before it runs) go to that job's
    webhook, signed with its secret, never to the service's own WEBHOOK_URL."""
    where = queue.destination(engine, job_id, settings.service_secret)
    if where is not None:
        webhooks.route(settings.runs / job_id, *where)


def start_job(engine: Engine, settings: Settings, body: dict, base_url: str) -> dict:
    """POST /training/start, checked whole before the job can start (module docstring). The job id is
    claimed first (the same id again: 409, even while this one is being checked); a refusal after that
    takes back everything it made."""
    asked = customer.parse_start(body)
    job_id = asked["job_id"]
    model = customer.model_for(asked["base_model"], settings.model)
    overrides, batch = customer.check_hyperparameters(asked["hyperparameters"])
    hardware = None
    if settings.runs_mode == "local":  # preflight, before their file is fetched (prepare asks again)
        profiles = Profiles.load(settings.preset, model)
        try:
            preflight.require(
                preflight.train_checks(profiles, preflight.planned_values(profiles, overrides), settings.runs)
            )
        except ConfigError as exc:
            raise customer.Refused(422, str(exc)) from None
    if settings.runs_mode == "pods":
        if not (os.environ.get("PUBLIC_URL") or os.environ.get("RUNPOD_POD_ID")):
            # Each pod reports its progress to PUBLIC_URL/api/training/webhook: without it, nowhere.
            raise customer.Refused(
                503, "this service starts pods but has no PUBLIC_URL (its address as a pod reaches it)"
            )
        hardware = customer.hardware_for(asked["runpod_config"].get("gpu_type"), model)
    taken = registry.get_job(job_id, settings.db_url) is not None or (settings.runs / job_id).exists()
    sealed = secrets.seal(settings.service_secret, asked["webhook_secret"])
    mode = "pod" if settings.runs_mode == "pods" else "local"
    if taken or not queue.claim(engine, job_id, asked["webhook_url"], sealed, mode):
        raise customer.Refused(409, f"job {job_id} exists already (a job_id starts one job)")
    incoming = settings.data_root / "incoming"
    before = set(incoming.iterdir()) if incoming.is_dir() else set()
    path = None
    try:
        # The run's own events (from `queued` on) go to their route from this process too: routed first.
        webhooks.route(settings.runs / job_id, asked["webhook_url"], asked["webhook_secret"])
        try:
            path, digest = dataset.fetch(asked["dataset_url"], incoming)
        except dataset.FetchError as exc:
            raise customer.Refused(422, str(exc)) from None
        record = {
            "dataset": {"url": dataset.redact(asked["dataset_url"]), "sha256": digest},
            "hyperparameters": asked["hyperparameters"] or {},
            "base_model": asked["base_model"],
            "runpod_config": asked["runpod_config"],
            "model": model,
            "preset": settings.preset,
        }
        if mode == "pod":
            return pods.start_job(engine, settings, asked, record, path, overrides, batch, hardware, base_url)
        return start_local(engine, settings, asked, record, path, overrides, batch, base_url)
    except BaseException:
        forget(engine, settings, job_id)
        if path is not None and path not in before:
            path.unlink(missing_ok=True)  # their file, fetched for a start that was refused
        raise


def start_local(
    engine: Engine,
    settings: Settings,
    asked: dict,
    record: dict,
    path: Path,
    overrides: list[str],
    batch: int | None,
    base_url: str,
) -> dict:
    job_id, model = asked["job_id"], record["model"]
    try:
        start.start_run(
            settings.preset,
            model,
            input_file=str(path.relative_to(settings.data_root)),
            overrides=overrides,
            runs_dir=str(settings.runs),
            db_url=settings.db_url,
            data_root=settings.data_root,
            run_id=job_id,
            targets_per_step=batch,
            launch=False,
        )
    except ConfigError as exc:
        raise customer.Refused(422, str(exc)) from None
    queue.ready(engine, job_id, record)
    est = json.loads((settings.runs / job_id / "run.json").read_text())["estimate"]
    hw = Profiles.load(settings.preset, model).hardware
    gpus = hw["gpu_count"] if hw["gpu_type"] != "none" else 0
    return {
        "success": True,
        "job_id": job_id,
        "status": "queued",
        "pod_id": None,  # a local run: no pod
        "endpoint_url": f"{base_url}/training/status/{job_id}",
        "estimated_steps": est.get("steps"),
        "estimated_duration_minutes": round(est["hours"] * 60, 1),
        # This machine's GPU at the hardware file's price (on demand: the service's own pod is not spot).
        "estimated_cost_usd": round(est["hours"] * gpus * hw["price_per_hour"]["on_demand"], 2),
        "queue_position": queue.ahead_of(engine, settings.runs, job_id, settings.slots),
    }


def forget(engine: Engine, settings: Settings, job_id: str) -> None:
    webhooks.unroute(settings.runs / job_id)
    with Session(engine) as s:
        s.execute(delete(queue.ServiceJob).where(queue.ServiceJob.job_id == job_id))
        s.execute(delete(registry.TrainingJob).where(registry.TrainingJob.id == job_id))
        s.commit()
    shutil.rmtree(settings.runs / job_id, ignore_errors=True)


def artifact_key(settings: Settings, job: registry.TrainingJob) -> str | None:
    """Where their "Download LoRA adapters" finds it: the zip's key in their bucket once stored, else ours."""
    marker = settings.runs / job.id / stored.MARKER
    try:
        key = json.loads(marker.read_text()).get("zip_key") if marker.is_file() else None
    except (OSError, ValueError):
        key = None
    return key or (job.artifact_path if job.status == "completed" else None)


def status_of(engine: Engine, settings: Settings, job_id: str) -> dict:
    job = registry.get_job(job_id, settings.db_url) if receiver.valid_job_id(job_id) else None
    if job is None and receiver.valid_job_id(job_id) and queue.get(engine, job_id) is not None:
        # A pod job whose pod is being created: its row comes with the pod.
        return {
            "success": True,
            "job_id": job_id,
            "status": "queued",
            "brightrun_status": "queued",
            "step": 0,
            "total_steps": None,
            "metrics": {},
            "cost_so_far_usd": 0.0,
            "pod_id": None,
            "lora_artifact_path": None,
            "error_message": None,
            "queue_position": 0,
        }
    if job is None:
        raise customer.Refused(404, "no such job")
    with Session(engine) as s:
        point = s.scalars(
            select(registry.MetricPoint)
            .where(registry.MetricPoint.job_id == job_id, registry.MetricPoint.loss.is_not(None))
            .order_by(registry.MetricPoint.step.desc(), registry.MetricPoint.id.desc())
            .limit(1)
        ).first()
    metrics = (
        {k: getattr(point, k) for k in payload.HISTORY_KEYS if getattr(point, k) is not None} if point else {}
    )
    out = {
        "success": True,
        "job_id": job_id,
        "status": payload.customer_status(job.status, relaunch=False),
        "brightrun_status": job.status,
        "step": job.step,
        "total_steps": job.total_steps,
        "metrics": metrics,
        "cost_so_far_usd": round(job.actual_cost or 0.0, 4),
        "pod_id": job.pod_id,
        "lora_artifact_path": artifact_key(settings, job),
        "error_message": job.error_message,
        "started_at": payload.iso(job.started_at) if job.started_at else None,
        "completed_at": payload.iso(job.completed_at) if job.completed_at else None,
    }
    if job.status == "queued" and queue.get(engine, job_id) is not None:
        out["queue_position"] = queue.ahead_of(engine, settings.runs, job_id, settings.slots)
    return out


def stop_job(engine: Engine, settings: Settings, job_id: str) -> dict:
    job = registry.get_job(job_id, settings.db_url) if receiver.valid_job_id(job_id) else None
    if job is None and receiver.valid_job_id(job_id) and queue.get(engine, job_id) is not None:
        # A pod job whose pod does not exist yet: the dispatcher stops it as soon as it can.
        queue.request_stop(engine, job_id)
        return {"success": True, "job_id": job_id, "status": "cancelling"}
    if job is None:
        raise customer.Refused(404, "no such job")
    if job.status in registry.TERMINAL:
        raise customer.Refused(409, f"job {job_id} is already {job.status}")
    route_events(engine, settings, job_id)
    try:
        status = cancel(job_id, str(settings.runs), settings.db_url)
    except NotFound:
        raise customer.Refused(404, "no such job") from None
    except Conflict as exc:
        raise customer.Refused(409, str(exc)) from None
    except ConfigError as exc:  # RunPod refused our key: nothing was stopped, and the caller cannot fix it
        log.error("stop %s: %s", job_id, exc)
        raise customer.Refused(502, f"RunPod: {exc}") from None
    log.info("stop %s: %s", job_id, status)
    return {"success": True, "job_id": job_id, "status": status}


def relay(engine: Engine, settings: Settings, job_id: str, body: bytes) -> None:
    """A pod's event, accepted by the service's receiver, passed on to its customer (jobs/webhooks.py).
    Its progress only: the end is its launcher's to announce (completed once the adapter is in their bucket
    and the pod terminated, failed or cancelled once the pod is gone), and a terminal event is the last
    their row gets, so the pod's own would shut the launcher's out."""
    event = json.loads(body)
    if event.get("status") in payload.CUSTOMER_STATUSES[4:]:  # completed, failed, cancelled
        log.info("job %s: the pod's %s stays here; its launcher announces the end", job_id, event["status"])
        return
    route_events(engine, settings, job_id)
    job = registry.get_job(job_id, settings.db_url)
    if job is not None and (settings.runs / job_id).is_dir():
        # Its attempt as the launcher counts them: a relaunched pod in a fresh folder numbers from 1 again,
        # and (attempt, sequence) keeps it after the earlier attempt's events (jobs/webhook_order.py).
        webhooks.relay(settings.runs / job_id, event | {"retry_count": job.retry_count})


async def json_body(request: Request):
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise customer.Refused(400, "the body is not JSON") from None


def router(
    engine: Engine,
    settings: Settings,
    authorized: Callable,
    public: Callable[[str], str],
    answerer: answer.Answerer,
    poke: Callable[[], None],
) -> APIRouter:
    # A customer.Refused raised here is answered by the app's handler: its status, its message (public).
    api = APIRouter(tags=["training (the customer's app)"], dependencies=[Depends(authorized)])

    @api.post("/training/start")
    async def training_start(request: Request):
        body = await json_body(request)
        answer_ = await run_in_threadpool(start_job, engine, settings, body, customer.public_url(request))
        poke()  # the dispatcher starts it now if a slot is free
        log.info("job %s accepted (%s ahead)", answer_["job_id"], answer_["queue_position"])
        return answer_

    @api.get("/training/status/{job_id}")
    def training_status(job_id: str):
        return status_of(engine, settings, job_id)

    @api.post("/training/stop/{job_id}")
    def training_stop(job_id: str):
        return stop_job(engine, settings, job_id)

    @api.get("/models/list")
    def models_list():
        return {"models": versions.models(engine)}

    @api.post("/models/test")
    async def models_test(request: Request):
        body = await json_body(request)
        try:
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                raise customer.field_error(
                    "model",
                    'a model name ("NAME" or "NAME@production", its production version), '
                    '"NAME@testing" or "NAME@vN"',
                )
            name, _, version = body.pop("model").partition("@")
            if "prompt" in body and "messages" not in body:
                body["messages"] = [{"role": "user", "content": body.pop("prompt")}]
            ask = models_api.Ask.model_validate(body)
            versions.check_name(name)
            if version == "testing":  # its newest version in testing; "production" is the default below
                number = versions.get_ref(engine, f"{name}@{version}").version
            elif version and version != "production":
                number = versions.parse_ref(f"{name}@{version}")[1]
            else:
                number = None
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
            raise HTTPException(422, f"{where}: {exc.errors()[0]['msg']}") from None
        except versions.VersionError as exc:
            raise HTTPException(exc.status, public(str(exc))) from None
        return await models_api.answer_with(engine, settings.runs, public, answerer, name, number, ask)

    return api
