"""Real Celery worker processes on the machine's Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from scanner.cli import app
from scanner.db import Batch, Item, Job, Verdict, make_engine
from scanner.pipeline.submit import SetupError, submit
from scanner.settings import Settings
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
    """Started workers are stopped after the test (each test purges its own queue)."""
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


def test_sigkilled_workers_lose_nothing_with_default_settings(
    pg_settings: Settings, workers: list, tmp_path: Path
) -> None:
    defaults = Settings.from_env({})
    assert (pg_settings.visibility_timeout, pg_settings.lease_seconds) == (
        defaults.visibility_timeout, defaults.lease_seconds,
    )  # fmt: skip  # no test override: production timing
    settings = pg_settings.with_overrides(batch_size=4)
    make_images(tmp_path / "in", distinct=200, duplicates=40)
    first = WorkerProcess(settings, tmp_path, "first")
    second = WorkerProcess(settings, tmp_path, "second")
    workers.extend([first, second])
    first.wait_ready()
    job_id = submit(settings, [str(tmp_path / "in")], wait=False).summary["job_id"]
    _wait_until(lambda: done_count(settings, job_id) >= 20)
    for child in first.children():  # the pool process dies mid-task: its batch is taken over at once
        os.kill(child, signal.SIGKILL)
    _wait_until(lambda: done_count(settings, job_id) >= 80)
    second.wait_ready()
    first.kill_hard()  # the whole worker dies: its lease runs out and the second worker's reaper re-sends
    killed_at = time.monotonic()
    assert done_count(settings, job_id) < 240
    wait_for_job(settings, job_id, timeout=120)
    assert time.monotonic() - killed_at <= 120
    assert_exactly_once(settings, job_id, 240, 200)
    purge_queue(settings)


def test_a_batch_that_keeps_killing_workers_is_isolated(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    from tests.httpserver import HostileServer

    settings = pg_settings.with_overrides(batch_size=4, lease_seconds=10.0, http_timeout=20.0, http_retries=0)
    make_images(tmp_path / "in", distinct=7, duplicates=0)
    worker = WorkerProcess(settings, tmp_path, "poison", concurrency=1)
    workers.append(worker)
    worker.wait_ready()
    server = HostileServer().__enter__()
    poison_url = server.url("slow")  # slow enough for this test to kill whoever works on it, every time
    job_id = submit(settings, [str(tmp_path / "in"), poison_url], wait=False).summary["job_id"]
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        poison_id = connection.scalar(select(Item.id).where(Item.uri == poison_url))
    deadline, kills = time.monotonic() + 240, 0
    hits = server.server.RequestHandlerClass.hits
    try:
        while time.monotonic() < deadline:  # whoever starts reading the poison item dies, as on a decoder crash
            with engine.connect() as connection:
                if connection.scalar(select(Job.finished_at).where(Job.id == job_id)) is not None:
                    break
                holders = connection.execute(
                    select(Batch.claimed_by, Batch.item_ids).where(Batch.job_id == job_id, Batch.status == "running")
                ).all()
            if hits["/slow"] > kills:
                for holder, item_ids in holders:
                    if poison_id in item_ids and holder:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(holder.partition("#")[0].rsplit(":", 1)[1]), signal.SIGKILL)
                        kills += 1
            time.sleep(0.05)
        with engine.connect() as connection:
            rows = dict(connection.execute(select(Item.id, Item.error_code).where(Item.job_id == job_id)).all())
            finished = connection.scalar(select(Job.finished_at).where(Job.id == job_id))
    finally:
        engine.dispose()
        server.__exit__()
    assert finished is not None, worker.log_path.read_text()[-3000:]
    assert rows.pop(poison_id) == "worker_lost" and set(rows.values()) == {None}  # the other 7 were scanned
    assert kills >= 3
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


@contextlib.contextmanager
def database_down(settings: Settings) -> Iterator[None]:
    """The job's PostgreSQL database refuses every connection inside the block."""
    name = settings.database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        yield
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_workers_retry_while_the_database_is_down(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    make_images(tmp_path / "in", distinct=16, duplicates=0)
    job_id = submit(pg_settings, [str(tmp_path / "in")], wait=False).summary["job_id"]
    with database_down(pg_settings):
        worker = WorkerProcess(pg_settings, tmp_path, "retry")
        workers.append(worker)
        worker.wait_ready()
        _wait_until(lambda: b"Retry in" in worker.log_path.read_bytes(), timeout=60)
    wait_for_job(pg_settings, job_id, timeout=120)
    assert_exactly_once(pg_settings, job_id, 16, 16)
    purge_queue(pg_settings)


def test_a_database_blip_does_not_end_the_submitter(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    """`scanner submit` exited 1 with a traceback when the database dropped its connection for a moment, while the
    workers went on to finish the job: it must say so in one line, keep following and exit 0."""
    import subprocess

    from tests.workers import SCANNER

    make_images(tmp_path / "in", distinct=12, duplicates=0)
    job_id = submit(pg_settings, [str(tmp_path / "in")], wait=False).summary["job_id"]
    env = {**os.environ, **settings_env(pg_settings)}
    follower = subprocess.Popen([SCANNER, "resume", str(job_id), "--json"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(4)  # following: reading the job's counts twice a second
    with database_down(pg_settings):
        time.sleep(2)
    assert follower.poll() is None, follower.communicate()[1][-3000:]
    worker = WorkerProcess(pg_settings, tmp_path, "after-blip")
    workers.append(worker)
    worker.wait_ready()
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err[-3000:]
    assert "Traceback" not in err and err.count("the database does not answer") == 1, err
    assert_exactly_once(pg_settings, job_id, 12, 12)
    purge_queue(pg_settings)


def test_exhausted_retries_become_error_rows(pg_settings: Settings, workers: list, tmp_path: Path) -> None:
    settings = pg_settings.with_overrides(task_retries=1)
    make_images(tmp_path / "in", distinct=6, duplicates=0)
    job_id = submit(settings, [str(tmp_path / "in")], wait=False).summary["job_id"]
    with database_down(settings):
        worker = WorkerProcess(settings, tmp_path, "exhausted")
        workers.append(worker)
        worker.wait_ready()
        _wait_until(lambda: b"gave up after 1 retries" in worker.log_path.read_bytes(), timeout=90)
    wait_for_job(settings, job_id, timeout=120)
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        codes = connection.execute(select(Item.error_code).where(Item.job_id == job_id)).scalars().all()
    engine.dispose()
    assert codes == ["retries_exhausted"] * 6
    purge_queue(settings)


def test_a_job_nobody_works_on_stops_the_submitter_with_a_clear_message(pg_settings: Settings, tmp_path: Path) -> None:
    make_images(tmp_path / "in", distinct=3, duplicates=0)
    settings = pg_settings.with_overrides(stall_timeout=3.0)
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "in")], env=settings_env(settings))
    assert result.exit_code == 1
    assert "made no progress for 3 s: 3 items still queued" in result.stderr and "scanner resume" in result.stderr
    purge_queue(settings)


def test_a_worker_with_another_model_refuses_the_job(
    pg_settings: Settings, workers: list, tmp_path: Path, face_model: Path
) -> None:
    make_images(tmp_path / "in", distinct=4, duplicates=0)
    job_id = submit(pg_settings, [str(tmp_path / "in")], wait=False).summary["job_id"]
    other = WorkerProcess(pg_settings.with_overrides(model_path=face_model), tmp_path, "other-model")
    workers.append(other)
    other.wait_ready()
    wait_for_job(pg_settings, job_id, timeout=60)
    status = CliRunner().invoke(app, ["status", str(job_id), "--json"], env=settings_env(pg_settings))
    import json

    assert json.loads(status.stdout)["errors_by_code"] == {"model_mismatch": 4}
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
    from tests.support import URL_LIMITS, check_url_outcomes

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


class OwnRedis:
    """A redis-server of the test's own on a free port, without persistence, that the test can stop and start."""

    def __init__(self, folder: Path) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder, self.process = folder, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        import subprocess

        import redis

        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            try:
                if redis.Redis(port=self.port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        """Kill the server (its queued messages are lost, as after a crash without persistence)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def test_a_redis_outage_stops_neither_the_workers_nor_the_submitter(
    pg_url: str, tiny_model: Path, workers: list, tmp_path: Path
) -> None:
    import subprocess

    from scanner.db import upgrade
    from tests.workers import SCANNER

    upgrade(pg_url)
    server = OwnRedis(tmp_path)
    server.start()
    try:
        settings = make_settings(pg_url, tiny_model, broker_url=server.url, queue="outage", batch_size=4,
                                 lease_seconds=4.0)  # fmt: skip
        make_images(tmp_path / "in", 400, 0)
        worker = WorkerProcess(settings, tmp_path, "worker")
        workers.append(worker)
        worker.wait_ready()
        env = {**os.environ, **settings_env(settings)}
        follower = subprocess.Popen([SCANNER, "submit", str(tmp_path / "in"), "--json"], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        engine = make_engine(pg_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if (connection.scalar(select(func.count()).select_from(Item).where(Item.status == "done")) or 0) >= 20:
                    break
            time.sleep(0.1)
        server.stop()
        time.sleep(15)  # longer than the 12 s that used to end both workers
        assert worker.process.poll() is None, worker.log_path.read_text()[-2000:]
        server.start()
        out, err = follower.communicate(timeout=240)
        assert follower.returncode == 0, err[-3000:]
        assert "Traceback" not in err and err.count("the broker") <= 3, err
        with engine.connect() as connection:
            statuses = dict(connection.execute(select(Item.status, func.count()).group_by(Item.status)).all())
        engine.dispose()
        assert statuses == {"done": 400}
        assert worker.process.poll() is None
    finally:
        server.stop()
