"""What a status event says, in the customer's names (docs/webhook-contract.md), built from ours.

The customer's receiver applies each event to their `training_jobs` row and, for an event with
`metrics` and a `step`, inserts one `training_metrics_history` row with every key of `metrics` as a
column. Their database errors are never checked: a field under the wrong name, a status outside their
CHECK, or a metrics key that is not a column answers 200 and the data is gone. So the rules here:

- `status` is always one of their seven; ours (eight, with `interrupted`) goes in `brightrun_status`.
  An interruption that nothing will resume is `failed` with an `error_message` that says how to resume;
  one that the RunPod launcher will relaunch (a preemption, a pod that died) stays `training` with a
  `message`; the launcher's relaunch itself is `training` with the new `retry_count` and pod id.
- `metrics` holds only their history columns (loss, learning_rate, grad_norm, epoch) and only on a
  logged training step: evaluation numbers go under `eval`, anything else under `other_metrics`.
- `lora_artifact_path` on completion, `error_message` whenever there is an error (null on the first
  event of a resumed attempt, to clear the stop's text), `timestamp` and `occurred_at` ISO-8601 UTC.
- No key is sent as null unless it means "clear this": their handler writes a present key as it is.
- Their row's other columns that we know go as extra keys (their handler ignores them today):
  runpod_pod_id, actual_cost_usd, gpu_hours, retry_count, current_epoch, estimated_cost_usd, started_at.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

CUSTOMER_STATUSES = (
    "queued",
    "preprocessing",
    "model_loaded",
    "training",
    "completed",
    "failed",
    "cancelled",
)
HISTORY_KEYS = ("loss", "learning_rate", "grad_norm", "epoch")  # their training_metrics_history columns
TRAIN_KEYS = ("loss", "learning_rate", "grad_norm")  # a logged training step has at least one
RELAUNCH_MESSAGE = (
    "interrupted on the pod (preempted or stopped): the launcher relaunches it from its last checkpoint"
)


def iso(moment: datetime | float | None = None) -> str:
    """ISO-8601 UTC with milliseconds and Z, as JavaScript's Date.toISOString() writes it."""
    if moment is None:
        moment = datetime.now(UTC)
    elif isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, UTC)
    elif moment.tzinfo is None:  # the registry keeps naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(value: int | float | str) -> float:
    """Unix seconds from an ISO-8601 string (new payloads) or a number (payloads before ISO)."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if moment.tzinfo is None:
        raise ValueError("an ISO-8601 time needs its zone (Z or +00:00)")
    return moment.timestamp()


def split_metrics(metrics: dict) -> tuple[dict, dict, dict]:
    """(their history columns, evaluation numbers, the rest); non-finite values are the caller's."""
    history = {k: metrics[k] for k in HISTORY_KEYS if k in metrics}
    if not any(k in metrics for k in TRAIN_KEYS):
        history = {}  # an eval-only log or a summary: not a training step, no history row on their side
    evaluation = {k: v for k, v in metrics.items() if k.startswith(("eval_", "heldout_"))}
    other = {k: v for k, v in metrics.items() if k not in HISTORY_KEYS and k not in evaluation}
    return history, evaluation, other


def row_fields(row) -> dict:
    """Their training_jobs columns that our registry row knows (None where it does not)."""
    if row is None:
        return {}
    return {
        "runpod_pod_id": row.pod_id,
        "actual_cost_usd": row.actual_cost,
        "gpu_hours": row.gpu_hours,
        "retry_count": row.retry_count,
        "current_epoch": row.epoch,
        "estimated_cost_usd": row.estimated_cost,
        "started_at": iso(row.started_at) if row.started_at else None,
    }


def customer_status(status: str, relaunch: bool) -> str:
    if status == "interrupted":
        return "training" if relaunch else "failed"
    if status == "queued" and relaunch:
        return "training"  # the launcher's relaunch: the job is still under way, on a new pod
    return status


def build(job_id: str, status: str, fields: dict, row=None) -> dict:
    """The event body before event_id, sequence and timestamp. `fields` may hold: step, total_steps,
    metrics (any of our keys), lora_artifact_path, error_message (None: clear it), message, job,
    relaunch (a follower will relaunch this run), resumable, and any of row_fields' keys."""
    fields = dict(fields)
    relaunch = bool(fields.pop("relaunch", False))
    metrics = fields.pop("metrics", None) or {}
    nonfinite = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    finite = {k: v for k, v in metrics.items() if k not in nonfinite}
    history, evaluation, other = split_metrics(finite)
    if status != "training":
        # Only a logged training step is a history row on their side; a final event's last numbers
        # would insert that step again.
        other, history = {**history, **other}, {}
    event = {
        "job_id": job_id,
        "status": customer_status(status, relaunch),
        "brightrun_status": status,
        "occurred_at": iso(),
    }
    for key, value in row_fields(row).items():
        if value is not None:
            event[key] = value
    if "epoch" in finite:
        event["current_epoch"] = finite["epoch"]
    clear_error = "error_message" in fields and fields["error_message"] is None
    for key, value in fields.items():
        if value is not None:
            event[key] = value
    if clear_error:
        event["error_message"] = None
    if status == "interrupted" and not relaunch:
        event["resumable"] = fields.get("resumable", True)
    if status == "interrupted" and relaunch:
        # Still under way from their side: the error text becomes a message, their error column stays empty.
        event.pop("error_message", None)
        event["message"] = RELAUNCH_MESSAGE
    if history:
        event["metrics"] = history
    if evaluation:
        event["eval"] = evaluation
    if other:
        event["other_metrics"] = other
    if nonfinite:
        event["nonfinite_metrics"] = nonfinite  # JSON has no NaN: a diverged loss is named, not sent
    assert event["status"] in CUSTOMER_STATUSES, event["status"]
    return event
