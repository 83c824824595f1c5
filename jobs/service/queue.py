"""The service's own jobs (POST /training/start): where each job's events go, and one run at a time per
GPU, the rest queued.

A started job is registered `queued` with a `service_jobs` row (migration 0007): the customer's webhook
URL, their secret sealed (jobs/service/secrets.py), how it runs. The dispatcher, a thread of the service,
starts the oldest queued job whenever a slot is free: `python -m jobs execute JOB` in its own session
(it outlives a restart of the service), its environment holding that job's webhook URL and secret, so its
events go to the customer signed as their route checks. Everything is in the registry, so a service
restarted with jobs queued starts them as if it had never stopped.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import JSON, DateTime, ForeignKey, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from jobs import registry
from jobs.runfolder import launcher_alive
from jobs.service import secrets, start

log = logging.getLogger("jobs.service")
TICK_S = 1.0
# A dispatched job holds its slot until its launcher has written its pid (a second or two), then while
# that process lives; a launcher that died without an end frees it.
STARTING_S = 60


class ServiceJob(registry.Base):
    __tablename__ = "service_jobs"
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("training_jobs.id"), primary_key=True)
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
    with Session(engine, expire_on_commit=False) as s:
        return s.scalars(
            select(ServiceJob)
            .join(registry.TrainingJob, registry.TrainingJob.id == ServiceJob.job_id)
            .where(ServiceJob.dispatched_at.is_(None), registry.TrainingJob.status == "queued")
            .order_by(ServiceJob.created_at, ServiceJob.job_id)
            .limit(1)
        ).first()


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


def dispatch_once(
    engine: Engine, runs: Path, db_url: str, service_secret: str, slots: int, evaluate: bool
) -> str | None:
    """Start the next queued job if a slot is free; its id, or None."""
    if busy(engine, runs) >= slots:
        return None
    job = next_queued(engine)
    if job is None:
        return None
    with Session(engine) as s:
        row = s.get(ServiceJob, job.job_id, with_for_update=True)
        if row.dispatched_at is not None:  # another dispatcher (a second service on this registry) took it
            return None
        row.dispatched_at = registry.now()
        s.commit()
    run_dir = runs / job.job_id
    argv = [sys.executable, "-m", "jobs", "--runs-dir", str(runs), "execute", job.job_id]
    env = job_env(
        job.job_id, db_url, (job.webhook_url, secrets.open_secret(service_secret, job.webhook_secret))
    )
    start.spawn(argv + ([] if evaluate else ["--no-eval"]), run_dir, env)
    log.info("job %s started (local run)", job.job_id)
    return job.job_id


class Dispatcher:
    """The service's thread that starts queued jobs; stopped with the service."""

    def __init__(
        self, engine: Engine, runs: Path, db_url: str, service_secret: str, slots: int, evaluate: bool
    ):
        self.args = (engine, runs, db_url, service_secret, slots, evaluate)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="dispatcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def poke(self) -> None:
        self.wake.set()

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                while dispatch_once(*self.args):
                    pass
            except Exception as exc:  # noqa: BLE001 -- the loop must outlive a database blip; said, retried
                log.error("dispatcher: %s: %s", type(exc).__name__, exc)
            self.wake.wait(TICK_S)
            self.wake.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(5)
