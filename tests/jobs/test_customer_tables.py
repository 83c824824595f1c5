"""Our registry beside the customer's own tables of the same names, in one PostgreSQL database (theirs,
Supabase): ours live in our own schema (registry.SCHEMA), theirs in `public` are never read, altered or
written, and an older deployment's tables of ours in `public` move once into our schema.

The schema rule applies to a URL that does not set the search_path itself, so each test gets a database
of its own (CREATE DATABASE: the test role needs CREATEDB), the customer's tables in its `public`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest
from conftest import ROOT, postgres_url
from customer_app import POSTGRES_TABLES
from sqlalchemy.engine import make_url

from jobs import registry
from jobs.service import db

THEIRS = ("training_jobs", "training_metrics_history")
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
THEIR_JOB = "5f0c6a4e-8d1b-4c3e-9a77-2b1d0e6f4a10"


@dataclass
class Database:
    name: str
    conninfo: str  # libpq's form, for psycopg directly (the customer, the test's own looks)
    url: str  # ours, as DATABASE_URL gives it: no search_path of its own


def url_with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture
def database():
    import psycopg

    base = postgres_url()
    name = f"test_customer_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(base, autocommit=True)
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.errors.InsufficientPrivilege as exc:
        admin.close()
        message = f"the test role cannot CREATE DATABASE (ALTER ROLE ... CREATEDB): {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # `public` alone on the database's default search_path, as if the role had no schema of its own name
    # (the test role is called brightrun, like our schema): a connection of ours that lost our
    # search_path would land among the customer's tables, not in our schema by luck.
    admin.execute(f'ALTER DATABASE "{name}" SET search_path = public')
    conninfo = make_url(base).set(database=name).render_as_string(hide_password=False)
    yield Database(name, conninfo, registry.database_url(conninfo))
    for key in [k for k in registry._engines if make_url(k).database == name]:
        registry._engines.pop(key).dispose()
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def sql(database: Database, statement: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(database.conninfo, autocommit=True) as con:
        cur = con.execute(statement, params)
        return cur.fetchall() if cur.description else []


def tables(database: Database, schema: str) -> set[str]:
    return {r[0] for r in sql(database, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}


def public_state(database: Database) -> dict:
    """Everything of `public`'s tables: columns, constraints, indexes, and each row with its xmin (a row
    written again, even with the same values, gets a new one)."""
    state = {
        "tables": sorted(tables(database, "public")),
        "columns": sql(
            database,
            "SELECT table_name, ordinal_position, column_name, data_type, column_default, is_nullable,"
            " character_maximum_length, numeric_precision, numeric_scale FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        ),
        "constraints": sql(
            database,
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        ),
        "indexes": sql(
            database, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        ),
    }
    for table in state["tables"]:
        state[table] = sql(
            database, f'SELECT xmin::text, row_to_json(r)::text FROM public."{table}" r ORDER BY 2'
        )
    return state


def customer_tables(database: Database, own_alembic: bool) -> None:
    """Their two tables exactly as they create them, a row in each; their own Alembic's alembic_version
    too when `own_alembic` (the half of the old-layout test that their database can meet)."""
    statements = [
        POSTGRES_TABLES,
        "INSERT INTO training_jobs (id, status, hyperparameters, metrics, current_step)"
        f" VALUES ('{THEIR_JOB}', 'training', '{{\"lora_r\": 8}}', '{{\"loss\": 1.5}}', 3)",
        "INSERT INTO training_metrics_history (training_job_id, step, loss, learning_rate)"
        f" VALUES ('{THEIR_JOB}', 3, 1.5, 0.0002)",
    ]
    if own_alembic:
        statements += [
            "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
            "INSERT INTO alembic_version VALUES ('c0ffee')",
        ]
    for statement in statements:
        sql(database, statement)


def our_job(url: str) -> str:
    """A job through the registry's own functions: its row, a metric point, an artifact, a status."""
    job_id = f"test-{uuid.uuid4().hex[:8]}"
    with registry.session(url) as s:
        s.add(
            registry.TrainingJob(
                id=job_id, preset="balanced", model="smoke", hardware="cpu", hyperparameters={}, metrics={}
            )
        )
        s.commit()
    registry.record_metric(job_id, {"step": 1, "loss": 2.5, "learning_rate": 1e-4}, url)
    registry.add_artifact(
        job_id, url, storage_path="/x", size_bytes=1, sha256="0" * 64, base_model="tiny", lora_config={}
    )
    registry.update_job(job_id, url, status="training", step=1)
    return job_id


