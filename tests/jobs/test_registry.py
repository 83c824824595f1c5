"""The registry on SQLite and on a real PostgreSQL (started by .ci/run; TEST_POSTGRES_URL)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from conftest import ROOT, postgres_url
from sqlalchemy import create_engine, inspect, text

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


# One process of the race below: imports done, it says it is ready, then waits for the go file.
MIGRATE_AT_GO = """
import sys, time
from pathlib import Path
from alembic import command  # noqa: F401  (imported before the start, so all start together)
from jobs import registry
url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.001)
registry.migrate(url)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_db_url(request, tmp_path):
    """A registry nothing has migrated yet: a new SQLite file, or a new schema in the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    url = registry.database_url(postgres_url())
    schema = f"migrate_race_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    # Every connection of this URL (Alembic's included) creates and finds its tables in that schema.
    yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_processes_migrating_a_fresh_registry_at_once_all_succeed(fresh_db_url, tmp_path):
    """Six processes (a service and job runs starting together) open the same new registry."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_AT_GO, fresh_db_url, str(tmp_path / f"ready-{i}"), str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(6)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(6)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a process died early"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(outputs)[-3000:]
    db = create_engine(fresh_db_url)
    with db.connect() as conn:
        # The newest migration file's revision: every one applied, once.
        head = max(f.name[:4] for f in (ROOT / "jobs" / "migrations" / "versions").glob("0*.py"))
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
        tables = set(inspect(conn).get_table_names())
        columns = {c["name"] for c in inspect(conn).get_columns("training_jobs")}
    db.dispose()
    assert {"training_jobs", "model_artifacts", "training_metrics_history", "webhook_events"} <= tables
    assert "last_event_sequence" in columns  # 0002 applied once, on top of 0001
    assert {"gpu_type", "gpu_count", "price_per_hour"} <= set(columns)  # and 0003
    assert {"verdict", "evaluation"} <= set(columns)  # and 0004
    assert "model_versions" in tables  # and 0005
    assert "ab_tests" in tables  # and 0006
