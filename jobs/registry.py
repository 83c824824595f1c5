"""The job registry: three tables that mirror the customer's schema (training_jobs, model_artifacts,
training_metrics_history), and webhook_events, the events the jobs service has applied. SQLite file
by default (runs/registry.db); PostgreSQL when DATABASE_URL says so, in a schema of our own (SCHEMA),
never among the customer's tables of the same names. The schema is created and upgraded by Alembic
migrations (jobs/migrations), never by create_all, so a database made by an older version upgrades in
place.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, create_engine, delete, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from jobs.payload import CUSTOMER_STATUSES

DEFAULT_DB = Path("runs") / "registry.db"  # beside the runs it describes (use_runs_dir moves it)
# The customer's seven (their status CHECK, jobs/payload.py) and ours: a stop that can be resumed.
STATUSES = (*CUSTOMER_STATUSES, "interrupted")
TERMINAL = ("completed", "failed", "cancelled")
# A run at work: what a relaunch or a follower waits on (a queued one has not started yet).
RUNNING = ("preprocessing", "model_loaded", "training")


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    preset: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    hardware: Mapped[str] = mapped_column(String(64))
    pod_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epoch: Mapped[float | None] = mapped_column(Float, nullable=True)
    hyperparameters: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=now)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    estimated_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    actual_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_hours: Mapped[float | None] = mapped_column(Float, nullable=True)
    artifact_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    last_event_sequence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Pod runs (jobs launch): the GPU, how many, and the current pod's price per hour (migration 0003).
    gpu_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gpu_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    price_per_hour: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The evaluation's verdict (pass | fail | incomplete) and its gates and figures (evals/, migration 0004).
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    evaluation: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class ModelArtifact(Base):
    __tablename__ = "model_artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("training_jobs.id"), index=True)
    artifact_type: Mapped[str] = mapped_column(String(16), default="adapter")  # adapter | merged | checkpoint
    storage_path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(Text)
    lora_config: Mapped[dict] = mapped_column(JSON, default=dict)
    validation_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    perplexity: Mapped[float | None] = mapped_column(Float, nullable=True)
    human_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    deployment_status: Mapped[str] = mapped_column(String(16), default="none")
    created_at: Mapped[datetime] = mapped_column(default=now)


class MetricPoint(Base):
    __tablename__ = "training_metrics_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("training_jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    learning_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    grad_norm: Mapped[float | None] = mapped_column(Float, nullable=True)
    eval_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=now)


class WebhookEvent(Base):
    """An event the service applied (jobs/service): its id refuses a replay, its sequence orders it."""

    __tablename__ = "webhook_events"
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("training_jobs.id"), index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    sent_at: Mapped[int] = mapped_column(Integer)  # the event's own unix timestamp
    received_at: Mapped[datetime] = mapped_column(default=now)


def database_url(url: str | None = None) -> str:
    url = url or os.environ.get("DATABASE_URL")
    if url:
        # postgres://… (Heroku/Supabase style) and postgresql://… both mean psycopg 3 here.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url
    DEFAULT_DB.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_DB.resolve()}"


# PostgreSQL: our tables live in a schema of our own, never in the database's `public`, where the customer's
# database (Supabase) has tables of the same names (training_jobs, training_metrics_history: their own
# columns) that we must never read, alter or write. Every connection we open (engine(), migrate() through
# jobs/migrations/env.py, jobs.service.db.make_engine) starts with search_path = SCHEMA and nothing else
# (connect_args below), so every unqualified name, ours and Alembic's alembic_version, resolves there or
# nowhere; migrate() creates it. The rule's one exception: a URL that sets search_path itself
# (`?options=-csearch_path%3D<schema>`, as the tests and bench/webhooks.py isolate their runs) is obeyed as
# it is: nothing overridden, created or moved. That is also how a deployment picks another schema: in the
# URL, which reaches every process of a run (local children and pods) whole, where a setting of its own
# might not. (libpq's PGOPTIONS is not the URL: our options replace it.)
SCHEMA = "brightrun"
OLD_SCHEMA = "public"  # where an older version made our tables (the default search_path)


def _url_options(url: str) -> str:
    options = make_url(url).query.get("options", "")
    return " ".join(options) if isinstance(options, tuple) else options


def own_schema(url: str) -> str | None:
    """SCHEMA for a PostgreSQL URL; None for SQLite and for a URL that sets search_path itself."""
    if make_url(url).get_backend_name() != "postgresql":
        return None
    # `-c search-path=...` is the same setting to PostgreSQL (a dash in a name reads as an underscore)
    if "search_path" in _url_options(url).lower().replace("-", "_"):
        return None
    return SCHEMA


def connect_args(url: str) -> dict:
    """The driver's connect arguments that put our schema on the search_path (see SCHEMA); {} where the
    URL is SQLite or chooses the search_path itself. Other options in the URL are kept (these replace
    the URL's `options` whole)."""
    schema = own_schema(url)
    if schema is None:
        return {}
    return {"options": f"{_url_options(url)} -csearch_path={schema}".strip()}


UNLINKED_TABLES = ("service_jobs",)


def prepare_schema(conn: Connection, schema: str) -> None:
    """Create our schema, and move our tables there from `public` if an older version made them there.

    Runs in the migrations' transaction under PG_MIGRATE_LOCK (jobs/migrations/env.py), on a connection
    whose search_path is `schema` alone. The move happens once: only while `schema` has no
    alembic_version, `public` has one, and public.training_jobs is ours (it has our `preset` column; the
    customer's has none). It takes alembic_version, training_jobs, UNLINKED_TABLES and every public table
    that refers to those it takes by a foreign key (the rest of ours do: the customer's refer to their own
    training_jobs, never ours); any other public table, theirs included, is never touched. A failure rolls
    it all back.
    """
    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))

    def exists(table: str, in_schema: str) -> bool:
        found = conn.execute(text("SELECT to_regclass(:name)"), {"name": f'"{in_schema}"."{table}"'})
        return found.scalar() is not None

    ours_in_old = (
        not exists("alembic_version", schema)
        and exists("alembic_version", OLD_SCHEMA)
        and conn.execute(
            text(
                "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:table) AND attname = 'preset'"
                " AND NOT attisdropped"
            ),
            {"table": f'"{OLD_SCHEMA}"."training_jobs"'},
        ).first()
        is not None
    )
    if ours_in_old:
        # Ours that refer to nothing by a foreign key are named (service_jobs: a pod job's row comes later).
        tables = {"training_jobs", *(t for t in UNLINKED_TABLES if exists(t, OLD_SCHEMA))}
        while True:  # the tables that refer to ours, by foreign key, until none is new
            referring = set(
                conn.execute(
                    text(
                        "SELECT DISTINCT src.relname FROM pg_constraint c"
                        " JOIN pg_class src ON src.oid = c.conrelid"
                        " JOIN pg_namespace sn ON sn.oid = src.relnamespace"
                        " JOIN pg_class dst ON dst.oid = c.confrelid"
                        " JOIN pg_namespace dn ON dn.oid = dst.relnamespace"
                        " WHERE c.contype = 'f' AND sn.nspname = :old AND dn.nspname = :old"
                        " AND dst.relname = ANY(:tables)"
                    ),
                    {"old": OLD_SCHEMA, "tables": sorted(tables)},
                ).scalars()
            )
            if referring <= tables:
                break
            tables |= referring
        moved = ["alembic_version", *sorted(tables)]
        for table in moved:  # its indexes, constraints and owned sequences go with it
            conn.execute(text(f'ALTER TABLE "{OLD_SCHEMA}"."{table}" SET SCHEMA "{schema}"'))
        print(
            f"registry: moved our tables from schema {OLD_SCHEMA} (an older version's) to {schema}: "
            + ", ".join(moved),
            file=sys.stderr,
        )
    # A connection pooler that drops the startup options would leave us on the default search_path,
    # among the customer's tables: refuse to migrate (and so to run) there.
    current = conn.execute(text("SELECT current_schema()")).scalar()
    if current != schema:
        raise RuntimeError(
            f"the registry's connection has search_path schema {current!r}, not {schema!r}: does something"
            " between us and PostgreSQL (a pooler in transaction mode?) drop the connection's options?"
            " Connect directly, or name the schema in the URL (?options=-csearch_path%3D<schema>)"
        )


