"""The service's own jobs (POST /training/start): where each job's events go, and who starts it.

A started job has a `service_jobs` row (migration 0007): the customer's webhook URL, their secret sealed
(jobs/service/secrets.py), how it runs, what was asked. The dispatcher, a thread of the service, starts
- a local job (`--runs local`) when a slot is free, one per GPU, the rest queued: `python -m jobs execute
  JOB` in its own session, its environment holding that job's webhook URL and secret, so its events go to
  the customer signed as their route checks;
- a pod job (`--runs pods`) at once: `python -m jobs launch ...`, the launcher every pod run uses, which
  creates the pod, follows it to its end and terminates it. The pod reports to the service's receiver,
  signed with its job's own key; the service passes its progress on (training_api.relay). A launcher that
  ends before its pod exists leaves the job failed, with its error, and the customer told.
Everything is in the registry, so a service restarted with jobs queued starts them as if it had never
stopped. (A pod launcher's process is watched only by the service that started it: issue 25.)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import JSON, DateTime, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from jobs import registry, runfolder, webhooks
from jobs.runfolder import launcher_alive
from jobs.service import secrets, start
from jobs.status import set_status

log = logging.getLogger("jobs.service")
TICK_S = 1.0
# A dispatched job holds its slot until its launcher has written its pid (a second or two), then while
# that process lives; a launcher that died without an end frees it.
STARTING_S = 60


class ServiceJob(registry.Base):
    __tablename__ = "service_jobs"
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # a pod job's row comes later
    webhook_url: Mapped[str] = mapped_column(Text)
    webhook_secret: Mapped[str] = mapped_column(Text)  # sealed
    mode: Mapped[str] = mapped_column(String(8))
    request: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=registry.now)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


def add(engine: Engine, job_id: str, webhook_url: str, sealed: str, mode: str, request: dict) -> None:
    with Session(engine) as s:
        s.add(
            ServiceJob(
                job_id=job_id, webhook_url=webhook_url, webhook_secret=sealed, mode=mode, request=request
            )
        )
        s.commit()


def get(engine: Engine, job_id: str) -> ServiceJob | None:
    with Session(engine, expire_on_commit=False) as s:
        return s.get(ServiceJob, job_id)


def destination(engine: Engine, job_id: str, service_secret: str) -> tuple[str, str] | None:
    """(webhook URL, secret) of a service job; None for a job the service did not start."""
    row = get(engine, job_id)
    if row is None:
        return None
    return row.webhook_url, secrets.open_secret(service_secret, row.webhook_secret)


def ahead_of(engine: Engine, job_id: str) -> int:
    """Service jobs before this one that are not over: running, starting or waiting (its place in line)."""
    with Session(engine) as s:
        mine = s.get(ServiceJob, job_id)
        rows = s.execute(
            select(ServiceJob.job_id)
            .join(registry.TrainingJob, registry.TrainingJob.id == ServiceJob.job_id)
            .where(registry.TrainingJob.status.not_in(registry.TERMINAL))
            .where(ServiceJob.created_at < mine.created_at)
        ).all()
    return len(rows)


def busy(engine: Engine, runs: Path) -> int:
    """Slots in use: dispatched jobs whose launcher lives (or has just been started), not yet over."""
    cutoff = registry.now() - timedelta(seconds=STARTING_S)
    with Session(engine) as s:
        rows = s.execute(
            select(ServiceJob.job_id, ServiceJob.dispatched_at, registry.TrainingJob.status)
            .join(registry.TrainingJob, registry.TrainingJob.id == ServiceJob.job_id)
            .where(ServiceJob.dispatched_at.is_not(None), ServiceJob.mode == "local")
            .where(registry.TrainingJob.status.not_in(registry.TERMINAL))
        ).all()
    return sum(1 for job_id, at, _ in rows if at > cutoff or launcher_alive(runs / job_id) is not None)


def next_queued(engine: Engine) -> ServiceJob | None:
    """The oldest job waiting: a local one whose row is queued, or a pod job (its row comes with its pod)."""
    with Session(engine, expire_on_commit=False) as s:
        local = (
            select(ServiceJob)
            .join(registry.TrainingJob, registry.TrainingJob.id == ServiceJob.job_id)
            .where(ServiceJob.mode == "local", registry.TrainingJob.status == "queued")
        )
        pods = select(ServiceJob).where(ServiceJob.mode == "pod")
        found = [
            s.scalars(
                query.where(ServiceJob.dispatched_at.is_(None)).order_by(ServiceJob.created_at).limit(1)
            ).first()
            for query in (local, pods)
        ]
    return min((j for j in found if j), key=lambda j: (j.created_at, j.job_id), default=None)


def job_env(job_id: str, db_url: str, destination: tuple[str, str]) -> dict:
    """The run's environment: ours less what it must not hold (start.run_env), and its own job's
    webhook URL and secret, nothing of the service's."""
    from jobs.pod import stored

    env = start.run_env(job_id, db_url)
    env.pop("WEBHOOK_RUN_KEYS", None)  # their secret as they gave it: their route checks exactly that
    # Their bucket's keys: the run uploads its adapter there itself when it completes (jobs/pod/stored.py,
    # the one upload path); the trainer below it never gets them (jobs/run.py NOT_FOR_RUNS).
    env |= {name: os.environ[name] for name in stored.pod_vars()}
    env["WEBHOOK_URL"], env["TRAINING_WEBHOOK_SECRET"] = destination
    return env


