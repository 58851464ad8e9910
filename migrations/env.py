"""Alembic environment: URL and metadata come from the application's settings and models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from alembic import context
from sqlalchemy import Connection, Engine, text

from scanner.db import Base, make_engine
from scanner.settings import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
MIGRATION_LOCK = 0x66617578  # PostgreSQL advisory lock key held while migrating ("faux")


def run_offline() -> None:
    """Emit SQL without a connection (`alembic upgrade --sql`)."""
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


@contextlib.contextmanager
def only_migrator(engine: Engine) -> Iterator[Connection]:
    """A connection no other process migrates beside, so two processes opening a new database at once do not both
    create its tables. SQLite: one exclusive transaction for the whole upgrade (all or nothing; the other process
    waits on the busy timeout, then finds the schema current). PostgreSQL: the caller takes an advisory lock."""
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            yield connection
            return
        own = connection.execution_options(isolation_level="AUTOCOMMIT")  # the driver must not begin or commit
        own.exec_driver_sql("BEGIN EXCLUSIVE")
        try:
            yield own
        except BaseException:
            own.exec_driver_sql("ROLLBACK")
            raise
        own.exec_driver_sql("COMMIT")


def run_online() -> None:
    """Apply migrations over a live connection, one process at a time."""
    engine = make_engine(url)
    with only_migrator(engine) as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":  # held to the commit; the next finds the schema current
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
