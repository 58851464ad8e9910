"""Reaching the system of record and the broker: clear setup errors, masked passwords."""

from __future__ import annotations

from typing import Any

from scanner.settings import Settings

# SQLAlchemy and the ORM models are imported inside the functions that need them, so that importing this
# module (as the CLI does for SetupError) stays cheap: `scanner --help` does not load SQLAlchemy.


class SetupError(Exception):
    """The job itself cannot run (database, broker or model unavailable)."""


def safe_url(url: str) -> str:
    """A database or broker URL with any password masked, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL (e.g. redis://): mask by hand
        scheme, _, rest = url.partition("://")
        if "@" in rest:
            creds, _, host = rest.rpartition("@")
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
        return url


def describe_db_error(exc: Exception, url: str) -> str:
    """The driver's first message line, with the URL's password (if any) masked."""
    from sqlalchemy.engine import make_url

    original = getattr(exc, "orig", None) or exc
    line = (str(original).strip().splitlines() or [type(original).__name__])[0]
    password = make_url(url).password if "://" in url else None
    return f"{type(original).__name__}: {line.replace(password, '***') if password else line}"


def open_database(settings: Settings) -> Any:
    """Sessions on a reachable database at the newest schema; SQLite is upgraded automatically."""
    from sqlalchemy.exc import SQLAlchemyError

    from scanner.db import SCHEMA_HEAD, current_revision, make_engine, session_factory, upgrade

    engine = make_engine(settings.database_url)
    try:
        stale = current_revision(engine) != SCHEMA_HEAD  # also the first connection: an unreachable database fails here
        if stale and engine.dialect.name == "sqlite":
            upgrade(settings.database_url)
        elif stale:
            raise SetupError(
                f"the database at {safe_url(settings.database_url)} is not at the newest schema: "
                "run `scanner db upgrade`"
            )
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = describe_db_error(exc, settings.database_url)
        raise SetupError(f"cannot use the database at {safe_url(settings.database_url)}: {reason}") from None
    return session_factory(engine)
