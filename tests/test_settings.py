"""Settings from the environment, worker start-up arguments, and `scanner db upgrade`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scanner.cli import app
from scanner.db import SCHEMA_HEAD, current_revision, head_revision, make_engine
from scanner.engines.celery import worker_argv
from scanner.pipeline.submit import safe_url
from scanner.registry import default_model_path
from scanner.settings import Settings


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings.from_env({})
    assert settings.broker_url is None
    assert settings.model_path == default_model_path()
    assert settings.database_url.startswith("sqlite:///") and "fauxscan" in settings.database_url
    assert settings.device == "auto" and not settings.allow_private_urls


def test_environment_and_overrides() -> None:
    env = {"SCANNER_DATABASE_URL": "postgresql+psycopg://a:b@h/db", "SCANNER_BROKER_URL": "redis://h:1/0",
           "SCANNER_BATCH_SIZE": "16", "SCANNER_ALLOW_PRIVATE_URLS": "yes", "SCANNER_DEVICE": "cuda:1"}  # fmt: skip
    settings = Settings.from_env(env)
    assert (settings.batch_size, settings.allow_private_urls, settings.device) == (16, True, "cuda:1")
    assert settings.with_overrides(batch_size=None, device="cpu").batch_size == 16
    assert settings.with_overrides(device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="SCANNER_DEVICE"):
        Settings.from_env({"SCANNER_DEVICE": "tpu"})


def test_secrets_are_masked() -> None:
    assert safe_url("postgresql+psycopg://scanner:s3cret@db/x") == "postgresql+psycopg://scanner:***@db/x"
    assert "hunter2" not in safe_url("redis://:hunter2@cache:6379/0")


def test_worker_arguments_per_device() -> None:
    cpu = Settings.from_env({"SCANNER_BROKER_URL": "redis://x"})
    argv = worker_argv(cpu, 3, None, None, "info")
    assert "--pool=prefork" in argv and "--concurrency=3" in argv and "--queues=scan" in argv
    gpu = cpu.with_overrides(device="cuda")
    argv = worker_argv(gpu, 3, "scan-gpu", None, "info")
    assert "--pool=solo" in argv and "--concurrency=1" in argv and "--queues=scan-gpu" in argv


def test_db_upgrade_command(pg_url: str) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade"], env={"SCANNER_DATABASE_URL": pg_url})
    assert result.exit_code == 0, result.output
    engine = make_engine(pg_url)
    assert current_revision(engine) == head_revision(pg_url) == SCHEMA_HEAD == "0010"  # the constant follows Alembic
    engine.dispose()
    dead = CliRunner().invoke(
        app, ["db", "upgrade"], env={"SCANNER_DATABASE_URL": "postgresql+psycopg://u:pw9@127.0.0.1:1/x"}
    )
    assert dead.exit_code == 1 and "migration failed" in dead.stderr and "pw9" not in dead.stderr


def test_network_calls_take_model_batch_inputs_apart_from_the_images_per_batch() -> None:
    """SCANNER_MODEL_BATCH sets the network inputs per call; 0 (the default) picks the device's size."""
    import torch

    from scanner.detector.networks import model_batch_size

    settings = Settings.from_env({"SCANNER_BATCH_SIZE": "64", "SCANNER_MODEL_BATCH": "7"})
    assert (settings.batch_size, settings.model_batch) == (64, 7)
    assert model_batch_size(torch.device("cpu"), settings.model_batch) == 7
    assert Settings.from_env({}).model_batch == 0
    assert model_batch_size(torch.device("cpu")) == 24 and model_batch_size(torch.device("cuda")) == 256
    with pytest.raises(ValueError, match="SCANNER_MODEL_BATCH"):
        Settings.from_env({"SCANNER_MODEL_BATCH": "-1"})


def test_network_calls_count_mirror_images_as_inputs_and_score_every_view_once() -> None:
    """A call holds at most `step` inputs (a mirrored view counts twice), never splits a view from its mirror
    image, and a view needing more than `step` still gets a call of its own."""
    import torch

    from scanner.detector.networks import chunk_bounds, predict_in_chunks

    mirror = torch.tensor([True, False, True, True, False, False, True])
    assert chunk_bounds(7, mirror, 4) == [(0, 2), (2, 4), (4, 7)]
    assert chunk_bounds(7, None, 4) == [(0, 4), (4, 7)]
    assert chunk_bounds(3, torch.ones(3, dtype=torch.bool), 1) == [(0, 1), (1, 2), (2, 3)]
    assert chunk_bounds(0, None, 4) == []
    calls: list[int] = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        return torch.stack([torch.zeros(len(batch)), batch.mean(dim=(1, 2, 3))], dim=1)

    views = torch.randn(7, 3, 4, 4)
    chunked = predict_in_chunks(forward, views, mirror, 4, torch.device("cpu"))
    whole = predict_in_chunks(forward, views, mirror, 100, torch.device("cpu"))
    assert calls == [3, 4, 4, 11]
    assert chunked == pytest.approx(whole, abs=1e-6) and len(chunked) == 7


