"""Every change of a job's status in the registry, as the database itself saw it: a trigger on
training_jobs (SQLite or PostgreSQL) writes each insert and each status change into a log table. So a test
can say "exactly one registry change to `completed`" about a real run without reaching into the code that
made it.
"""

from __future__ import annotations

from sqlalchemy import text

from jobs import registry

LOG = "test_status_log"

SQLITE = [
    f"CREATE TABLE IF NOT EXISTS {LOG} (n INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT, status TEXT)",
    f"""CREATE TRIGGER IF NOT EXISTS {LOG}_insert AFTER INSERT ON training_jobs
        BEGIN INSERT INTO {LOG} (job_id, status) VALUES (NEW.id, NEW.status); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {LOG}_update AFTER UPDATE OF status ON training_jobs
        WHEN OLD.status IS NOT NEW.status
        BEGIN INSERT INTO {LOG} (job_id, status) VALUES (NEW.id, NEW.status); END""",
]
POSTGRESQL = [
    f"CREATE TABLE IF NOT EXISTS {LOG} (n SERIAL PRIMARY KEY, job_id TEXT, status TEXT)",
    f"""CREATE OR REPLACE FUNCTION {LOG}_row() RETURNS trigger AS $$
        BEGIN
          IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
            INSERT INTO {LOG} (job_id, status) VALUES (NEW.id, NEW.status);
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS {LOG}_row ON training_jobs",
    f"""CREATE TRIGGER {LOG}_row AFTER INSERT OR UPDATE OF status ON training_jobs
        FOR EACH ROW EXECUTE FUNCTION {LOG}_row()""",
]


def watch(url: str) -> None:
    """The registry at `url` made (migrated) now, with the trigger on it. Idempotent."""
    engine = registry.engine(url)
    statements = POSTGRESQL if engine.dialect.name == "postgresql" else SQLITE
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # xdist workers share one database: one DDL at a time
            conn.execute(text("SELECT pg_advisory_xact_lock(7364021)"))
        for statement in statements:
            conn.execute(text(statement))


def changes(url: str, job_id: str) -> list[str]:
    """The job's statuses in the order the registry took them (its insert first)."""
    with registry.engine(url).connect() as conn:
        rows = conn.execute(text(f"SELECT status FROM {LOG} WHERE job_id = :id ORDER BY n"), {"id": job_id})
        return [status for (status,) in rows]


def ended_once(url: str, job_id: str, status: str, events: list[str], sent: str | None = None) -> None:
    """The terminal path's promise: the registry moved to `status` exactly once, as its last change, and
    exactly one signed event (accepted by the receiver) carried it, as the last event. `sent`: the status
    the events are read for, when it is not `status` (the customer's `failed` for a cost cap)."""
    seen = changes(url, job_id)
    assert seen.count(status) == 1 and seen[-1] == status, seen
    sent = sent or status
    assert events.count(sent) == 1 and events[-1] == sent, events
