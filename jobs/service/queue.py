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
stopped, and follows again every pod of its jobs that no process follows (jobs/pod/owner.py's lock).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import JSON, DateTime, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from jobs import registry, webhooks
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
    ready_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # the start fully checked
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


def claim(engine: Engine, job_id: str, webhook_url: str, sealed: str, mode: str) -> bool:
    """The job id's row, first thing in a start: False when the id is taken (the same job_id again, even
    while the other request is still being checked)."""
    try:
        with Session(engine) as s:
            s.add(
                ServiceJob(
                    job_id=job_id, webhook_url=webhook_url, webhook_secret=sealed, mode=mode, request={}
                )
            )
            s.commit()
    except IntegrityError:
        return False
    return True


def ready(engine: Engine, job_id: str, request: dict) -> None:
    """The start is checked whole: what was asked is recorded and the dispatcher may start it."""
    with Session(engine) as s:
        row = s.get(ServiceJob, job_id)
        row.request, row.ready_at = request, registry.now()
        s.commit()


def request_stop(engine: Engine, job_id: str) -> None:
    """A stop for a pod job whose pod does not exist yet: the dispatcher carries it out once it can
    (before the launch, or once the pod is registered: jobs/service/dispatcher.py)."""
    with Session(engine) as s:
        row = s.get(ServiceJob, job_id, with_for_update=True)
        row.request = {**row.request, "stop": True}
        s.commit()


def stops(engine: Engine) -> list[ServiceJob]:
    with Session(engine, expire_on_commit=False) as s:
        return [
            row
            for row in s.scalars(select(ServiceJob).where(ServiceJob.mode == "pod"))
            if row.request.get("stop")
        ]


def stopped(engine: Engine, job_id: str, dispatched: bool) -> None:
    """The stop carried out: the flag cleared (and an undispatched job never dispatched)."""
    with Session(engine) as s:
        row = s.get(ServiceJob, job_id, with_for_update=True)
        row.request = {k: v for k, v in row.request.items() if k != "stop"}
        if not dispatched:
            row.dispatched_at = registry.now()
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


def in_use(engine: Engine, runs: Path) -> list[list[int]]:
    """The GPUs of each local job that holds some: dispatched, not over, its launcher alive (or just
    started). One entry per job ([] on a CPU machine)."""
    cutoff = registry.now() - timedelta(seconds=STARTING_S)
    with Session(engine) as s:
        rows = s.execute(
            select(ServiceJob.job_id, ServiceJob.dispatched_at, ServiceJob.request)
            .join(registry.TrainingJob, registry.TrainingJob.id == ServiceJob.job_id)
            .where(ServiceJob.dispatched_at.is_not(None), ServiceJob.mode == "local")
            .where(registry.TrainingJob.status.not_in(registry.TERMINAL))
        ).all()
    return [
        list(request.get("gpus") or [])
        for job_id, at, request in rows
        if at > cutoff or launcher_alive(runs / job_id) is not None
    ]


def free_gpus(engine: Engine, runs: Path, gpus: int, per_job: int) -> list[int] | None:
    """The GPUs the next local job gets (CUDA_VISIBLE_DEVICES), [] on a CPU machine; None: wait."""
    held = in_use(engine, runs)
    if gpus == 0:
        return None if held else []  # one run at a time on the CPU
    used = {g for job in held for g in job}
    free = [g for g in range(gpus) if g not in used]
    return free[:per_job] if len(free) >= per_job else None


def ahead_of(engine: Engine, runs: Path, job_id: str, slots: int) -> int:
    """Jobs that start before this one does: those holding the slots it waits for and those waiting
    before it. 0: it starts now."""
    with Session(engine) as s:
        mine = s.get(ServiceJob, job_id)
        if mine.dispatched_at is not None:
            return 0  # started already (the dispatcher may take it between the start's check and its answer)
        waiting = s.execute(
            select(ServiceJob.job_id)
            .join(registry.TrainingJob, registry.TrainingJob.id == ServiceJob.job_id)
            .where(ServiceJob.mode == "local", ServiceJob.dispatched_at.is_(None))
            .where(registry.TrainingJob.status == "queued", ServiceJob.created_at < mine.created_at)
        ).all()
    return max(0, len(in_use(engine, runs)) + len(waiting) - slots + 1)


def next_queued(engine: Engine) -> ServiceJob | None:
    """The oldest job waiting: a local one whose row is queued, or a pod job (its row comes with its pod)."""
    with Session(engine, expire_on_commit=False) as s:
        local = (
            select(ServiceJob)
            .join(registry.TrainingJob, registry.TrainingJob.id == ServiceJob.job_id)
            .where(ServiceJob.mode == "local", registry.TrainingJob.status == "queued")
        )
        pods = select(ServiceJob).where(ServiceJob.mode == "pod")
        waiting = [ServiceJob.dispatched_at.is_(None), ServiceJob.ready_at.is_not(None)]
        found = [
            s.scalars(query.where(*waiting).order_by(ServiceJob.created_at).limit(1)).first()
            for query in (local, pods)
        ]
    return min((j for j in found if j), key=lambda j: (j.created_at, j.job_id), default=None)


def job_env(job_id: str, db_url: str, destination: tuple[str, str], devices: list[int]) -> dict:
    """The run's environment: ours less what it must not hold (start.run_env), and its own job's
    webhook URL and secret, nothing of the service's."""
    from jobs.pod import stored

    env = start.run_env(job_id, db_url)
    env.pop("WEBHOOK_RUN_KEYS", None)  # their secret as they gave it: their route checks exactly that
    # Their bucket's keys: the run uploads its adapter there itself when it completes (jobs/pod/stored.py,
    # the one upload path); the trainer below it never gets them (jobs/run.py NOT_FOR_RUNS).
    env |= {name: os.environ[name] for name in stored.pod_vars()}
    env["WEBHOOK_URL"], env["TRAINING_WEBHOOK_SECRET"] = destination
    if devices:  # its own GPUs: another job on this machine has the others
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in devices)
    return env


