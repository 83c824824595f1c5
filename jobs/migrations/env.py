"""Alembic environment: the URL comes from the caller (jobs.registry.migrate), never from a file.

PostgreSQL: the connection's search_path is our own schema (jobs.registry.SCHEMA, via connect_args),
created here, under the migrate lock, before anything reads alembic_version; unless the URL sets the
search_path itself, which is then obeyed as it is (see jobs.registry.SCHEMA).
"""

from alembic import context
from sqlalchemy import engine_from_config, pool, text

from jobs.registry import PG_MIGRATE_LOCK, Base, connect_args, own_schema, prepare_schema

config = context.config
url = config.get_main_option("sqlalchemy.url")
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}),
    prefix="sqlalchemy.",
    poolclass=pool.NullPool,
    connect_args=connect_args(url),
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # one migrating process at a time: see jobs.registry
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATE_LOCK})
            if (schema := own_schema(url)) is not None:
                prepare_schema(connection, schema)
        context.run_migrations()