def launcher_env(job: ServiceJob, db_url: str, destination: tuple[str, str], service_secret: str) -> dict:
    """A pod job's launcher (`jobs launch`, which creates and follows its pod): RunPod's and the volume's keys
    as the service has them; its own events to the customer with their secret; the pod's events to the
    service's receiver, signed with the job's own key (the pod never holds the customer's secret)."""
    env = {k: v for k, v in os.environ.items() if k not in ("JOBS_API_TOKEN", "WEBHOOK_RUN_KEYS")}
    env["DATABASE_URL"] = db_url
    env["WEBHOOK_URL"], env["TRAINING_WEBHOOK_SECRET"] = destination
    env["BRIGHTRUN_POD_WEBHOOK_URL"] = job.request["receiver"]
    env["BRIGHTRUN_POD_WEBHOOK_KEY"] = webhooks.run_key(service_secret, job.job_id)
    return env


def launch_argv(job: ServiceJob, runs: Path, poll: float) -> list[str]:
    asked = job.request
    argv = [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "launch", asked["preset"], asked["model"]]
    argv += ["--data", asked["data"], "--run-id", job.job_id, "--hardware", asked["hardware"]]
    argv += ["--poll", f"{poll:g}"] + (["--spot"] if asked.get("spot") else [])
    if asked.get("batch_size"):
        argv += ["--targets-per-step", str(asked["batch_size"])]
    if volume := os.environ.get("BRIGHTRUN_NETWORK_VOLUME"):
        argv += ["--network-volume", volume]
    return argv + list(asked.get("overrides") or [])


def launcher_log(runs: Path, job_id: str) -> Path:
    """A pod job's launcher log: beside the runs (its run folder is the launcher's to create)."""
    folder = runs / ".launchers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{job_id}.log"


def dispatch_once(
    engine: Engine, runs: Path, db_url: str, service_secret: str, slots: int, evaluate: bool, poll: float
) -> tuple[str, subprocess.Popen | None] | None:
    """Start the next waiting job (a local one when a slot is free; a pod job at once): (its id, the pod
    launcher's process or None), or None."""
    job = next_queued(engine)
    if job is None or (job.mode == "local" and busy(engine, runs) >= slots):
        return None
    with Session(engine) as s:
        row = s.get(ServiceJob, job.job_id, with_for_update=True)
        if row.dispatched_at is not None:  # another dispatcher (a second service on this registry) took it
            return None
        row.dispatched_at = registry.now()
        s.commit()
    destination = (job.webhook_url, secrets.open_secret(service_secret, job.webhook_secret))
    if job.mode == "pod":
        with launcher_log(runs, job.job_id).open("a") as out:
            proc = subprocess.Popen(
                launch_argv(job, runs, poll),
                cwd=runfolder.ROOT,
                env=launcher_env(job, db_url, destination, service_secret),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # it outlives a restart of the service, and follows its pod
            )
        log.info("job %s: launching its pod", job.job_id)
        return job.job_id, proc
    argv = [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "execute", job.job_id]
    start.spawn(
        argv + ([] if evaluate else ["--no-eval"]),
        runs / job.job_id,
        job_env(job.job_id, db_url, destination),
    )
    log.info("job %s started (local run)", job.job_id)
    return job.job_id, None


def launch_failed(engine: Engine, runs: Path, db_url: str, job_id: str, code: int) -> None:
    """A pod job whose launcher ended before its pod existed (RunPod refused, no capacity, the volume...):
    recorded failed with the launcher's own error line, and the customer told so."""
    if registry.get_job(job_id, db_url) is not None:
        return  # it registered: its own end is recorded (or the follower's exit is issue-free)
    text = launcher_log(runs, job_id).read_text("utf-8", "replace").strip().splitlines()
    said = next((line for line in reversed(text) if line.startswith("error:")), f"exit {code}")
    job = get(engine, job_id)
    run_dir = runs / job_id
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    with Session(engine) as s:
        s.add(
            registry.TrainingJob(
                id=job_id,
                status="queued",
                preset=job.request["preset"],
                model=job.request["model"],
                hardware=job.request["hardware"],
                hyperparameters=job.request.get("hyperparameters") or {},
                metrics={},
                log_path=str(launcher_log(runs, job_id)),
            )
        )
        s.commit()
    message = f"the pod could not be launched: {said.removeprefix('error:').strip()}"
    set_status(run_dir, job_id, "failed", db_url, error_message=message, completed_at=registry.now())
    log.warning("job %s: %s", job_id, message)


class Dispatcher:
    """The service's thread that starts queued jobs (and notices a pod launcher that ended before its pod
    existed); stopped with the service."""

    def __init__(
        self,
        engine: Engine,
        runs: Path,
        db_url: str,
        service_secret: str,
        slots: int,
        evaluate: bool,
        poll: float,
        route: Callable[[str], None],
    ):
        self.args = (engine, runs, db_url, service_secret, slots, evaluate, poll)
        self.route = route  # a job's events from this process go to its customer (training_api)
        self.launchers: dict[str, subprocess.Popen] = {}
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="dispatcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def poke(self) -> None:
        self.wake.set()

    def tick(self) -> None:
        while started := dispatch_once(*self.args):
            job_id, proc = started
            if proc is not None:
                self.launchers[job_id] = proc
        engine, runs, db_url = self.args[:3]
        for job_id, proc in list(self.launchers.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.launchers[job_id]
            if code != 0:
                self.route(job_id)
                launch_failed(engine, runs, db_url, job_id, code)

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 -- the loop must outlive a database blip; said, retried
                log.error("dispatcher: %s: %s", type(exc).__name__, exc)
            self.wake.wait(TICK_S)
            self.wake.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(5)
