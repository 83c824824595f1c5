"""The webhook receiver: check a signed status event (jobs/webhooks.py sends them); jobs/service/store.py
then applies it once.

Two payload shapes are accepted while senders move over: the customer-compatible one (jobs/payload.py:
their seven statuses with ours in `brightrun_status`, `lora_artifact_path`, `error_message`, ISO-8601
times, evaluation numbers under `eval`) and the one before it (our eight statuses, `artifact_path`,
`error`, unix-second times, everything under `metrics`). The replay window is checked on `timestamp`
either way.

Checks run cheapest and least trusting first, and every rejection writes nothing: size (413), content
type (415), signature over the raw bytes (401), shape (400), timestamp window (401), replayed event_id
(409, checked again by store.py's primary key), unknown job (404, store.py).
"""

from __future__ import annotations

import hmac
import json
import time
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
from starlette.requests import ClientDisconnect, Request

from jobs import payload, registry, webhooks
from jobs.runfolder import RUN_ID

MAX_BODY = 1_048_576
MAX_SKEW_SECONDS = 300

Number = StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
# A time: unix seconds (payloads before ISO) or an ISO-8601 string with its zone.
Moment = Annotated[StrictInt, Field(ge=0, le=253402300799)] | Annotated[str, Field(max_length=40)]
Status = Literal[registry.STATUSES]  # type: ignore[valid-type]
# Numbers per event are bounded (and per job: jobs/service/store.py).
MAX_EVENT_NUMBERS = 64
Numbers = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], Number], Field(max_length=MAX_EVENT_NUMBERS)
]


class Rejected(Exception):
    """An answer other than 200: its status and the {"error": ...} message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def valid_job_id(value: str) -> bool:
    """A job id names a run folder: the run id's rule (jobs/runfolder.py)."""
    return bool(RUN_ID.fullmatch(value))


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


def claimed_job_id(body: bytes) -> str | None:
    """The job id an unverified body names, by its rule, or None: read before the signature is checked,
    as it names the key (the body is capped)."""
    try:
        job_id = json.loads(body).get("job_id")
    except (ValueError, RecursionError, AttributeError):
        return None
    return job_id if isinstance(job_id, str) and valid_job_id(job_id) else None


def verify(
    content_type: str | None, signature: str | None, body: bytes, secret: str, per_run: bool = False
) -> Event:
    """Steps 2-5: content type, signature (constant time, over the raw bytes), shape, timestamp.
    per_run: the body must be signed with its own job's key (webhooks.run_key), not the master."""
    if not is_json(content_type):
        raise Rejected(415, "Content-Type must be application/json")
    key = secret
    if per_run:
        job_id = claimed_job_id(body)
        if job_id is None:
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
