"""An accepted webhook event into the registry, once (the receiver has checked it: jobs/service/receiver.py).

One transaction per event: its event_id is stored (a replay is refused by the primary key, even between
two concurrent deliveries) and its sequence orders it (an older event never moves a job's status or step
back). A job's row takes the event's status, step, numbers and end fields; its metrics history one row per
(step, train|eval).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from jobs import registry
from jobs.registry import MetricPoint, TrainingJob, WebhookEvent
from jobs.service.db import write_session
from jobs.service.receiver import Event, Rejected

POINT_FIELDS = ("loss", "learning_rate", "grad_norm", "eval_loss")  # training_metrics_history columns
ATTEMPTS = 3
# Numbers per job are bounded: a job's metrics are read on every dashboard poll.
MAX_JOB_NUMBERS = 256


def apply(engine: Engine, event: Event, from_pod: bool = False) -> bool:
    """Steps 6-8 in one transaction; returns whether the event moved the job (False: an older one).
    Retried when a concurrent first delivery of a new job won the race to create its row, or when the
    database asks for a retry (deadlock, lock timeout). `from_pod`: the event is a service pod job's pod's
    own, whose progress only is taken (update_job)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with write_session(engine) as s:
                applied = apply_in(s, event, from_pod)
                s.commit()
                return applied
        except IntegrityError:
            # The primary key on event_id is the real replay guard: two deliveries of one event at once
            # both pass the first check, one commits, the other lands here.
            if seen(engine, event.event_id):
                raise Rejected(409, "replayed event_id") from None
            if attempt == ATTEMPTS:
                raise
        except OperationalError as exc:
            if not transient(exc):
                raise
    # Only transient errors get here: a 5xx the sender retries later (and the event stays spooled).
    raise Rejected(503, "database busy; retry")


def seen(engine: Engine, event_id: str) -> bool:
    with Session(engine) as s:
        return s.get(WebhookEvent, event_id) is not None


def transient(exc: OperationalError) -> bool:
    """Errors that a second try of the same transaction can get past."""
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40001", "40P01", "55P03") or "database is locked" in str(exc.orig)


def apply_in(s: Session, event: Event, from_pod: bool = False) -> bool:
    if s.get(WebhookEvent, event.event_id) is not None:
        raise Rejected(409, "replayed event_id")
    # FOR UPDATE (PostgreSQL; SQLite holds the whole database already): concurrent events of one job
    # take turns, so each compares its sequence with the one committed before it.
    job = s.get(TrainingJob, event.job_id, with_for_update=True)
    if job is None:
        if event.ours != "queued" or event.job is None:
            raise Rejected(404, "unknown job_id")
        job = register(s, event)
    s.add(
        WebhookEvent(
            event_id=event.event_id,
            job_id=event.job_id,
            sequence=event.sequence,
            status=event.ours,
            sent_at=int(event.sent_at),
        )
    )
    s.flush()  # a duplicate event_id fails here, before anything else is changed
    newer = job.last_event_sequence is None or event.sequence > job.last_event_sequence
    final = job.status in registry.TERMINAL  # completed/failed/cancelled stay so: no later event moves it
    if newer:
        job.last_event_sequence = event.sequence
        if not final:
            update_job(job, event, from_pod)
    # The latest numbers on the row, as the run's own process keeps them; a completed event's held-out
    # losses always (they come last and belong to the job whatever stopped it).
    # Nothing merges into a job that had ended before this event: its numbers are the ones it ended with.
    numbers = event.numbers
    if numbers and not final and (newer or event.ours == "completed"):
        job.metrics = merged(job.metrics or {}, numbers)  # a new dict: JSON columns track assignment
    if event.ours == "training" and event.step is not None and not final:
        record_point(s, event, stale=not newer)
    return newer


