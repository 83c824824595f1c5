"""The registry on SQLite and on a real PostgreSQL (started by .ci/run; TEST_POSTGRES_URL)."""

from __future__ import annotations

import uuid

import pytest
from conftest import postgres_url
from sqlalchemy import inspect

from jobs import registry


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return postgres_url()


def new_job(url: str) -> str:
    job_id = f"test-{uuid.uuid4().hex[:8]}"
    with registry.session(url) as s:
        s.add(
            registry.TrainingJob(
                id=job_id,
                preset="balanced",
                model="smoke",
                hardware="cpu",
                hyperparameters={"lora_r": 16},
                metrics={},
            )
        )
        s.commit()
    return job_id


def test_migrations_create_the_three_tables(db_url):
    tables = set(inspect(registry.engine(db_url)).get_table_names())
    assert {"training_jobs", "model_artifacts", "training_metrics_history", "alembic_version"} <= tables
    columns = {c["name"] for c in inspect(registry.engine(db_url)).get_columns("training_jobs")}
    assert {
        "status",
        "step",
        "total_steps",
        "epoch",
        "hyperparameters",
        "metrics",
        "started_at",
        "completed_at",
        "estimated_cost",
        "actual_cost",
        "gpu_hours",
        "artifact_path",
        "error_message",
        "retry_count",
    } <= columns


def test_metrics_history_has_no_duplicate_steps_after_a_resume(db_url):
    job = new_job(db_url)
    for step, loss in [(1, 3.0), (2, 2.5), (3, 2.2)]:
        registry.record_metric(job, {"step": step, "loss": loss, "epoch": step / 10}, db_url)
    registry.record_metric(job, {"step": 2, "eval_loss": 2.4}, db_url)
    # Resumed from checkpoint-2: step 3 is lost and logged again.
    assert registry.truncate_metrics(job, 2, db_url) == 1
    registry.record_metric(job, {"step": 3, "loss": 2.1, "epoch": 0.3}, db_url)
    registry.record_metric(job, {"step": 3, "loss": 2.05, "epoch": 0.3}, db_url)  # logged twice: replaced
    got = [(p.step, p.loss, p.eval_loss) for p in registry.metrics(job, db_url)]
    assert got == [(1, 3.0, None), (2, 2.5, None), (2, None, 2.4), (3, 2.05, None)]


def test_job_updates_and_listing(db_url):
    job = new_job(db_url)
    registry.update_job(job, db_url, status="training", step=5, total_steps=10, metrics={"loss": 1.5})
    got = registry.get_job(job, db_url)
    assert (got.status, got.step, got.total_steps, got.metrics) == ("training", 5, 10, {"loss": 1.5})
    assert job in [j.id for j in registry.list_jobs(db_url)]
    with pytest.raises(KeyError):
        registry.update_job("no-such-job", db_url, status="failed")


def test_postgres_urls_use_psycopg3():
    assert registry.database_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert registry.database_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
