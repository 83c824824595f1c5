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
from jobs import payload, registry, webhooks
from jobs.cancel import cancel
from jobs.pod import stored
from jobs.runfolder import Conflict, NotFound
from jobs.service import customer, dataset, models_api, pods, queue, receiver, secrets, start
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


def route_events(engine: Engine, settings: Settings, job_id: str) -> None:
    """Events this process sends for a service job (its `queued`, a cancel before it runs) go to that job's
    webhook, signed with its secret, never to the service's own WEBHOOK_URL."""
    where = queue.destination(engine, job_id, settings.service_secret)
    if where is not None:
        webhooks.route(settings.runs / job_id, *where)


def start_job(engine: Engine, settings: Settings, body: dict, base_url: str) -> dict:
    """POST /training/start, checked whole before anything is written (module docstring)."""
    asked = customer.parse_start(body)
    job_id = asked["job_id"]
    if registry.get_job(job_id, settings.db_url) is not None or (settings.runs / job_id).exists():
        raise customer.Refused(409, f"job {job_id} exists already (a job_id starts one job)")
    model = customer.model_for(asked["base_model"], settings.model)
    overrides, batch = customer.check_hyperparameters(asked["hyperparameters"])
    if settings.runs_mode == "pods":
        hardware = customer.hardware_for(asked["runpod_config"].get("gpu_type"), model)
    try:
        path, digest = dataset.fetch(asked["dataset_url"], settings.data_root / "incoming")
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
    if settings.runs_mode == "pods":
        return pods.start_job(engine, settings, asked, record, path, overrides, batch, hardware, base_url)
    # The run's own events (from `queued` on) go to their route from this process too: routed first.
    webhooks.route(settings.runs / job_id, asked["webhook_url"], asked["webhook_secret"])
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
        webhooks.unroute(settings.runs / job_id)
        raise customer.Refused(422, str(exc)) from None
    try:
        sealed = secrets.seal(settings.service_secret, asked["webhook_secret"])
        queue.add(engine, job_id, asked["webhook_url"], sealed, "local", record)
    except Exception:
        forget(engine, settings, job_id)  # a job nobody would ever start: nothing of it stays
        raise
    lineage = json.loads((settings.runs / job_id / "run.json").read_text())
    est = lineage["estimate"]
    profiles = Profiles.load(settings.preset, model)
    gpus = profiles.hardware["gpu_count"] if profiles.hardware["gpu_type"] != "none" else 0
    return {
        "success": True,
        "job_id": job_id,
        "status": "queued",
        "pod_id": None,  # a local run: no pod
        "endpoint_url": f"{base_url}/training/status/{job_id}",
        "estimated_steps": est.get("steps"),
        "estimated_duration_minutes": round(est["hours"] * 60, 1),
        "estimated_cost_usd": round(
            est["hours"] * gpus * profiles.hardware["price_per_hour"]["on_demand"], 2
        ),
        "queue_position": queue.ahead_of(engine, job_id),
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
    if job.status not in registry.TERMINAL and queue.get(engine, job_id) is not None:
        out["queue_position"] = queue.ahead_of(engine, job_id)
    return out


def stop_job(engine: Engine, settings: Settings, job_id: str) -> dict:
    job = registry.get_job(job_id, settings.db_url) if receiver.valid_job_id(job_id) else None
    if job is None and receiver.valid_job_id(job_id) and queue.get(engine, job_id) is not None:
        raise customer.Refused(409, f"job {job_id}: its pod is being created; stop it again in a few seconds")
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
    if (settings.runs / job_id).is_dir():
        webhooks.relay(settings.runs / job_id, event)


async def json_body(request: Request):
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise customer.Refused(400, "the body is not JSON") from None


def router(
    engine: Engine,
    settings: Settings,
    authorized: Callable,
    public: Callable[[str], str],
    answerer: answer.Answerer,
    poke: Callable[[], None],
) -> APIRouter:
    api = APIRouter(tags=["training (the customer's app)"], dependencies=[Depends(authorized)])

    def refused(exc: customer.Refused) -> HTTPException:
        return HTTPException(exc.status, public(exc.message))

    @api.post("/training/start")
    async def training_start(request: Request):
        try:
            body = await json_body(request)
            answer_ = await run_in_threadpool(start_job, engine, settings, body, customer.public_url(request))
        except customer.Refused as exc:
            log.info("start refused (%d): %s", exc.status, public(exc.message))
            raise refused(exc) from None
        poke()  # the dispatcher starts it now if a slot is free
        log.info("job %s accepted (%s ahead)", answer_["job_id"], answer_["queue_position"])
        return answer_

    @api.get("/training/status/{job_id}")
    def training_status(job_id: str):
        try:
            return status_of(engine, settings, job_id)
        except customer.Refused as exc:
            raise refused(exc) from None

    @api.post("/training/stop/{job_id}")
    def training_stop(job_id: str):
        try:
            return stop_job(engine, settings, job_id)
        except customer.Refused as exc:
            raise refused(exc) from None

    @api.get("/models/list")
    def models_list():
        return {"models": versions.models(engine)}

    @api.post("/models/test")
    async def models_test(request: Request):
        try:
            body = await json_body(request)
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                raise customer.field_error(
                    "model", 'a model name ("NAME", its production version) or "NAME@vN"'
                )
            name, _, version = body.pop("model").partition("@")
            if "prompt" in body and "messages" not in body:
                body["messages"] = [{"role": "user", "content": body.pop("prompt")}]
            ask = models_api.Ask.model_validate(body)
            number = versions.parse_ref(f"{name}@{version}")[1] if version else None
            versions.check_name(name)
        except customer.Refused as exc:
            raise refused(exc) from None
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
            raise HTTPException(422, f"{where}: {exc.errors()[0]['msg']}") from None
        except versions.VersionError as exc:
            raise HTTPException(exc.status, public(str(exc))) from None
        return await models_api.answer_with(engine, settings.runs, public, answerer, name, number, ask)

    return api
