"""Registry rows as the API's JSON: jobs (with their latest losses), one job's history and artifacts."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from jobs.registry import MetricPoint, ModelArtifact, TrainingJob

JOB_FIELDS = (
    "id",
    "status",
    "preset",
    "model",
    "hardware",
    "step",
    "total_steps",
    "epoch",
    "created_at",
    "started_at",
    "completed_at",
    "estimated_cost",
    "actual_cost",
    "gpu_hours",
    "artifact_path",
    "error_message",
    "retry_count",
    "gpu_type",
    "gpu_count",
    "price_per_hour",
    "verdict",
    "hyperparameters",
    "metrics",
)
POINT_FIELDS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "eval_loss")
ARTIFACT_FIELDS = (
    "artifact_type",
    "storage_path",
    "size_bytes",
    "sha256",
    "base_model",
    "validation_loss",
    "perplexity",
)


def iso(value):
    # The registry stores naive UTC; say so, or a browser reads the time as its local one.
    return value.replace(tzinfo=UTC).isoformat() if isinstance(value, datetime) else value


def job_dict(job: TrainingJob, last_loss: float | None, last_eval: float | None) -> dict:
    out = {k: iso(getattr(job, k)) for k in JOB_FIELDS}
    out["hyperparameters"] = out["hyperparameters"] or {}
    out["metrics"] = out["metrics"] or {}
    out["last_loss"] = last_loss
    # The held-out loss of the finished adapter says more than the last in-training eval.
    out["eval_loss"] = out["metrics"].get("heldout_adapter_loss", last_eval)
    return out


def latest(s: Session, column, jobs_query) -> dict[str, float]:
    """The value of `column` at each job's highest logged step, for the jobs `jobs_query` selects:
    one query for the whole list (a window function), not one per job."""
    ranked = (
        select(
            MetricPoint.job_id,
            column.label("value"),
            func.row_number()
            .over(partition_by=MetricPoint.job_id, order_by=(MetricPoint.step.desc(), MetricPoint.id.desc()))
            .label("rank"),
        )
        .where(column.is_not(None), MetricPoint.job_id.in_(jobs_query))
        .subquery()
    )
    return dict(s.execute(select(ranked.c.job_id, ranked.c.value).where(ranked.c.rank == 1)).all())


def list_jobs(engine: Engine, status: str | None = None) -> list[dict]:
    ids = select(TrainingJob.id)
    query = select(TrainingJob).order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc())
    if status is not None:
        ids = ids.where(TrainingJob.status == status)
        query = query.where(TrainingJob.status == status)
    with Session(engine) as s:
        jobs = list(s.scalars(query))
        losses = latest(s, MetricPoint.loss, ids)
        evals = latest(s, MetricPoint.eval_loss, ids)
    return [job_dict(j, losses.get(j.id), evals.get(j.id)) for j in jobs]


def job_detail(engine: Engine, job_id: str) -> dict | None:
    with Session(engine) as s:
        job = s.get(TrainingJob, job_id)
        if job is None:
            return None
        points = list(
            s.scalars(
                select(MetricPoint)
                .where(MetricPoint.job_id == job_id)
                .order_by(MetricPoint.step, MetricPoint.id)
            )
        )
        artifacts = list(
            s.scalars(select(ModelArtifact).where(ModelArtifact.job_id == job_id).order_by(ModelArtifact.id))
        )
    train = [p.loss for p in points if p.loss is not None]
    evals = [p.eval_loss for p in points if p.eval_loss is not None]
    out = job_dict(job, train[-1] if train else None, evals[-1] if evals else None)
    out["metrics_history"] = [{k: getattr(p, k) for k in POINT_FIELDS} for p in points]
    out["artifacts"] = [{k: getattr(a, k) for k in ARTIFACT_FIELDS} for a in artifacts]
    out["evaluation"] = job.evaluation  # the verdict's gates and figures (evals/), null before an eval
    return out