def current_schema(engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT current_schema()").scalar()


def test_the_search_path_rule():
    """Our schema on PostgreSQL, unless the URL sets search_path itself; other options in the URL kept."""
    pg = "postgresql+psycopg://u:p@h/db"
    assert registry.own_schema(pg) == registry.SCHEMA == "brightrun"
    assert registry.connect_args(pg) == {"options": "-csearch_path=brightrun"}
    assert registry.connect_args(pg + "?options=-cstatement_timeout%3D5000") == {
        "options": "-cstatement_timeout=5000 -csearch_path=brightrun"
    }
    for own in (url_with_search_path(pg, "mine"), pg + "?options=-c%20search-path%3Dmine"):
        assert registry.own_schema(own) is None and registry.connect_args(own) == {}
    assert registry.own_schema("sqlite:///runs/registry.db") is None
    assert registry.connect_args("sqlite:///runs/registry.db") == {}


@pytest.mark.parametrize("own_alembic", [False, True], ids=["their-tables", "their-tables-and-alembic"])
def test_their_tables_are_never_read_altered_or_written(database, own_alembic, capfd):
    customer_tables(database, own_alembic)
    before = public_state(database)
    # Proof of "never read or written" besides the comparison: our role (which owns their tables here)
    # loses every privilege on them while our code runs; a SELECT, INSERT or UPDATE of theirs would fail.
    their_tables = ", ".join(f"public.{t}" for t in before["tables"])
    sql(database, f"REVOKE ALL ON {their_tables} FROM CURRENT_USER")

    registry.migrate(database.url)
    job_id = our_job(database.url)
    service = db.make_engine(database.url)
    try:
        with db.write_session(service) as s:
            job = s.get(registry.TrainingJob, job_id, with_for_update=True)
            s.add(
                registry.WebhookEvent(
                    event_id=uuid.uuid4().hex, job_id=job_id, sequence=1, status="training", sent_at=0
                )
            )
            job.last_event_sequence = 1
            s.commit()
        assert current_schema(service) == current_schema(registry.engine(database.url)) == "brightrun"
    finally:
        service.dispose()

    sql(database, f"GRANT ALL ON {their_tables} TO CURRENT_USER")
    assert public_state(database) == before
    ours = tables(database, "brightrun")
    assert {"alembic_version", *registry.Base.metadata.tables} <= ours
    assert sql(database, "SELECT step, status FROM brightrun.training_jobs") == [(1, "training")]
    assert sql(database, "SELECT count(*) FROM brightrun.training_metrics_history") == [(1,)]
    assert sql(database, "SELECT count(*) FROM brightrun.webhook_events") == [(1,)]
    assert "moved" not in capfd.readouterr().err


def test_an_older_deployments_tables_in_public_move_into_our_schema(database, capfd):
    old_url = url_with_search_path(database.url, "public")  # where an older version made them
    registry.migrate(old_url)
    job_id = our_job(old_url)
    registry._engines.pop(old_url).dispose()  # that version stops
    old_tables = tables(database, "public")
    assert {"alembic_version", "training_jobs", "model_artifacts"} <= old_tables
    assert "moved" not in capfd.readouterr().err

    assert registry.get_job(job_id, database.url).step == 1  # registry.engine: migrate, then open
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "moved our tables from schema public" in err, err
    assert tables(database, "public") == set()
    assert tables(database, "brightrun") == old_tables
    assert [p.loss for p in registry.metrics(job_id, database.url)] == [2.5]
    # The serial's sequence went with its table: the next artifact is the second.
    registry.add_artifact(
        job_id, database.url, storage_path="/y", size_bytes=1, sha256="1" * 64, base_model="t", lora_config={}
    )
    assert sql(database, "SELECT id FROM brightrun.model_artifacts ORDER BY id") == [(1,), (2,)]
    registry.migrate(database.url)  # once only
    assert "moved" not in capfd.readouterr().err


def test_processes_migrating_at_once_create_the_schema_and_move_once(database, tmp_path):
    """The service and job runs of an upgraded deployment starting together: one of them moves the older
    version's tables, the others find them moved; none fails on the schema's creation."""
    old_url = url_with_search_path(database.url, "public")
    registry.migrate(old_url)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_AT_GO, database.url, str(tmp_path / f"ready-{i}"), str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{i}").exists() for i in range(4)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(outputs)
    assert sum("moved our tables" in out for out in outputs) == 1, outputs
    assert tables(database, "public") == set()
    assert {"alembic_version", *registry.Base.metadata.tables} <= tables(database, "brightrun")
