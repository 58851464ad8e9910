"""Faults and hostile input that once lost work, hung, or printed what they should not (issue 10)."""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from scanner.cli import app
from scanner.db import SCHEMA_HEAD, Item, Job, Skipped, current_revision, make_engine
from scanner.moderation.reports import report_rows
from scanner.pipeline.jobs import canonical_sources, create_job
from scanner.pipeline.model import model_identity
from scanner.pipeline.sources import Expansion, ItemSpec, expand_sources
from scanner.pipeline.submit import open_database, submit
from scanner.settings import Settings
from tests.conftest import fresh_pg_database, settings_env
from tests.httpserver import HostileServer
from tests.imaging import encode, noisy_image, smooth_image
from tests.workers import SCANNER


def _cut_after(specs: list[ItemSpec], count: int = 1000) -> Iterator[ItemSpec]:
    """Items whose `count`+1st raises KeyboardInterrupt: a submit interrupted while recording its items."""
    for index, spec in enumerate(specs):
        if index == count:
            raise KeyboardInterrupt
        yield spec


def test_interrupted_job_creation_resumes_with_every_item(settings: Settings, tmp_path: Path) -> None:
    paths = [str(tmp_path / f"missing_{index:05d}.png") for index in range(3000)]
    (tmp_path / "real.png").write_bytes(encode(noisy_image(1, 32)))
    arguments = [*paths, str(tmp_path / "real.png")]
    sessions = open_database(settings)
    version, threshold = model_identity(settings)
    sources = canonical_sources(arguments)
    expansion = expand_sources(sources)
    with pytest.raises(KeyboardInterrupt):
        create_job(sessions, sources, _cut_after(expansion.items), version, threshold, "embedded")
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 1000  # the first chunk was written
        assert session.scalar(select(Job.status)) == "creating"
    result = submit(settings, arguments, wait=True)
    assert result.resumed
    summary = result.summary
    assert summary["finished"] and summary["items"] == 3001
    assert (summary["done"], summary["errors_by_code"]) == (1, {"not_found": 3000})
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
        assert session.scalar(select(func.count(func.distinct(Item.uri)))) == 3001


