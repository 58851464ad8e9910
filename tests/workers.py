"""Start and stop real Celery worker processes (`scanner worker`) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

from scanner.db import Item, Job, make_engine
from scanner.settings import Settings
from tests.conftest import REDIS_URL, settings_env

SCANNER = str(Path(sys.executable).with_name("scanner"))


def distributed_settings(settings: Settings, **overrides: Any) -> Settings:
    """Settings on the test Redis with a queue of its own."""
    return settings.with_overrides(broker_url=REDIS_URL, queue=f"test-{uuid.uuid4().hex[:8]}", **overrides)


class WorkerProcess:
    """One `scanner worker` process with its log file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str, concurrency: int = 1) -> None:
        self.log_path = log_dir / f"{name}.log"
        env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [SCANNER, "worker", "--concurrency", str(concurrency), "--loglevel", "info"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until Celery logs 'ready'."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"ready." in self.log_path.read_bytes():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()}")
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready:\n{self.log_path.read_text()}")

    def children(self) -> list[int]:
        """Pids of the prefork pool processes."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill_hard(self) -> None:
        """SIGKILL the whole worker (main process and pool), as an OOM killer would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Warm shutdown, then kill if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill_hard()
        self.log.close()


def purge_queue(settings: Settings) -> None:
    """Drop whatever a test left in its queue."""
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(settings.queue)
    client.close()


def wait_for_job(settings: Settings, job_id: int, timeout: float = 120) -> None:
    """Poll SQL until the job has finished_at."""
    engine = make_engine(settings.database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if connection.scalar(select(Job.finished_at).where(Job.id == job_id)) is not None:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"job {job_id} did not finish in {timeout} s")
    finally:
        engine.dispose()


def done_count(settings: Settings, job_id: int) -> int:
    """Items of the job no longer queued."""
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        count = connection.scalar(
            select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.status != "queued")
        )
    engine.dispose()
    return int(count or 0)
