"""The webhook receiver: check a signed status event (jobs/webhooks.py sends them), then apply it once.

Two payload shapes are accepted while senders move over: the customer-compatible one (jobs/payload.py:
their seven statuses with ours in `brightrun_status`, `lora_artifact_path`, `error_message`, ISO-8601
times, evaluation numbers under `eval`) and the one before it (our eight statuses, `artifact_path`,
`error`, unix-second times, everything under `metrics`). The replay window is checked on `timestamp`
either way.

Checks run cheapest and least trusting first, and every rejection writes nothing: size (413), content
type (415), signature over the raw bytes (401), shape (400), timestamp window (401), replayed event_id
(409), unknown job (404). An accepted event is applied in one transaction: its event_id is stored
(a replay is refused by the primary key, even between two concurrent deliveries) and its sequence
orders it (an older event never moves a job's status or step back).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect, Request

from jobs import payload, registry, webhooks
from jobs.registry import MetricPoint, TrainingJob, WebhookEvent
from jobs.service.db import write_session

MAX_BODY = 1_048_576
MAX_SKEW_SECONDS = 300
JOB_ID = re.compile(r"[0-9A-Za-z._-]{1,64}")
POINT_FIELDS = ("loss", "learning_rate", "grad_norm", "eval_loss")  # training_metrics_history columns
ACTIVE = ("preprocessing", "model_loaded", "training")
ATTEMPTS = 3

Number = StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
# A time: unix seconds (payloads before ISO) or an ISO-8601 string with its zone.
Moment = Annotated[StrictInt, Field(ge=0, le=253402300799)] | Annotated[str, Field(max_length=40)]
Status = Literal[registry.STATUSES]  # type: ignore[valid-type]
# Numbers per event and per job are bounded: a job's metrics are read on every dashboard poll.
MAX_EVENT_NUMBERS = 64
MAX_JOB_NUMBERS = 256
Numbers = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], Number], Field(max_length=MAX_EVENT_NUMBERS)
]


class Rejected(Exception):
    """An answer other than 200: its status and the {"error": ...} message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def valid_job_id(value: str) -> bool:
    # "." and ".." match the character class but would name the runs folder or its parent.
    return bool(JOB_ID.fullmatch(value)) and value not in (".", "..")


class JobInfo(BaseModel):
    """What a `queued` event says about a job, so a receiver with its own database can register it."""

    model_config = ConfigDict(extra="ignore")
    preset: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=64)
    hardware: str = Field(min_length=1, max_length=64)
    estimated_cost: Number | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("hyperparameters")
    @classmethod
    def _finite(cls, value: dict) -> dict:
        # NaN/Infinity parse, but PostgreSQL's JSON refuses them: a 400 now, not a 500 at the INSERT.
        json.dumps(value, allow_nan=False)
        return value


class Event(BaseModel):
    # Unknown fields are ignored (a newer sender may add some); known ones are strict: no "3" for 3.
    model_config = ConfigDict(extra="ignore")
    event_id: str = Field(pattern=r"^[0-9a-zA-Z_-]{1,64}$")
    sequence: StrictInt = Field(ge=1, le=2**31 - 1)
    job_id: str = Field(min_length=1, max_length=64)
    status: Status  # the customer's seven (new payloads) or our eight (older ones)
    brightrun_status: Status | None = None  # ours, when `status` is the customer's
    step: StrictInt | None = Field(default=None, ge=0, le=2**31 - 1)
    total_steps: StrictInt | None = Field(default=None, ge=0, le=2**31 - 1)
    metrics: Numbers = Field(default_factory=dict)
    eval: Numbers = Field(default_factory=dict)
    other_metrics: Numbers = Field(default_factory=dict)
    timestamp: Moment  # when this delivery was sent: the replay window is checked on it
    # When it happened (a replay hours later keeps it); the job's dates come from it. Older senders
    # have only `timestamp`.
    occurred_at: Moment | None = None
    lora_artifact_path: str | None = Field(default=None, max_length=4096)
    artifact_path: str | None = Field(default=None, max_length=4096)  # before lora_artifact_path
    error_message: str | None = Field(default=None, max_length=65536)
    error: str | None = Field(default=None, max_length=65536)  # before error_message
    retry_count: StrictInt | None = Field(default=None, ge=0, le=10_000)
    runpod_pod_id: str | None = Field(default=None, max_length=64)
    actual_cost_usd: Number | None = None
    gpu_hours: Number | None = None
    job: JobInfo | None = None

    @field_validator("timestamp", "occurred_at")
    @classmethod
    def _moment(cls, value):
        if isinstance(value, str):
            try:
                if not 0 <= payload.parse_time(value) <= 253402300799:  # as for unix seconds
                    raise ValueError
            except (ValueError, OverflowError):
                raise ValueError(
                    "an ISO-8601 UTC time such as 2026-12-01T10:30:00Z, or unix seconds"
                ) from None
        return value

    @model_validator(mode="after")
    def _step_within_total(self):
        if self.step is not None and self.total_steps is not None and self.step > self.total_steps:
            raise ValueError("step is past total_steps")
        return self

    @property
    def ours(self) -> str:
        """Our status: what the registry records."""
        return self.brightrun_status or self.status

    @property
    def sent_at(self) -> float:
        return payload.parse_time(self.timestamp)

    @property
    def happened_at(self) -> float:
        return payload.parse_time(self.occurred_at) if self.occurred_at is not None else self.sent_at

    @property
    def artifact(self) -> str | None:
        return self.lora_artifact_path or self.artifact_path

    @property
    def error_text(self) -> str | None:
        return self.error_message if self.error_message is not None else self.error

    @property
    def numbers(self) -> dict:
        """Every number the event carries, under our names (older payloads put them all in metrics)."""
        return {**self.other_metrics, **self.metrics, **self.eval}

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str) -> str:
        if not valid_job_id(value):
            raise ValueError("must be 1-64 characters of 0-9 A-Z a-z . _ - (and not . or ..)")
        return value


