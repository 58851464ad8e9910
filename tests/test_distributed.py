"""Real Celery worker processes on the machine's Redis and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from scanner.cli import app
from scanner.db import Item, Verdict, make_engine
from scanner.settings import Settings
from scanner.submit import SetupError, submit
from tests.conftest import PG_ADMIN, make_settings, settings_env
from tests.imaging import encode, noisy_image, smooth_image
from tests.workers import WorkerProcess, distributed_settings, done_count, purge_queue, wait_for_job


@pytest.fixture
def pg_settings(pg_url: str, tiny_model: Path) -> Settings:
    """Distributed settings on a fresh, migrated PostgreSQL database."""
    from scanner.db import upgrade

    upgrade(pg_url)
    return distributed_settings(make_settings(pg_url, tiny_model))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Started workers are stopped (and their queue purged) after the test."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


def make_images(folder: Path, distinct: int, duplicates: int) -> None:
    """`distinct` different images plus `duplicates` byte-identical copies of some of them."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(distinct):
        image = noisy_image(index, 32) if index % 2 else smooth_image(index, 32)
        (folder / f"img_{index:04d}.png").write_bytes(encode(image))
    for index in range(duplicates):
        (folder / f"copy_{index:04d}.png").write_bytes((folder / f"img_{index:04d}.png").read_bytes())


def assert_exactly_once(settings: Settings, job_id: int, inputs: int, distinct: int) -> None:
    """One item per input, all done, one verdict per distinct content."""
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        statuses = connection.execute(
            select(Item.status, func.count()).where(Item.job_id == job_id).group_by(Item.status)
        ).all()
        verdicts = connection.scalar(select(func.count()).select_from(Verdict))
        hashes = connection.scalar(select(func.count(func.distinct(Item.sha256))).where(Item.job_id == job_id))
    engine.dispose()
    assert dict(statuses) == {"done": inputs}
    assert verdicts == hashes == distinct


def test_two_workers_scan_a_job_exactly_once(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    make_images(tmp_path / "in", distinct=240, duplicates=60)
    workers.extend(WorkerProcess(pg_settings, tmp_path, f"w{i}") for i in range(2))
    for process in workers:
        process.wait_ready()
    result = submit(pg_settings, [str(tmp_path / "in")], wait=True)
    assert result.summary["finished"] and result.summary["mode"] == "distributed"
    assert_exactly_once(pg_settings, result.summary["job_id"], 300, 240)
    assert len(result.summary["workers"]) == 2  # both processes took batches
    purge_queue(pg_settings)


def test_sigkilled_workers_lose_nothing(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    settings = pg_settings.with_overrides(batch_size=4, visibility_timeout=5)
    make_images(tmp_path / "in", distinct=200, duplicates=40)
    first = WorkerProcess(settings, tmp_path, "first")
    workers.append(first)
    first.wait_ready()
    job_id = submit(settings, [str(tmp_path / "in")], wait=False).summary["job_id"]
    _wait_until(lambda: done_count(settings, job_id) >= 20)
    for child in first.children():  # the pool process dies mid-task: the task is rejected and requeued
        import os
        import signal

        os.kill(child, signal.SIGKILL)
    _wait_until(lambda: done_count(settings, job_id) >= 80)
    first.kill_hard()  # the whole worker dies: its unacked tasks come back after the visibility timeout
    assert done_count(settings, job_id) < 240
    second = WorkerProcess(settings, tmp_path, "second")
    workers.append(second)
    second.wait_ready()
    wait_for_job(settings, job_id, timeout=180)
    assert_exactly_once(settings, job_id, 240, 200)
    purge_queue(settings)


def test_worker_started_after_submit_picks_up_the_job(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    make_images(tmp_path / "in", distinct=30, duplicates=0)
    env = settings_env(pg_settings)
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "in"), "--no-wait", "--json"], env=env)
    assert result.exit_code == 0, result.output
    import json

    job_id = json.loads(result.stdout)["job_id"]
    assert json.loads(result.stdout)["finished"] is False
    late = WorkerProcess(pg_settings, tmp_path, "late")
    workers.append(late)
    late.wait_ready()
    wait_for_job(pg_settings, job_id)
    assert_exactly_once(pg_settings, job_id, 30, 30)
    status = CliRunner().invoke(app, ["status", str(job_id), "--json"], env=env)
    assert json.loads(status.stdout)["finished"] is True
    purge_queue(pg_settings)


def test_dead_broker_is_a_clear_error_at_submit(pg_settings: Settings, tmp_path: Path) -> None:
    make_images(tmp_path / "in", distinct=2, duplicates=0)
    dead = pg_settings.with_overrides(broker_url="redis://:hunter2@127.0.0.1:1/0")
    with pytest.raises(SetupError) as caught:
        submit(dead, [str(tmp_path / "in")], wait=False)
    assert "cannot reach the broker" in str(caught.value) and "hunter2" not in str(caught.value)
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "in")], env=settings_env(dead))
    assert result.exit_code == 1 and "cannot reach the broker" in result.stderr


def test_workers_retry_while_the_database_is_down(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    make_images(tmp_path / "in", distinct=16, duplicates=0)
    name = pg_settings.database_url.rsplit("/", 1)[1]
    job_id = submit(pg_settings, [str(tmp_path / "in")], wait=False).summary["job_id"]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        worker = WorkerProcess(pg_settings, tmp_path, "retry")
        workers.append(worker)
        worker.wait_ready()
        _wait_until(lambda: b"Retry in" in worker.log_path.read_bytes(), timeout=60)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    wait_for_job(pg_settings, job_id, timeout=120)
    assert_exactly_once(pg_settings, job_id, 16, 16)
    purge_queue(pg_settings)


def _wait_until(condition, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError("condition not met in time")


def test_urls_are_fetched_by_the_workers(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    from tests.httpserver import EXPECTED, HostileServer
    from tests.test_hostile import URL_LIMITS, check_url_outcomes

    settings = pg_settings.with_overrides(**URL_LIMITS)
    worker = WorkerProcess(settings, tmp_path, "urls")
    workers.append(worker)
    worker.wait_ready()
    with HostileServer() as server:
        result = submit(settings, [server.url(path) for path in EXPECTED], wait=True)
        check_url_outcomes(settings, result.summary["job_id"], server)
    assert {w["worker"].split(":")[1] for w in result.summary["workers"]} == {str(p) for p in worker.children()}
    purge_queue(settings)


def test_a_batch_over_its_time_limit_fails_alone(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    from tests.httpserver import HostileServer

    settings = pg_settings.with_overrides(task_time_limit=2, http_timeout=10.0, http_retries=0, batch_size=2)
    worker = WorkerProcess(settings, tmp_path, "limit")
    workers.append(worker)
    worker.wait_ready()
    with HostileServer() as server:
        urls = [server.url("slow"), server.url("slow?2"), server.url("good.png"), server.url("good.jpg")]
        result = submit(settings, urls, wait=True)
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        rows = dict(
            connection.execute(select(Item.uri, Item.error_code).where(Item.job_id == result.summary["job_id"])).all()
        )
    engine.dispose()
    assert result.summary["finished"]
    assert rows == {urls[0]: "internal_error", urls[1]: "internal_error", urls[2]: None, urls[3]: None}
    purge_queue(settings)
