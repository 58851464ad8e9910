"""Helpers several test modules share (tests never import each other)."""

from __future__ import annotations

from sqlalchemy import select

from scanner.db import Item, make_engine
from scanner.pipeline.errors import ERROR_CODES
from scanner.settings import Settings
from tests.httpserver import EXPECTED, HostileServer


def items_by_uri(settings: Settings, job_id: int) -> dict[str, Item]:
    """The job's items keyed by uri."""
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        rows = {row.uri: row for row in connection.execute(select(Item).where(Item.job_id == job_id))}
    engine.dispose()
    return rows


URL_LIMITS = {"http_timeout": 1.0, "http_retries": 1, "max_file_bytes": 1_000_000}


def check_url_outcomes(settings: Settings, job_id: int, server: HostileServer) -> None:
    """Every hostile route ended with the right status and code."""
    rows = items_by_uri(settings, job_id)
    for path, (status, code) in EXPECTED.items():
        row = rows[server.url(path)]
        assert (row.status, row.error_code) == (status, code), (path, row.error_message)
        assert row.error_code is None or row.error_code in ERROR_CODES
    assert rows[server.url("to-good")].final_url == server.url("good.png")
    assert rows[server.url("good.png")].http_status == 200 and rows[server.url("good.png")].sha256
    assert rows[server.url("missing")].http_status == 404