def inline_schema(model: type[BaseModel]) -> dict:
    """The model's JSON schema with its $defs inlined, to stand alone inside the OpenAPI document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


async def read_body(request: Request) -> bytes:
    """The raw body, refused past MAX_BODY: by Content-Length first, then while reading, since a
    chunked or lying request says nothing true about its size. Never holds more than MAX_BODY + 1."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "invalid Content-Length")
        if int(declared) > MAX_BODY:
            raise Rejected(413, f"body over {MAX_BODY} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise Rejected(413, f"body over {MAX_BODY} bytes")
    except ClientDisconnect:
        raise Rejected(400, "the client went away before the body was read") from None
    return bytes(body)


def is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


def verify(
    content_type: str | None, signature: str | None, body: bytes, secret: str, per_run: bool = False
) -> Event:
    """Steps 2-5: content type, signature (constant time, over the raw bytes), shape, timestamp.
    per_run: the body must be signed with its own job's key (webhooks.run_key), not the master."""
    if not is_json(content_type):
        raise Rejected(415, "Content-Type must be application/json")
    key = secret
    if per_run:
        # The job id names the key, so it is read before the signature is checked (the body is capped).
        try:
            job_id = json.loads(body).get("job_id")
        except (ValueError, RecursionError, AttributeError):
            job_id = None
        if not isinstance(job_id, str) or not valid_job_id(job_id):
            raise Rejected(401, f"missing or invalid {webhooks.SIGNATURE_HEADER}")
        key = webhooks.run_key(secret, job_id)
    expected = webhooks.sign(key, body)
    if not signature or not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
        raise Rejected(401, f"missing or invalid {webhooks.SIGNATURE_HEADER}")
    try:
        event = Event.model_validate_json(body)
    except ValidationError as exc:
        raise Rejected(400, describe(exc)) from None
    if abs(time.time() - event.sent_at) > MAX_SKEW_SECONDS:
        raise Rejected(401, "stale or future timestamp")
    return event


def describe(exc: ValidationError) -> str:
    """Pydantic's errors without the input values (they may be large, and are the sender's data)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        if err["type"] == "json_invalid":
            return "malformed JSON"
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid event: " + "; ".join(parts[:5])


def apply(engine: Engine, event: Event) -> bool:
    """Steps 6-8 in one transaction; returns whether the event moved the job (False: an older one).
    Retried when a concurrent first delivery of a new job won the race to create its row, or when the
    database asks for a retry (deadlock, lock timeout)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with write_session(engine) as s:
                applied = apply_in(s, event)
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


def apply_in(s: Session, event: Event) -> bool:
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
            update_job(job, event)
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


def update_job(job: TrainingJob, event: Event) -> None:
    status = event.ours
    if status == "queued" and job.status != "queued":
        # Statuses move forward: a queued event after the job started is a relaunch (RunPod launcher),
        # which is still the same job under way; its retry count and pod come below.
        status = job.status
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
    elif status in ACTIVE:
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
