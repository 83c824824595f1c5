"""A run's status changes: the registry row and the signed event, together.

Every status change of a run goes through set_status, so the customer's app (webhooks) and our registry
never disagree about what happened: the row is written first, then the event is built from the row as
written (pod, cost, retries, epoch ride along) and spooled for delivery (jobs/webhooks.py).
"""

from __future__ import annotations

from pathlib import Path

from jobs import registry, webhooks


class Cancelled(Exception):
    """The run was cancelled: nothing moves it out of that status (cancel wins, whatever the timing)."""


def set_status(
    run_dir: Path | str, run_id: str, status: str, db_url: str | None = None, event: dict | None = None, **row
) -> registry.TrainingJob:
    """Write `status` and the other `row` columns, then emit the event (`event`: what only the event
    says: step, metrics, lora_artifact_path, error_message, message, relaunch, job). Returns the row.
    Raises Cancelled, writing and sending nothing, when the run is cancelled and `status` is another."""
    with registry.session(db_url) as s:
        # FOR UPDATE on PostgreSQL: a cancel committing now is seen here, not overwritten.
        job = s.get(registry.TrainingJob, run_id, with_for_update=True)
        if job is None:
            raise KeyError(run_id)
        if job.status == "cancelled" and status != "cancelled":
            raise Cancelled(f"run {run_id} is cancelled")
        job.status = status
        for key, value in row.items():
            setattr(job, key, value)
        s.commit()
    emit(run_dir, job, status, **(event or {}))
    return job


def emit(run_dir: Path | str, row: registry.TrainingJob, status: str, **event) -> None:
    """The event alone, for a change already written (or a step logged while training)."""
    if not Path(run_dir).is_dir():
        # A job this machine knows only from its registry (its run lives elsewhere): its own sender
        # reports it; there is no spool here to number and keep the event.
        return
    fields = {"step": row.step, "total_steps": row.total_steps}
    if row.status in ("failed", "cancelled", "interrupted") and row.error_message:
        fields["error_message"] = row.error_message
    webhooks.emit(run_dir, row.id, status, row=row, **(fields | event))