def test_bad_settings_name_the_variable_and_create_no_job(tmp_path: Path) -> None:
    from scanner.settings import SettingsError

    with pytest.raises(SettingsError, match="SCANNER_BATCH_SIZE must be an integer, not 'abc'"):
        Settings.from_env({"SCANNER_BATCH_SIZE": "abc"})
    with pytest.raises(SettingsError, match="SCANNER_JIT must be"):
        Settings.from_env({"SCANNER_JIT": "maybe"})
    for variable in ("SCANNER_HTTP_TIMEOUT", "SCANNER_LEASE_SECONDS", "SCANNER_STALL_TIMEOUT", "SCANNER_HTTP_BACKOFF"):
        for value in ("nan", "inf", "-inf"):  # nan is neither above nor below 0: it once passed every check
            with pytest.raises(SettingsError, match=f"{variable} must be a finite number"):
                Settings.from_env({variable: value})
    db = tmp_path / "x.db"
    env = {"SCANNER_DATABASE_URL": f"sqlite:///{db}"}
    (tmp_path / "a.png").write_bytes(b"")
    runner = CliRunner()
    zero = runner.invoke(app, ["submit", str(tmp_path / "a.png"), "--batch-size", "0"], env=env)
    assert zero.exit_code == 2 and "SCANNER_BATCH_SIZE (--batch-size) must be greater than 0" in zero.stderr
    gpu = runner.invoke(app, ["submit", str(tmp_path / "a.png"), "--device", "gpu"], env=env)
    assert gpu.exit_code == 2 and "cuda:N" in gpu.stderr and "Traceback" not in gpu.output
    missing_cuda = runner.invoke(app, ["submit", str(tmp_path / "a.png"), "--device", "cuda"], env=env)
    assert missing_cuda.exit_code == 1 and "CUDA is not available" in missing_cuda.stderr
    assert not db.exists()  # no job row (not even a database) before the settings and device are checked


def test_readme_lists_every_setting() -> None:
    from scanner.settings import ENV_NAMES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `SCANNER_")}
    listed = {name for cell in table for name in cell.replace("`", "").split(", ")}
    assert set(ENV_NAMES.values()) <= listed, set(ENV_NAMES.values()) - listed
    assert set(ENV_NAMES) == {f.name for f in __import__("dataclasses").fields(Settings)} - {"http_max_redirects"}


def _job_at_0004(url: str) -> Any:
    """A database at revision 0004 holding job 1 and verdict 7 (fake, 0.75); its engine."""
    from sqlalchemy import text

    from scanner.db import upgrade

    upgrade(url, "0004")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO jobs (id, created_at, status, mode, sources, sources_key, model_version, threshold, "
            "items_total, items_done, items_error, items_flagged, items_skipped) VALUES "
            "(1, CURRENT_TIMESTAMP, 'finished', 'embedded', '[]', 'k', 'm', 0.5, 2, 1, 1, 1, 0)"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO verdicts (id, sha256, model_version, score, label, threshold, created_at) "
            "VALUES (7, 'abc', 'm', 0.75, 'fake', 0.5, CURRENT_TIMESTAMP)"
        ))  # fmt: skip
    return engine


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0005_copies_scores_and_labels_and_goes_back(backend: str, tmp_path: Path, request: Any) -> None:
    from sqlalchemy import text

    from scanner.db import upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = _job_at_0004(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO items (id, job_id, uri, kind, status, verdict_id) VALUES "
            "(1, 1, '/a.png', 'file', 'done', 7), (2, 1, '/b.png', 'file', 'error', NULL)"
        ))  # fmt: skip
    upgrade(url, "0005")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, score, label FROM items ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [(1, 0.75, "fake"), (2, None, None)]
    from alembic import command

    from scanner.db import alembic_config

    command.downgrade(alembic_config(url), "0004")
    assert current_revision(engine) == "0004"
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0009_lets_an_undone_decision_stop_counting_and_goes_back(
    backend: str, tmp_path: Path, request: Any
) -> None:
    from alembic import command
    from sqlalchemy import text

    from scanner.db import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = _job_at_0004(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO items (id, job_id, uri, kind, status, verdict_id) VALUES "
                                "(1, 1, '/a.png', 'file', 'done', 7)"))  # fmt: skip
        connection.execute(text(
            "INSERT INTO decisions (id, item_id, decision, reviewer, created_at) VALUES "
            "(1, 1, 'real', 'ann', CURRENT_TIMESTAMP), (2, 1, 'fake', 'ann', CURRENT_TIMESTAMP)"
        ))  # fmt: skip
    upgrade(url, "0009")
    view = text("SELECT latest_decision FROM flagged_items WHERE item_id = 1")
    with engine.begin() as connection:
        assert connection.scalar(view) == "fake"
        connection.execute(text("UPDATE decisions SET retracted_at = CURRENT_TIMESTAMP, retracted_by = 'ann' "
                                "WHERE id = 2"))  # fmt: skip
        assert connection.scalar(view) == "real"  # the undone fake no longer counts, and is still there
        assert connection.scalar(text("SELECT count(*) FROM decisions")) == 2
    command.downgrade(alembic_config(url), "0008")
    with engine.connect() as connection:
        assert connection.scalar(view) == "fake"  # the retraction is forgotten, the decision kept
    assert current_revision(engine) == "0008"
    engine.dispose()