def register(s: Session, event: Event) -> TrainingJob:
    """A job this database has not seen: its first (queued) event says what it is."""
    info = event.job
    job = TrainingJob(
        id=event.job_id,
        status="queued",
        preset=info.preset,
        model=info.model,
        hardware=info.hardware,
        hyperparameters=info.hyperparameters,
        metrics={},
        estimated_cost=info.estimated_cost,
        created_at=when(event),
    )
    s.add(job)
    s.flush()  # a concurrent registration of the same job fails here (IntegrityError: apply retries)
    return job


def when(event: Event) -> datetime:
    return datetime.fromtimestamp(event.happened_at, UTC).replace(tzinfo=None)  # the registry's naive UTC


def merged(metrics: dict, numbers: dict) -> dict:
    """Known keys updated, new ones added while the job holds fewer than MAX_JOB_NUMBERS."""
    out = dict(metrics)
    for key, value in numbers.items():
        if key in out or len(out) < MAX_JOB_NUMBERS:
            out[key] = value
    return out


def update_job(job: TrainingJob, event: Event, from_pod: bool = False) -> None:
    status = event.ours
    if status == "queued" and job.status != "queued":
        # Statuses move forward: a queued event after the job started is a relaunch (RunPod launcher),
        # which is still the same job under way; its retry count and pod come below.
        status = job.status
    if from_pod:
        # A service pod job's pod reports progress only. Its end is its follower's to record (adapter
        # fetched, pod gone, cost counted): a pod's own `completed` made the row final while the pod still
        # ran, and a follower started after it found the job over and left the pod (`just chaos`, issue
        # 25). Pods, retries and cost are the follower's too: a relaunched pod counts retries from 0.
        if status in registry.TERMINAL:
            status = job.status
        owned = ("lora_artifact_path", "artifact_path", "error_message", "error", "runpod_pod_id")
        owned += ("retry_count", "actual_cost_usd", "gpu_hours")
        event = event.model_copy(update=dict.fromkeys(owned))
    job.status = status
    if event.step is not None:
        job.step = event.step
    if event.total_steps is not None:
        job.total_steps = event.total_steps
    if "epoch" in event.metrics:
        job.epoch = float(event.metrics["epoch"])
    if event.artifact is not None:
        job.artifact_path = event.artifact
    if event.error_text is not None:
        job.error_message = event.error_text
    # What the sender's registry knows of pods, cost and retries (new payloads).
    for ours, theirs in (
        ("pod_id", "runpod_pod_id"),
        ("retry_count", "retry_count"),
        ("actual_cost", "actual_cost_usd"),
        ("gpu_hours", "gpu_hours"),
    ):
        if getattr(event, theirs) is not None:
            setattr(job, ours, getattr(event, theirs))
    if status in registry.TERMINAL:
        job.completed_at = when(event)
    elif status in registry.RUNNING:
        job.started_at = job.started_at or when(event)
        # Running again (a resume after an interruption): the earlier stop no longer describes it.
        job.completed_at = None
        if event.error_text is None:
            job.error_message = None


def record_point(s: Session, event: Event, stale: bool) -> None:
    """As registry.record_metric: one row per (step, train|eval), a step logged again replaces it.
    A late older event only fills a gap: it never replaces what a newer event recorded."""
    numbers = event.numbers
    point = {k: float(numbers[k]) for k in POINT_FIELDS if k in numbers}
    if not point:
        return
    kind = MetricPoint.eval_loss.is_not(None) if "eval_loss" in point else MetricPoint.eval_loss.is_(None)
    same = (MetricPoint.job_id == event.job_id, MetricPoint.step == event.step, kind)
    if stale and s.scalar(select(MetricPoint.id).where(*same).limit(1)) is not None:
        return
    s.execute(delete(MetricPoint).where(*same))
    epoch = numbers.get("epoch")
    s.add(
        MetricPoint(
            job_id=event.job_id,
            step=event.step,
            epoch=float(epoch) if epoch is not None else None,
            **point,
        )
    )
