"""A start request when the service runs its jobs on RunPod (`jobs service --runs pods`): checked here as a
local start is (the data converted, the config rendered and accepted by Axolotl), priced at RunPod's live
price, then queued for the dispatcher, which starts `jobs launch` for it (jobs/service/queue.py): one pod
per job through the launcher every pod run uses, which creates it, follows it to its end and terminates it.
Whoever follows a pod holds its run's lock (jobs/pod/owner.py); the service follows again every pod job of
its own that nobody holds (`unfollowed`), so no pod outlives its follower unowned (issue 25).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from axolotl_configs.profiles import Profiles
from brightrun.errors import ConfigError
from jobs import preflight, registry, webhooks
from jobs.pod import owner
from jobs.service import customer, queue, start

log = logging.getLogger("jobs.service")


def live_price(hardware: dict, spot: bool) -> tuple[float, str]:
    """USD per GPU-hour now (RunPod's gpuTypes), or the hardware file's figure when RunPod does not say."""
    from jobs.pod import runpod
    from jobs.pod.pods import client

    try:
        return float(
            client().price(hardware["gpu_type"], int(hardware["gpu_count"]), spot=spot)
        ), "RunPod now"
    except (runpod.RunPodError, ValueError, TypeError):
        kind = "spot" if spot else "on_demand"
        return float(hardware["price_per_hour"][kind]), f"axolotl_configs/hardware/{hardware['name']}.yaml"


def pod_checks(profiles: Profiles, values: dict, hours: float, runpod_config: dict) -> list:
    """Preflight for a pod job, at its start (the launcher checks the volume and the price again before
    its pod): the pod can download the base model, and the estimate fits the job's own deadline."""
    limit = runpod_config.get("max_duration_hours")
    return [
        preflight.base_model(profiles, values, for_pod=True)[0],
        preflight.deadline(hours, limit, "runpod_config.max_duration_hours"),
    ]


def start_job(
    engine: Engine,
    settings,
    asked: dict,
    record: dict,
    path: Path,
    overrides: list[str],
    batch: int | None,
    hardware: str,
    base_url: str,
) -> dict:
    from axolotl_configs import estimate, render

    model, preset = record["model"], settings.preset
    try:
        data_dir, made = start.convert(settings.data_root, path)
    except ConfigError as exc:
        raise customer.Refused(422, str(exc)) from None
    try:
        checked = start.check_overrides(overrides, data_dir)
        with tempfile.TemporaryDirectory() as tmp:
            rendered = render.render(
                preset, model, str(data_dir), hardware, checked, f"{tmp}/config.yaml", targets_per_step=batch
            )
        est = estimate.estimate(preset, model, str(data_dir), hardware, rendered=rendered)
        spot = asked["runpod_config"].get("instance_type") == "spot"
        profiles = Profiles.load(preset, model, hardware)
        hw = profiles.hardware
        preflight.require(
            pod_checks(profiles, rendered.values, sum(est.hours.values()), asked["runpod_config"])
        )
        price, source = live_price(hw, spot)
    except BaseException as exc:
        if made:
            shutil.rmtree(data_dir, ignore_errors=True)
        if isinstance(exc, ConfigError):
            raise customer.Refused(422, str(exc)) from None
        raise
    hours = sum(est.hours.values())
    record |= {
        "data": str(data_dir),
        "overrides": checked,
        "batch_size": batch,
        "hardware": hardware,
        "spot": spot,
        "receiver": f"{base_url}/api/training/webhook",  # where the pod's events go (the service's receiver)
    }
    queue.ready(engine, asked["job_id"], record)
    return {
        "success": True,
        "job_id": asked["job_id"],
        "status": "queued",
        "pod_id": None,  # RunPod's id once the launcher has created the pod (status, and every event)
        "endpoint_url": f"{base_url}/training/status/{asked['job_id']}",
        "estimated_steps": est.numbers["total_steps"],
        "estimated_duration_minutes": round(hours * 60, 1),
        "estimated_cost_usd": round(hours * int(hw["gpu_count"]) * price, 2),
        "price_per_gpu_hour": price,
        "price_source": source,
        "queue_position": 0,  # its own pod: nothing to wait for
    }


def launcher_env(
    job: queue.ServiceJob, db_url: str, destination: tuple[str, str], service_secret: str
) -> dict:
    """A pod job's launcher (`jobs launch`, which creates and follows its pod): RunPod's and the volume's keys
    as the service has them; its own events to the customer with their secret; the pod's events to the
    service's receiver, signed with the job's own key (the pod never holds the customer's secret)."""
    # Not the API's tokens nor the model server's key; RunPod's, the volume's and the store's keys it needs.
    withheld = ("JOBS_API_TOKEN", "JOBS_API_TOKENS", "MODELS_SERVER_API_KEY", "WEBHOOK_RUN_KEYS")
    env = {k: v for k, v in os.environ.items() if k not in withheld}
    env["DATABASE_URL"] = db_url
    env["WEBHOOK_URL"], env["TRAINING_WEBHOOK_SECRET"] = destination
    env["BRIGHTRUN_POD_WEBHOOK_URL"] = job.request["receiver"]
    env["BRIGHTRUN_POD_WEBHOOK_KEY"] = webhooks.run_key(service_secret, job.job_id)
    return env


def launch_argv(job: queue.ServiceJob, runs: Path, poll: float) -> list[str]:
    asked = job.request
    argv = [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "launch", asked["preset"], asked["model"]]
    argv += ["--data", asked["data"], "--run-id", job.job_id, "--hardware", asked["hardware"]]
    argv += ["--poll", f"{poll:g}"] + (["--spot"] if asked.get("spot") else [])
    if asked.get("batch_size"):
        argv += ["--targets-per-step", str(asked["batch_size"])]
    if hours := (asked.get("runpod_config") or {}).get("max_duration_hours"):
        argv += ["--max-hours", f"{hours:g}"]  # the job's deadline: its pods end themselves then
    if volume := os.environ.get("BRIGHTRUN_NETWORK_VOLUME"):
        argv += ["--network-volume", volume]
    return argv + list(asked.get("overrides") or [])


def launcher_log(runs: Path, job_id: str) -> Path:
    """A pod job's launcher log: beside the runs (its run folder is the launcher's to create)."""
    folder = runs / ".launchers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{job_id}.log"


def unattended(
    engine: Engine, runs: Path, db_url: str, known: set[str], ended: set[str] = frozenset()
) -> list[str]:
    """Pod jobs dispatched whose launcher is gone before their pod was registered: `ended` (this service saw
    it exit), or not in `known` (the launchers this service watches) and its pid dead (the service was
    restarted meanwhile)."""
    with Session(engine) as s:
        ids = s.scalars(
            select(queue.ServiceJob.job_id).where(
                queue.ServiceJob.mode == "pod", queue.ServiceJob.dispatched_at.is_not(None)
            )
        ).all()
    out = []
    for job_id in ids:
        if job_id in known or registry.get_job(job_id, db_url) is not None:
            continue
        if job_id in ended:  # reaped here: its pid may be another process's by now
            out.append(job_id)
            continue
        try:
            os.kill(int(launcher_log(runs, job_id).with_suffix(".pid").read_text()), 0)
        except (OSError, ValueError):
            out.append(job_id)
    return out


def unfollowed(engine: Engine, runs: Path) -> list[queue.ServiceJob]:
    """This service's pod jobs whose pod exists (registered) and whose run is not over, that no process
    follows (jobs/pod/owner.py): after a killed launcher, a restart of the service, or a machine's reboot.
    The service follows them again (dispatcher.py), so a pod never depends on one launcher's life."""
    job = registry.TrainingJob
    with Session(engine) as s:
        rows = s.scalars(
            select(queue.ServiceJob)
            .join(job, job.id == queue.ServiceJob.job_id)
            .where(queue.ServiceJob.mode == "pod", job.status.not_in(registry.TERMINAL))
        ).all()
    out = []
    for row in rows:
        try:
            if (runs / row.job_id / "run.json").is_file() and owner.holder(runs / row.job_id) is None:
                out.append(row)
        except OSError as exc:  # one unreadable run folder must not stop the others' supervision
            log.error("job %s: its run folder: %s", row.job_id, exc)
    return out


def follow_argv(job: queue.ServiceJob, runs: Path, poll: float) -> list[str]:
    """`jobs follow JOB`: the follower a launcher runs after its create, for a run whose launcher is gone."""
    argv = [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "follow", job.job_id]
    return argv + ["--poll", f"{poll:g}"]


def launch_failed(runs: Path, job_id: str, code: int) -> str:
    """Why a pod job's launcher ended before its pod existed (RunPod refused, no capacity, the volume...):
    its own error line."""
    text = launcher_log(runs, job_id).read_text("utf-8", "replace").strip().splitlines()
    said = next((line for line in reversed(text) if line.startswith("error:")), f"the launcher exited {code}")
    return f"the pod could not be launched: {said.removeprefix('error:').strip()}"


# How long a launcher's create may go out after its last log line (its secrets' REST calls, then the
# create's own retries: each up to the client's 60 s), and how long the dispatcher waits on RunPod here.
CREATE_AFTER_S = 150.0
ORPHAN_MAX_TIME_S = 10.0


def orphan_pods(runs: Path, job_id: str, exited_at: float | None = None) -> tuple[str, float] | None:
    """For a pod job whose launcher died before registering its pod: any pod it made (named the job id),
    terminated and confirmed gone, each recorded in run.json as an attempt priced from the launcher's
    create time to our terminate (jobs/pod/billing.py). Returns what to add to the job's failure ("" when it
    made none) and what its pods cost, or None to ask again on a later tick: a terminate not confirmed yet,
    RunPod not answering, or still inside the listing lag after a create that may have gone out (`just
    chaos`, issue 25: a reboot between the create and the registry row left a pod billing with its job
    failed, and its cost uncounted). No create can have gone out before the launcher wrote run.json
    (jobs/pod/launch.py), so none is looked for then. `exited_at`: when this service saw the launcher exit
    (it reaped it): no create can go out after that, so the listing lag counts from then alone."""
    from jobs.pod import runpod
    from jobs.pod.pods import LISTING_LAG_S, client, forget_job_key, gone

    lineage = runs / job_id / "run.json"
    if not lineage.is_file():
        return "", 0.0
    # The create goes out after run.json, once the pod's secrets are made current (a few REST calls, each
    # retried up to a minute): the listing lag counts from the launcher's last sign of life, plus that.
    if exited_at:
        looked_until = exited_at + LISTING_LAG_S
    else:
        log_file = launcher_log(runs, job_id)
        last = max(lineage.stat().st_mtime, log_file.stat().st_mtime if log_file.is_file() else 0.0)
        looked_until = last + LISTING_LAG_S + CREATE_AFTER_S
    try:
        with client() as api:
            api.max_time = ORPHAN_MAX_TIME_S  # the dispatcher's tick waits on these calls: tried again later
            mine = [p for p in api.pods() if p.get("name") == job_id]
            if not mine and time.time() < looked_until:
                return None
            for pod in mine:
                api.terminate(pod["id"])
                record_orphan(lineage, pod)  # its billing ends as the first terminate returned
            if not all(gone(api.pod(pod["id"])) for pod in mine):
                return None  # asked again next tick: gone only once RunPod no longer has it
            forget_job_key(api, job_id)  # the launcher may have made its signing key's secret
    except (runpod.RunPodError, ConfigError, OSError) as exc:
        log.error("job %s: its launcher died during the launch; RunPod: %s (tried again)", job_id, exc)
        return None
    # From run.json, not this tick's listing: a pod terminated on an earlier tick may be listed no more.
    ended = [a for a in json.loads(lineage.read_text("utf-8")).get("attempts", []) if a.get("orphan")]
    if not ended:
        return "", 0.0
    ids = ", ".join(a["pod_id"] for a in ended)
    log.info("job %s: terminated pod(s) %s its dead launcher had made", job_id, ids)
    said = f"; its launcher stopped before recording pod {ids}, which was terminated"
    return said, sum(a["cost"] for a in ended)


def record_orphan(lineage_path: Path, pod: dict) -> list[dict]:
    """The terminated orphan as one of the run's attempts (run.json), billed from the launcher's create time
    (launch.create_ts; run.json's own time for a launcher older than that field) to now, at the pod's
    costPerHr (or the launch's price when RunPod says 0); an attempt already recorded keeps its end (the
    first run's id is its volume run). Returns the run's attempts."""
    from jobs import runfolder
    from jobs.pod import billing
    from jobs.pod.pods import new_attempt

    lineage = json.loads(lineage_path.read_text("utf-8"))
    attempts = lineage.setdefault("attempts", [])
    saved = next((a for a in attempts if a.get("pod_id") == pod["id"]), None)
    if saved is None:
        info = lineage.get("launch") or {}
        created = info.get("create_ts") or lineage_path.stat().st_mtime
        sha = (lineage.get("config") or {}).get("sha256", "")
        # RunPod answers a cost of 0 for an EXITED pod (REST v2 Pod.cost; `just chaos` saw one): the launch's
        # own price then, the bid for a spot pod (what RunPod bills it), the live price else.
        per_gpu = info.get("bid_per_gpu") if info.get("spot") else info.get("price_per_gpu_hour")
        price = float(pod.get("costPerHr") or 0) or float(per_gpu or 0) * int(info.get("gpus") or 1)
        saved = new_attempt({**pod, "costPerHr": price}, lineage_path.parent.name, sha, created)
        attempts.append(saved)
    elif saved.get("ended_ts"):  # recorded on an earlier tick (or ended by its launcher): its end stands
        return attempts
    # New, or saved by the launcher just before it died (before its registry row): ended now.
    saved |= {"orphan": True, "outcome": "terminated: launcher gone"}
    billing.end(saved)
    runfolder.write_json(lineage_path, lineage)
    return attempts