def test_threads_follow_a_containers_cpu_quota(tmp_path: Path) -> None:
    """In a container limited to 2 CPUs on a large host, torch counted the host's cores and spun that many threads."""
    from scanner.settings import available_cores, cgroup_cpus

    host = len(os.sched_getaffinity(0))
    assert cgroup_cpus(tmp_path) is None and available_cores(tmp_path) == host  # no quota: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(tmp_path) is None and available_cores(tmp_path) == host
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpus(tmp_path) == 1.5 and available_cores(tmp_path) == 1  # whole cores, never more than allowed
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1: half a core
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cores(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{400000 * host}\n")
    assert available_cores(tmp_path) == host  # a quota above the affinity: the affinity


def _scoring_process(folder: Path) -> subprocess.Popen[str]:
    """Another process that scores on this host: it marks itself busy once, then waits for its stdin to close."""
    code = (
        f"import sys; from pathlib import Path; from scanner.pipeline.cpu_share import CoreShare; "
        f"print(CoreShare(4, Path({str(folder)!r})).threads(), flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip()  # its marker is written
    return child


def test_processes_scoring_on_one_host_share_its_cores(tmp_path: Path) -> None:
    """Two `scanner worker` processes on one host each took every core; now each takes cores / busy processes,
    and gets them back when the other stops or goes idle."""
    from scanner.pipeline.cpu_share import CoreShare

    folder = tmp_path / "scoring"
    share = CoreShare(4, folder, recent_seconds=2.0)
    assert share.threads() == 4
    first, second = _scoring_process(folder), _scoring_process(folder)
    try:
        assert share.threads() == 1  # three busy processes on four cores
        second.kill()
        second.wait()
        assert share.threads() == 2  # a dead process's marker is dropped at once
        time.sleep(2.2)
        assert share.threads() == 4  # alive but idle for longer than recent_seconds
    finally:
        for child in (first, second):
            child.kill()
            child.wait()
    assert share.threads() == 4
    share.leave()
    assert not list(folder.iterdir())  # the dead processes' markers went at that count, this one's on leaving


def test_the_model_scores_with_its_share_of_the_cores(tiny_model: Path, tmp_path: Path) -> None:
    """Without SCANNER_TORCH_THREADS, each network call takes the process's current share; with it, the setting."""
    import torch

    from scanner.detector.views import ImageViews
    from scanner.pipeline.cpu_share import CoreShare
    from scanner.pipeline.model import ModelRunner
    from tests.conftest import make_settings

    before = torch.get_num_threads()
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", tiny_model)
    runner = ModelRunner(replace(settings, torch_threads=0))
    runner.share = CoreShare(2, tmp_path / "scoring")
    size = runner.loaded.preprocess.decoding.size
    views = [ImageViews(torch.zeros(1, 3, size, size))]
    other = _scoring_process(tmp_path / "scoring")
    try:
        runner.score(views)
        assert torch.get_num_threads() == 1
        other.kill()
        other.wait()
        runner.score(views)
        assert torch.get_num_threads() == 2
        pinned = ModelRunner(replace(settings, torch_threads=1))
        pinned.score(views)
        assert pinned.share is None and torch.get_num_threads() == 1
    finally:
        other.kill()
        other.wait()
        runner.close()
        torch.set_num_threads(before)