def test_resume_key_is_the_absolute_path_not_the_typed_one(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for side in ("a", "b"):
        (tmp_path / side / "images").mkdir(parents=True)
        (tmp_path / side / "images" / f"{side}.png").write_bytes(encode(noisy_image(ord(side), 32)))
    sessions = open_database(settings)
    version, threshold = model_identity(settings)
    monkeypatch.chdir(tmp_path / "a")
    sources = canonical_sources(["images"])
    assert sources == [str(tmp_path / "a" / "images")]
    unfinished, _ = create_job(sessions, sources, expand_sources(sources), version, threshold, "embedded")
    monkeypatch.chdir(tmp_path / "b")
    result = submit(settings, ["images"], wait=True)
    assert not result.resumed and result.summary["job_id"] != unfinished
    with sessions() as session:
        uris = list(session.scalars(select(Item.uri).where(Item.job_id == result.summary["job_id"])))
    assert uris == [str(tmp_path / "b" / "images" / "b.png")]


def test_resume_command_finishes_a_job_by_id(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(encode(noisy_image(3, 32)))
    sessions = open_database(settings)
    version, threshold = model_identity(settings)
    sources = canonical_sources([str(tmp_path)])
    job_id, _ = create_job(sessions, sources, expand_sources(sources), version, threshold, "embedded")
    env = settings_env(settings)
    runner = CliRunner()
    done = runner.invoke(app, ["resume", str(job_id)], env=env)
    assert done.exit_code == 0, done.output
    assert f"resumed {job_id} finished: 1 scanned" in done.stdout
    missing = runner.invoke(app, ["resume", "999999"], env=env)
    assert missing.exit_code == 1 and "no job with id 999999" in missing.stderr
    with sessions.begin() as session:
        session.get(Job, job_id).model_version = "another-model"  # type: ignore[union-attr]
    other = runner.invoke(app, ["resume", str(job_id)], env=env)
    assert other.exit_code == 1 and "another-model" in other.stderr


def test_non_utf8_file_names_are_stored_losslessly_and_scanned(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    raw_name = os.fsdecode(b"caf\xe9-\xff.png")
    (folder / raw_name).write_bytes(encode(noisy_image(4, 32)))
    (folder / os.fsdecode(b"notes-\xfe.txt")).write_text("x")
    named = os.fsdecode(os.fsencode(str(tmp_path)) + b"/gone-\xe9.png")
    summary = submit(settings, [str(folder), named], wait=True).summary
    assert (summary["done"], summary["errors_by_code"], summary["skipped"]) == (1, {"not_found": 1}, 1)
    with open_database(settings)() as session:
        rows = {row["uri"]: row for row in report_rows(session, summary["job_id"])}
    assert str(folder / "caf%E9-%FF.png") in rows and rows[str(folder / "caf%E9-%FF.png")]["status"] == "done"
    table = CliRunner().invoke(app, ["report", str(summary["job_id"])], env=settings_env(settings))
    assert table.exit_code == 0 and "caf%E9-%FF.png" in table.stdout
    again = submit(settings, [str(folder), named], wait=True)  # the same arguments find the same (finished) work
    assert again.summary["job_id"] != summary["job_id"] and again.summary["done"] == 1


def test_fifo_and_unlistable_directory_are_skipped_with_a_reason(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    (folder / "ok.png").write_bytes(encode(noisy_image(5, 32)))
    (folder / "locked" / "hidden.png").write_bytes(encode(noisy_image(6, 32)))
    os.mkfifo(folder / "pipe.jpg")
    os.mkfifo(tmp_path / "named.fifo")
    (folder / "locked").chmod(0)
    env = {
        **os.environ,
        "SCANNER_DATABASE_URL": f"sqlite:///{tmp_path / 'scan.db'}",
        "SCANNER_MODEL": str(tiny_model),
        "SCANNER_DEVICE": "cpu",
    }
    command = [SCANNER, "submit", str(folder), str(tmp_path / "named.fifo"), "--json"]
    if os.geteuid() == 0:  # root lists everything: drop the capabilities that bypass permissions
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    finally:
        (folder / "locked").chmod(0o755)
    assert result.returncode == 0, result.stderr[-2000:]
    status = CliRunner().invoke(app, ["status", "1", "--json"], env=env)
    skipped = {Path(s["path"]).name: s["reason"] for s in __import__("json").loads(status.stdout)["skipped_files"]}
    assert skipped == {"pipe.jpg": "fifo", "named.fifo": "fifo", "locked": "permission_denied"}


def test_user_text_is_neither_markup_nor_terminal_control(settings: Settings, tmp_path: Path) -> None:
    env = settings_env(settings)
    runner = CliRunner()
    folder = tmp_path / "in"
    folder.mkdir()
    hostile = "\x1b]0;pwned\x07[bold]x[red].png"
    (folder / hostile).write_bytes(encode(smooth_image(7, 32)))
    job = runner.invoke(app, ["submit", str(folder), "--json"], env=env)
    assert job.exit_code == 0, job.output
    job_id = __import__("json").loads(job.stdout)["job_id"]
    for args in (["report", str(job_id)], ["status", str(job_id)], ["jobs"]):
        out = runner.invoke(app, args, env=env)
        assert out.exit_code == 0 and "\x1b" not in out.stdout and "\x07" not in out.stdout, args
    assert "\\x1b]0;pwned\\x07[bold]x[red].png" in runner.invoke(app, ["report", str(job_id)], env=env).stdout
    with open_database(settings)() as session:
        item_id = session.scalar(select(Item.id).where(Item.job_id == job_id))
    bad = runner.invoke(app, ["review", str(item_id), "--decision", "[/bold]"], env=env)
    assert bad.exit_code == 1 and "Traceback" not in bad.output and "[/bold]" in bad.stderr
    missing = runner.invoke(app, ["submit", "--from-file", str(tmp_path / "nope[/x].txt")], env=env)
    assert missing.exit_code == 1 and "nope[/x].txt" in missing.stderr and len(missing.stderr.splitlines()) <= 2
    named = runner.invoke(app, ["review", str(item_id), "--decision", "fake", "--reviewer", "\x1b[31mmallory"], env=env)
    assert named.exit_code == 0 and "\x1b" not in named.stdout


def test_review_rejects_bad_ids_and_names_with_one_line(settings: Settings, tmp_path: Path) -> None:
    env = settings_env(settings)
    runner = CliRunner()
    (tmp_path / "x.png").write_bytes(encode(noisy_image(8, 32)))
    job_id = submit(settings, [str(tmp_path)], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        item_id = session.scalar(select(Item.id).where(Item.job_id == job_id))
    for huge_id in ("3000000000", "99999999999999999999"):  # over PostgreSQL's INTEGER, then over SQLite's
        huge = runner.invoke(app, ["review", huge_id, "--decision", "fake"], env=env)
        assert huge.exit_code == 1 and huge.stderr == f"error: no item with id {huge_id}\n", huge.output
        for command in (["report", huge_id], ["status", huge_id], ["resume", huge_id], ["export-labels", huge_id,
                        "--out", str(tmp_path / "out")]):  # fmt: skip
            missing = runner.invoke(app, command, env=env)
            assert missing.exit_code == 1 and missing.stderr == f"error: no job with id {huge_id}\n", missing.output
    unwritable = runner.invoke(app, ["report", str(job_id), "--output", str(tmp_path / "no" / "r.csv")], env=env)
    assert unwritable.exit_code == 1 and "cannot write" in unwritable.stderr and unwritable.stderr.count("\n") == 1
    long_name = runner.invoke(app, ["review", str(item_id), "--decision", "fake", "--reviewer", "r" * 300], env=env)
    assert long_name.exit_code == 1 and "longer than 128" in long_name.stderr and "Traceback" not in long_name.output
    ok = runner.invoke(app, ["review", str(item_id), "--decision", "fake", "--reviewer", "r" * 128], env=env)
    assert ok.exit_code == 0, ok.output


def test_url_passwords_never_reach_a_report(settings: Settings, tmp_path: Path) -> None:
    env = settings_env(settings)
    runner = CliRunner()
    with HostileServer() as server:
        urls = [server.url(name).replace("http://", "http://alice:s3cr3t@") for name in ("good.png", "missing")]
        summary = submit(settings, [*urls, server.url("to-secret")], wait=True).summary
    assert (summary["done"], summary["errors"]) == (1, 2)
    job = str(summary["job_id"])
    with open_database(settings)() as session:  # not stored either: the error messages quote the URLs
        stored = [
            (row.error_message, row.final_url)
            for row in session.scalars(select(Item).where(Item.error_code.isnot(None)))
        ]
    assert len(stored) == 2 and not any("s3cr3t" in str(row) or "hunter2" in str(row) for row in stored), stored
    assert any("HTTP 404 from http://bob:***@" in str(message) for message, _ in stored), stored
    for fmt in ("table", "csv", "json", "jsonl", "html"):
        out = runner.invoke(app, ["report", job, "--format", fmt], env=env)
        assert out.exit_code == 0 and "alice:***@" in out.stdout, fmt
        assert "s3cr3t" not in out.stdout and "hunter2" not in out.stdout, fmt


def test_items_of_other_jobs_are_not_scanned(settings: Settings, tmp_path: Path) -> None:
    from scanner.pipeline.scan import ScanContext, scan_batch

    (tmp_path / "a.png").write_bytes(encode(noisy_image(9, 32)))
    (tmp_path / "b.png").write_bytes(encode(noisy_image(10, 32)))
    sessions = open_database(settings)
    version, threshold = model_identity(settings)
    first, _ = create_job(sessions, ["a"], Expansion([ItemSpec(str(tmp_path / "a.png"), "file")], []), version,
                       threshold, "distributed")  # fmt: skip
    second, _ = create_job(sessions, ["b"], Expansion([ItemSpec(str(tmp_path / "b.png"), "file")], []), version,
                        threshold, "distributed")  # fmt: skip
    with sessions() as session:
        ids = {job: session.scalar(select(Item.id).where(Item.job_id == job)) for job in (first, second)}
    ctx = ScanContext.create(settings, sessions)
    try:
        scan_batch(ctx, first, [ids[first], ids[second]])
    finally:
        ctx.close()
    with sessions() as session:
        statuses = {job: session.scalar(select(Item.status).where(Item.id == ids[job])) for job in ids}
        skipped = session.scalar(select(func.count()).select_from(Skipped))
    assert statuses == {first: "done", second: "queued"} and skipped == 0


def _deep_png(path: Path) -> None:
    import numpy as np
    from PIL import Image

    array = np.zeros((8000, 8000), dtype=np.uint16)
    array[::50, :] = 60000
    Image.fromarray(array).save(path, optimize=True)  # 64 Mpx, about 125 KB on disk


def _transparent_png(path: Path) -> None:
    import numpy as np
    from PIL import Image

    array = np.zeros((8000, 8000, 4), dtype=np.uint8)
    array[::50, :, :3] = 200
    array[:, :, 3] = 255
    array[::7, :, 3] = 0
    Image.fromarray(array, "RGBA").save(path, optimize=True)  # 64 Mpx with an alpha channel, about 270 KB


@pytest.mark.parametrize("make", [_deep_png, _transparent_png], ids=["16-bit", "rgba"])
def test_a_png_inside_the_pixel_limit_stays_within_memory(
    tmp_path: Path, tiny_model: Path, make: Callable[[Path], None]
) -> None:
    """A small file that decodes to 64 Mpx (16-bit, or with transparency to flatten) peaks under 1.2 GiB RSS."""
    make(tmp_path / "deep.png")
    assert (tmp_path / "deep.png").stat().st_size < 300_000
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.stdout.strip())"
    )
    env = {**os.environ, "SCANNER_DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "SCANNER_MODEL": str(tiny_model)}
    out = subprocess.run(
        [sys.executable, "-c", measure, SCANNER, "submit", str(tmp_path / "deep.png")],
        capture_output=True, text=True, env=env, timeout=300,
    ).stdout.split(maxsplit=2)  # fmt: skip
    code, peak_kib, summary = int(out[0]), int(out[1]), out[2]
    assert code == 0 and "1 scanned" in summary
    assert peak_kib <= 1.2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


@pytest.mark.parametrize("route", ["trickle", "trickle-headers"])
def test_a_trickling_server_cannot_hold_a_url_past_its_deadline(route: str) -> None:
    import time

    from scanner.pipeline.errors import ItemError
    from scanner.pipeline.fetch import FetchPolicy, fetch_url

    policy = FetchPolicy(timeout=2.0, retries=2, backoff=0.1, allow_private=True)
    with HostileServer() as server:
        started = time.monotonic()
        with pytest.raises(ItemError) as caught:
            fetch_url(server.url(route), policy)
        elapsed = time.monotonic() - started
    assert caught.value.code == "timeout" and "deadline" in caught.value.message
    assert policy.total_seconds - 0.5 <= elapsed <= policy.total_seconds + 1.0


def test_export_writes_only_reviewed_bytes_and_never_through_links(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("same.png", "changed.png", "linked.png", "exists.png"):
        (folder / name).write_bytes(encode(noisy_image(len(name) + ord(name[0]), 32)))
    job_id = submit(settings, [str(folder)], wait=True).summary["job_id"]
    env = settings_env(settings)
    runner = CliRunner()
    with open_database(settings)() as session:
        ids = {Path(r["uri"]).name: r["item_id"] for r in report_rows(session, job_id)}
    for item_id in ids.values():
        assert runner.invoke(app, ["review", str(item_id), "--decision", "fake"], env=env).exit_code == 0
    (folder / "changed.png").write_bytes(encode(smooth_image(99, 32)))  # edited after the review
    out = tmp_path / "labels"
    (out / "fake").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "fake" / f"{ids['linked.png']}_linked.png").symlink_to(victim)
    (out / "fake" / f"{ids['exists.png']}_exists.png").write_text("earlier export")
    result = runner.invoke(app, ["export-labels", str(job_id), "--out", str(out)], env=env)
    assert result.exit_code == 1
    assert "changed.png: content changed" in result.stderr and "already exists" in result.stderr
    assert victim.read_text() == "keep me"
    assert (out / "fake" / f"{ids['exists.png']}_exists.png").read_text() == "earlier export"
    assert (out / "fake" / f"{ids['same.png']}_same.png").read_bytes() == (folder / "same.png").read_bytes()
    assert not (out / "fake" / f"{ids['changed.png']}_changed.png").exists()
    assert not list((out / "fake").glob(".*partial"))
    again = runner.invoke(app, ["export-labels", str(job_id), "--out", str(out), "--overwrite"], env=env)
    assert again.exit_code == 1 and victim.read_text() == "keep me"  # links stay untouched even then
    assert (out / "fake" / f"{ids['exists.png']}_exists.png").read_bytes() == (folder / "exists.png").read_bytes()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_migrating_a_new_database_at_once_all_succeed(backend: str, tmp_path: Path) -> None:
    """Four `scanner db upgrade` at the same moment on a new database (as two first `scanner submit`s on a new
    SQLite file, or a compose stack's services, do): before the migration lock, some failed with `table jobs already
    exists` (SQLite) or a duplicate key in `pg_type` (PostgreSQL)."""
    for round_number in range(3):
        urls = iter([f"sqlite:///{tmp_path / f'new{round_number}.db'}"]) if backend == "sqlite" else fresh_pg_database()
        for url in urls:
            env = {**os.environ, "SCANNER_DATABASE_URL": url}
            runs = [
                subprocess.Popen([SCANNER, "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(4)
            ]
            outcomes = [(run.wait(timeout=120), run.stderr.read().decode() if run.stderr else "") for run in runs]
            assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
            engine = make_engine(url)
            try:
                assert current_revision(engine) == SCHEMA_HEAD
            finally:
                engine.dispose()


def test_a_uri_of_any_length_is_scanned_with_the_rest(settings: Settings, tmp_path: Path) -> None:
    """A URI over about 2.7 KB broke PostgreSQL's (job_id, uri) unique index: the job stayed `creating` for ever,
    the short URLs beside it were never scanned, and `resume` failed the same way. A long path likewise."""
    noise = random.Random(7)  # incompressible: PostgreSQL compresses an index entry before checking its size
    deep = tmp_path
    for _ in range(12):  # a 2,900-character path, each name within the file system's 255
        deep = deep / "".join(noise.choice(string.ascii_letters) for _ in range(240))
    deep.mkdir(parents=True)
    (deep / "face.png").write_bytes(encode(noisy_image(31, 32)))
    with HostileServer() as server:
        long_url = server.url("good.png") + "?pad=" + "".join(noise.choice(string.ascii_letters) for _ in range(3_000))
        urls = [server.url("good.png"), long_url, server.url("good.jpg")]
        summary = submit(settings, [*urls, str(deep / "face.png")], wait=True).summary
        assert (summary["items"], summary["done"], summary["errors"]) == (4, 4, 0), summary
        again = submit(settings, [*urls, str(deep / "face.png")], wait=True).summary  # a second job, the same rows
    assert again["items"] == 4
    with open_database(settings)() as session:
        assert session.scalar(select(func.count()).select_from(Item).where(Item.job_id == summary["job_id"])) == 4
        assert session.scalar(select(Job.status).where(Job.id == summary["job_id"])) == "finished"


OLD_JOB = (
    "INSERT INTO jobs (id, created_at, sources, status, mode, model_version, threshold, items_total, items_done, "
    "items_error, items_flagged, items_skipped, sources_key) "
    "VALUES (1, CURRENT_TIMESTAMP, '[]', 'creating', 'embedded', 'm', 0.5, 0, 0, 0, 0, 0, 'k')"
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_items_recorded_before_the_uri_key_get_theirs(backend: str, tmp_path: Path) -> None:
    """Migration 0006 fills items.uri_key for rows written before it, so resuming such a job adds no duplicates."""
    from sqlalchemy import text

    from scanner.db import upgrade, uri_key

    urls = iter([f"sqlite:///{tmp_path / 'old.db'}"]) if backend == "sqlite" else fresh_pg_database()
    for url in urls:
        upgrade(url, "0005")
        engine = make_engine(url)
        names = ["/a.png", "/caf\u00e9.png", "/" + "z" * 500 + ".png"]
        with engine.begin() as connection:
            connection.execute(text(OLD_JOB))
            for name in names:
                connection.execute(text("INSERT INTO items (job_id, uri, kind, status) VALUES (1, :uri, 'file', "
                                        "'queued')"), {"uri": name})  # fmt: skip
        upgrade(url)
        with engine.begin() as connection:
            keys = dict(connection.execute(text("SELECT uri, uri_key FROM items")).all())
            assert keys == {name: uri_key(name) for name in names}
            duplicate = (
                "INSERT INTO items (job_id, uri, uri_key, kind, status) VALUES (1, :uri, :key, 'file', 'queued')"
            )
            with pytest.raises(Exception, match="(?i)unique"):
                with connection.begin_nested():
                    connection.execute(text(duplicate), {"uri": names[1], "key": uri_key(names[1])})
        engine.dispose()


def _big_job(url: str, items: int) -> int:
    """A finished job of `items` scored rows, written in bulk (no scan): what a large report reads."""
    from sqlalchemy import insert

    from scanner.db import upgrade, uri_key, utcnow

    upgrade(url)
    engine = make_engine(url)
    now = utcnow()
    with engine.begin() as connection:
        job_id = connection.execute(
            insert(Job).returning(Job.id),
            [{"sources": ["/big"], "sources_key": "big", "model_version": "m", "threshold": 0.5, "mode": "embedded",
              "status": "finished", "created_at": now, "finished_at": now, "items_total": items}],
        ).scalar_one()  # fmt: skip
        for start in range(0, items, 20_000):
            rows = [{"job_id": job_id, "uri": f"/big/{n:07d}-{'x' * 60}.jpg", "uri_key": uri_key(str(n)),
                     "kind": "file", "status": "done", "score": n / items, "label": "real", "scanned_at": now}
                    for n in range(start, min(items, start + 20_000))]  # fmt: skip
            connection.execute(insert(Item), rows)
    engine.dispose()
    return int(job_id)


def _peak_submit_kib(folder: Path, env: dict[str, str]) -> tuple[int, str]:
    """Peak RSS (KiB) of one `scanner submit` of `folder` in a subprocess, with its summary line."""
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.stdout.strip())"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, SCANNER, "submit", str(folder)], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    code, peak_kib, summary = done.stdout.split(maxsplit=2)
    assert code == "0", done.stderr
    return int(peak_kib), summary


def test_the_raw_bytes_in_flight_stay_within_their_budget(tmp_path: Path, tiny_model: Path) -> None:
    """128 files of 48 MB took 6.55 GB: a batch held all its bytes, plus the batch read ahead. Here 40 files of
    16 MB (a small PNG, then padding) in batches of 20: with the budget at 48 MB the peak stays far below the peak
    with the budget out of the way, which holds two batches' bytes."""
    folder = tmp_path / "big"
    folder.mkdir()
    image = encode(noisy_image(3, 32))
    for index in range(40):
        with (folder / f"{index:02d}.png").open("wb") as handle:
            handle.write(image + index.to_bytes(2, "big"))  # a distinct content each: every file is decoded
            handle.truncate(16 * 1024 * 1024)  # sparse on disk, 16 MB once read
    env = {**os.environ, "SCANNER_MODEL": str(tiny_model), "SCANNER_BATCH_SIZE": "20"}
    peaks = {}
    for budget in (48 * 1024 * 1024, 4 * 1024 * 1024 * 1024):
        url = f"sqlite:///{tmp_path / f'{budget}.db'}"
        environment = {**env, "SCANNER_DATABASE_URL": url, "SCANNER_MAX_BYTES_IN_FLIGHT": str(budget)}
        peaks[budget], summary = _peak_submit_kib(folder, environment)
        assert "40 scanned" in summary, summary
    bounded, unbounded = peaks[48 * 1024 * 1024] / 1024, peaks[4 * 1024 * 1024 * 1024] / 1024
    assert unbounded - bounded > 300, f"peak RSS {bounded:.0f} MiB with the budget, {unbounded:.0f} MiB without"


def test_reports_of_a_large_job_are_streamed(tmp_path: Path) -> None:
    """A 1M-item job's JSON report took 4.8 GB (JSONL 3.1, CSV 1.9): every row was held, then the whole text. HTML
    held every row, then the page, until it was streamed as well."""
    url = f"sqlite:///{tmp_path / 'big.db'}"
    job_id = _big_job(url, 150_000)
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = {**os.environ, "SCANNER_DATABASE_URL": url}
    for fmt in ("json", "jsonl", "csv", "html"):
        out_file = tmp_path / f"report.{fmt}"
        command = [sys.executable, "-c", measure, SCANNER, "report", str(job_id), "--format", fmt, "--output"]
        done = subprocess.run([*command, str(out_file)], capture_output=True, text=True, env=env, timeout=300)
        code, peak_kib = (int(value) for value in done.stdout.split())
        assert code == 0, done.stderr
        # JSON: 126 MiB streamed, 748 held; HTML imports torch for the thumbnails (257 MiB): 338 streamed, 656 held
        limit = 480 if fmt == "html" else 220
        assert peak_kib < limit * 1024, f"{fmt}: peak RSS {peak_kib / 1024:.0f} MiB"
        if fmt == "json":
            document = json.loads(out_file.read_text())
            assert len(document["items"]) == 150_000 and document["job"]["job_id"] == job_id
        elif fmt == "html":
            assert out_file.read_text().count('{"item_id":') == 150_000
        else:
            assert out_file.read_text().count("\n") == 150_000 + (fmt == "csv")


def test_a_retried_delivery_takes_its_own_lease_back(settings: Settings, tmp_path: Path) -> None:
    """After a killed database connection the task's retry found its own lease, called it 'held by a live worker'
    and left the batch to the reaper with lost_count + 1: three such blips split a healthy batch as poison."""
    from scanner.db import Batch
    from scanner.pipeline.leases import claim_batch, create_batches, lease_holder
    from scanner.pipeline.scan import ScanContext, scan_leased_batch

    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(encode(noisy_image(len(name) + ord(name[0]), 32)))
    sessions = open_database(settings)
    version, threshold = model_identity(settings)
    specs = [ItemSpec(str(tmp_path / name), "file") for name in ("a.png", "b.png")]
    job_id, _ = create_job(sessions, ["x"], Expansion(specs, []), version, threshold, "distributed")
    with sessions.begin() as session:
        item_ids = list(session.scalars(select(Item.id).where(Item.job_id == job_id)))
        (batch_id,) = create_batches(session, job_id, [item_ids])
    ctx = ScanContext.create(settings, sessions)
    try:
        mine = lease_holder(ctx.worker, "task-1")
        first = claim_batch(sessions, job_id, batch_id, mine, 600)  # the first try, then its connection dies
        assert first is not None and first.lost_count == 0
        assert claim_batch(sessions, job_id, batch_id, lease_holder(ctx.worker, "task-2"), 600) is None  # another
        scan_leased_batch(ctx, job_id, batch_id, lambda *_: None, delivery="task-1")  # the retry: the same task id
    finally:
        ctx.close()
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None and (batch.status, batch.lost_count, batch.deliveries) == ("done", 0, 2)
        statuses = set(session.scalars(select(Item.status).where(Item.job_id == job_id)))
    assert statuses == {"done"}


def test_simultaneous_records_of_one_submission_make_one_job(settings: Settings, tmp_path: Path) -> None:
    import threading

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(30):
        (folder / f"{index:03d}.png").write_bytes(encode(smooth_image(index, 32)))
    sessions = open_database(settings)
    version, threshold = model_identity(settings)
    sources = canonical_sources([str(folder)])
    expansion = expand_sources(sources)
    start, results = threading.Barrier(4), []

    def record() -> None:
        start.wait()
        results.append(create_job(sessions, sources, expansion, version, threshold, "embedded"))

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job_id for job_id, _ in results}) == 1 and sorted(created for _, created in results) == [0, 0, 0, 1]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
        assert session.scalar(select(func.count()).select_from(Item)) == 30


def test_a_second_embedded_submit_of_a_running_job_takes_its_own_share(settings: Settings, tmp_path: Path) -> None:
    """A second `scanner submit` of a job another process was scanning re-scored every item beside it (80 s of
    duplicate work): now the two share the job's leased batches, and every URL is fetched once."""
    import time

    from scanner.db import Batch

    with HostileServer() as server:
        listed = tmp_path / "urls.txt"
        listed.write_text("".join(server.url(f"paced.png?{n}") + "\n" for n in range(400)))
        env = {**settings_env(settings), "SCANNER_BATCH_SIZE": "8"}
        command = [SCANNER, "submit", "--from-file", str(listed)]
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sessions = open_database(settings)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the first has scanned a batch: its job is running
            with sessions() as session:
                if session.scalar(select(func.count()).select_from(Item).where(Item.status == "done")):
                    break
            time.sleep(0.2)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        out, err = first.communicate(timeout=300)
        hits = server.server.RequestHandlerClass.hits
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert "resumed" in second.stdout and "400 scanned" in out + second.stdout
    assert len(hits) == 400 and max(hits.values()) == 1, hits.most_common(3)  # no item was read twice
    with sessions() as session:
        assert set(session.scalars(select(Item.status))) == {"done"}
        holders = set(session.scalars(select(Batch.claimed_by)))
        assert session.scalar(select(func.count()).select_from(Job)) == 1
    assert len(holders) == 2, holders  # the second process scanned batches of its own


def test_a_long_list_is_recorded_without_holding_its_lines(tmp_path: Path, tiny_model: Path) -> None:
    """`--from-file` with 1M lines took 1.05 GB (about 1 KB a line). 150,000 lines of missing files (recorded as
    errors, nothing to scan) now peak within a bounded margin of a 10-line list."""
    env = {**os.environ, "SCANNER_MODEL": str(tiny_model), "SCANNER_CACHE_DIR": str(tmp_path / "cache")}
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.stdout.strip())"
    )
    peaks = {}
    for count in (10, 150_000):
        listing = tmp_path / f"{count}.txt"
        listing.write_text("".join(f"/nonexistent/photos/2026/12/{n:08d}-a-longer-name.jpg\n" for n in range(count)))
        environment = {**env, "SCANNER_DATABASE_URL": f"sqlite:///{tmp_path / f'{count}.db'}"}
        done = subprocess.run(
            [sys.executable, "-c", measure, SCANNER, "submit", "--from-file", str(listing)],
            capture_output=True, text=True, env=environment, timeout=600,
        )  # fmt: skip
        code, peak_kib, summary = done.stdout.split(maxsplit=2)
        assert code == "0" and f"error not_found: {count}" in summary, (done.stdout, done.stderr)
        peaks[count] = int(peak_kib) / 1024
    # measured: +88 MiB, most of it SQLite's 64 MiB page cache, whatever the length; the lines held took +204 MiB
    assert peaks[150_000] - peaks[10] < 140, f"peak RSS {peaks[10]:.0f} MiB for 10 lines, {peaks[150_000]:.0f} MiB"