def use_runs_dir(runs_dir: str | Path) -> None:
    """Without DATABASE_URL, the registry is a SQLite file in the runs folder."""
    global DEFAULT_DB
    DEFAULT_DB = Path(runs_dir) / "registry.db"


# Processes that open a new registry at the same moment (the service and job runs starting together)
# must not both run the migrations: the second fails with "table already exists". So migrations run
# one process at a time, and each reads the applied revision only once it holds the lock (Alembic's
# upgrade reads alembic_version itself, inside it), so the later ones find "head" and do nothing.
# SQLite: Alembic runs its DDL outside a transaction there, so an exclusive flock on a file beside the
# database. PostgreSQL: the migrations run in one transaction, but two such transactions do not wait
# for each other before reading alembic_version, so env.py takes this transaction-level advisory lock
# first (released at commit or rollback).
PG_MIGRATE_LOCK = 0x62_72_72_67  # any constant; the same one in every process


@contextmanager
def sqlite_migrate_lock(url: str) -> Iterator[None]:
    """Holds an exclusive lock on `<db>.migrate.lock` for a SQLite file URL; nothing for others."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        yield
        return
    with open(f"{parsed.database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or the process dies
        yield


def migrate(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    with sqlite_migrate_lock(url):
        command.upgrade(cfg, "head")


_engines: dict[str, Engine] = {}


def engine(url: str | None = None) -> Engine:
    url = database_url(url)
    if url not in _engines:
        migrate(url)
        _engines[url] = create_engine(url, connect_args=connect_args(url))
    return _engines[url]


def session(url: str | None = None) -> Session:
    return Session(engine(url), expire_on_commit=False)


def update_job(job_id: str, url: str | None = None, **fields) -> None:
    with session(url) as s:
        job = s.get(TrainingJob, job_id)
        if job is None:
            raise KeyError(job_id)
        for key, value in fields.items():
            setattr(job, key, value)
        s.commit()


def add_artifact(job_id: str, url: str | None = None, **fields) -> None:
    with session(url) as s:
        s.add(ModelArtifact(job_id=job_id, **fields))
        s.commit()


def get_job(job_id: str, url: str | None = None) -> TrainingJob | None:
    with session(url) as s:
        return s.get(TrainingJob, job_id)


def list_jobs(url: str | None = None) -> list[TrainingJob]:
    with session(url) as s:
        return list(s.scalars(select(TrainingJob).order_by(TrainingJob.created_at.desc())))


def record_metric(job_id: str, point: dict, url: str | None = None) -> None:
    """One logged step. A step logged again (after a resume) replaces the earlier row."""
    with session(url) as s:
        s.execute(
            delete(MetricPoint).where(
                MetricPoint.job_id == job_id,
                MetricPoint.step == point["step"],
                MetricPoint.eval_loss.is_(None) == (point.get("eval_loss") is None),
            )
        )
        s.add(MetricPoint(job_id=job_id, **point))
        s.commit()


def metrics(job_id: str, url: str | None = None) -> list[MetricPoint]:
    with session(url) as s:
        return list(
            s.scalars(
                select(MetricPoint)
                .where(MetricPoint.job_id == job_id)
                .order_by(MetricPoint.step, MetricPoint.id)
            )
        )


def truncate_metrics(job_id: str, after_step: int, url: str | None = None) -> int:
    """Drop points logged after a checkpoint that a resume goes back to; returns how many."""
    with session(url) as s:
        result = s.execute(
            delete(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.step > after_step)
        )
        s.commit()
        return result.rowcount
