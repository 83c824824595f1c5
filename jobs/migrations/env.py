"""Alembic environment: the URL comes from the caller (jobs.registry.migrate), never from a file."""

from alembic import context
from sqlalchemy import engine_from_config, pool, text

from jobs.registry import PG_MIGRATE_LOCK, Base

config = context.config
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # one migrating process at a time: see jobs.registry
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATE_LOCK})
        context.run_migrations()