class NotStarted(Exception):
    def __init__(self, job: ServiceJob, why: str):
        super().__init__(why)
        self.job, self.why = job, why


def fail(
    engine: Engine, runs: Path, db_url: str, job_id: str, message: str, status: str = "failed", **row
) -> None:
    """A job that could not be started (its launcher ended before its pod existed, its process could not
    be made): recorded failed with why, and its customer told (the caller routed its events). `row`: other
    columns (the cost of a pod its dead launcher made)."""
    job = get(engine, job_id)
    run_dir = runs / job_id
    if registry.get_job(job_id, db_url) is None:  # a pod job: its row would have come with its pod
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        with Session(engine) as s:
            s.add(
                registry.TrainingJob(
                    id=job_id,
                    status="queued",
                    preset=job.request.get("preset", "?"),
                    model=job.request.get("model", "?"),
                    hardware=job.request.get("hardware", "?"),
                    hyperparameters=job.request.get("hyperparameters") or {},
                    metrics={},
                    log_path=str(runs / ".launchers" / f"{job_id}.log"),  # pods.launcher_log
                )
            )
            s.commit()
    elif registry.get_job(job_id, db_url).status in registry.TERMINAL:
        return
    set_status(run_dir, job_id, status, db_url, error_message=message, completed_at=registry.now(), **row)
    log.warning("job %s: %s", job_id, message)


def resend_all(engine: Engine, runs: Path, route: Callable[[str], None]) -> int:
    """At the service's start: what its jobs' spools still hold undelivered (an outage, a restart), to
    each job's customer, under the order rule."""
    with Session(engine) as s:
        ids = s.scalars(select(ServiceJob.job_id)).all()
    sent = 0
    for job_id in ids:
        if webhooks.pending(runs / job_id):
            route(job_id)
            sent += webhooks.resend_pending(runs / job_id)
    return sent
