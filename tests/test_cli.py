"""The `scanner` command through CliRunner and as the installed console script."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scanner.cli import app
from scanner.settings import Settings
from tests.conftest import settings_env
from tests.imaging import encode, noisy_image, smooth_image
from tests.workers import SCANNER


def image_folder(root: Path) -> Path:
    """Four images, one of them broken, and a text file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.png").write_bytes(encode(smooth_image(1, 32)))
    (root / "b.png").write_bytes(encode(noisy_image(2, 32)))
    (root / "c.jpg").write_bytes(encode(noisy_image(3, 32), "JPEG"))
    (root / "d.jpg").write_bytes(b"\xff\xd8\xff\xdb broken")
    (root / "notes.txt").write_text("hello")
    return root


def test_submit_status_jobs_report_with_clirunner(settings: Settings, tmp_path: Path) -> None:
    env = settings_env(settings)
    runner = CliRunner()
    folder = image_folder(tmp_path / "in")
    submitted = runner.invoke(app, ["submit", str(folder), "--json", "--batch-size", "2"], env=env)
    assert submitted.exit_code == 0, submitted.output
    summary = json.loads(submitted.stdout)
    for key in ("job_id", "items", "done", "errors", "flagged", "skipped"):
        assert key in summary
    assert (summary["items"], summary["done"], summary["errors"], summary["skipped"]) == (4, 3, 1, 1)
    job = str(summary["job_id"])
    status = runner.invoke(app, ["status", job, "--json"], env=env)
    assert json.loads(status.stdout)["finished"] is True
    assert json.loads(status.stdout)["skipped_files"] == [{"path": str(folder / "notes.txt"), "reason": "not_an_image"}]
    text_status = runner.invoke(app, ["status", job], env=env)
    assert "notes.txt" in text_status.stdout and "error truncated: 1" in text_status.stdout
    assert job in runner.invoke(app, ["jobs"], env=env).stdout
    table = runner.invoke(app, ["report", job], env=env)
    assert table.exit_code == 0 and "d.jpg" in table.stdout
    out = tmp_path / "r.csv"
    assert runner.invoke(app, ["report", job, "--format", "csv", "--output", str(out)], env=env).exit_code == 0
    assert len(list(csv.DictReader(out.open()))) == 4
    flagged = runner.invoke(app, ["report", job, "--format", "jsonl", "--flagged-only"], env=env)
    assert all(json.loads(line)["label"] == "fake" for line in flagged.stdout.splitlines())
    assert len(flagged.stdout.splitlines()) == summary["flagged"]


def test_cli_errors_go_to_stderr_with_exit_code_1(settings: Settings, tmp_path: Path) -> None:
    env = settings_env(settings)
    runner = CliRunner()
    cases = [
        (["status", "424242"], "no job with id 424242"),
        (["report", "424242"], "no job with id 424242"),
        (["report", "1", "--format", "pdf"], "unknown format"),
        (["submit"], "nothing to scan"),
        (["submit", str(tmp_path), "--model", str(tmp_path / "missing.pt")], "model file not found"),
        (["submit", "--from-file", str(tmp_path / "nope.txt")], "cannot read --from-file"),
    ]
    for arguments, message in cases:
        result = runner.invoke(app, arguments, env=env)
        assert result.exit_code == 1, arguments
        assert message in result.stderr, (arguments, result.stderr)
    bad_device = runner.invoke(app, ["info"], env={**env, "SCANNER_DEVICE": "tpu"})
    assert bad_device.exit_code == 2 and "SCANNER_DEVICE" in bad_device.stderr  # bad usage


def test_from_file_and_stdin(settings: Settings, tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "in")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n\n{folder / 'a.png'}\n{folder / 'b.png'}\nftp://example.invalid/x.jpg\n")
    runner = CliRunner()
    env = settings_env(settings)
    from_file = runner.invoke(app, ["submit", "--from-file", str(listing), "--json"], env=env)
    assert json.loads(from_file.stdout)["items"] == 3
    from_stdin = runner.invoke(app, ["submit", "--from-file", "-", "--json"], input=f"{folder / 'c.jpg'}\n", env=env)
    assert json.loads(from_stdin.stdout)["done"] == 1


def test_a_listed_job_records_its_list_once_and_finishes_recording_from_it(settings: Settings, tmp_path: Path) -> None:
    """A 1M-line --from-file took 1.05 GB: every line was held, and stored in the job row. The list is now copied
    line by line under the cache folder, the job records that copy, and a cut recording resumes from it."""
    import hashlib

    from sqlalchemy import delete, select, update

    from scanner.db import Item, Job
    from scanner.pipeline.jobs import sources_key
    from scanner.pipeline.submit import open_database

    folder = image_folder(tmp_path / "in")
    lines = [str(folder / "a.png"), str(folder / "b.png"), str(folder / "a.png"), str(folder / "gone.png")]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    env = settings_env(settings)
    first = CliRunner().invoke(app, ["submit", "--from-file", str(listing), "--json"], env=env)
    assert first.exit_code == 0, first.stderr
    assert (json.loads(first.stdout)["items"], json.loads(first.stdout)["errors"]) == (3, 1)  # one URI once
    sessions = open_database(settings)
    with sessions() as session:
        job = session.scalars(select(Job)).one()
        (source,) = job.sources
        assert source.startswith("list:") and Path(source[5:]).read_text().splitlines() == lines
        expected = hashlib.sha256(json.dumps([lines, job.model_version]).encode()).hexdigest()
        assert job.sources_key == sources_key(job.sources, job.model_version) == expected  # as before: lines
    with sessions.begin() as session:  # as if the recording had been cut after the first item
        session.execute(delete(Item).where(Item.uri != str(folder / "a.png")))
        session.execute(update(Job).values(status="creating", finished_at=None))
    again = CliRunner().invoke(app, ["submit", "--from-file", str(listing), "--json"], env=env)
    assert again.exit_code == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["job_id"], summary["items"], summary["done"], summary["errors"]) == (job.id, 3, 2, 1)
    Path(source[5:]).unlink()  # the copy gone: a cut recording says what to do
    with sessions.begin() as session:
        session.execute(update(Job).values(status="creating", finished_at=None))
    lost = CliRunner().invoke(app, ["resume", str(job.id)], env=env)
    assert lost.exit_code == 1 and "its list is gone" in lost.stderr and "Traceback" not in lost.output


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_a_list_read_in_blocks_gives_the_lines_of_one_whole_read(block: int) -> None:
    """Lines cut at any block boundary (inside CR LF, inside a UTF-8 character, inside a Latin-1 byte run) come out
    as splitting the whole text would."""
    import io

    from scanner.pipeline.sources import iter_source_list

    data = "  /a/caf\u00e9.png\r\n# note\n\n\u00fcber/\u65e5\u672c.jpg\rhttp://x.test/y z.jpg\n".encode()
    data += b"/lat\xe9in.png\n  \n/last-without-newline.png"
    whole = data.decode("utf-8", "surrogateescape").splitlines()
    expected = [line.strip() for line in whole if line.strip() and not line.strip().startswith("#")]
    assert list(iter_source_list(io.BytesIO(data), block)) == expected
    assert expected[0] == "/a/caf\u00e9.png" and expected[-1] == "/last-without-newline.png"


def test_a_list_with_non_utf8_names_is_read_and_a_binary_file_is_refused(settings: Settings, tmp_path: Path) -> None:
    """A path list from `find` may hold Latin-1 names: they name their files. NUL bytes mean it is no list."""
    folder = image_folder(tmp_path / "in")
    latin = os.fsencode(folder) + b"/caf\xe9.png"
    os.rename(folder / "a.png", latin)
    listing = tmp_path / "list.txt"
    listing.write_bytes(latin + b"\n" + os.fsencode(folder / "b.png") + b"\n")
    runner = CliRunner()
    env = settings_env(settings)
    result = runner.invoke(app, ["submit", "--from-file", str(listing), "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    assert (json.loads(result.stdout)["items"], json.loads(result.stdout)["done"]) == (2, 2)
    binary = tmp_path / "photo.jpg"
    binary.write_bytes((folder / "c.jpg").read_bytes())
    for source, data in ((str(binary), None), ("-", binary.read_bytes())):
        refused = runner.invoke(app, ["submit", "--from-file", source], input=data, env=env)
        assert refused.exit_code == 1 and "NUL bytes" in refused.stderr and "Traceback" not in refused.output


def test_installed_command(settings: Settings, tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "in")
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run([SCANNER, "submit", str(folder)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "finished: 3 scanned" in result.stdout and "error truncated: 1" in result.stdout
    info = subprocess.run([SCANNER, "info"], env=env, capture_output=True, text=True, timeout=60)
    assert str(settings.model_path) in info.stdout
    missing = subprocess.run([SCANNER, "status", "999"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no job with id 999" in missing.stderr and missing.stdout == ""
    report = subprocess.run([SCANNER, "report", "1", "--format", "json"], env=env, capture_output=True, text=True)
    document = json.load(io.StringIO(report.stdout))
    assert document["job"]["job_id"] == 1 and len(document["items"]) == 4


def test_importing_the_cli_does_not_import_torch() -> None:
    import sys

    heavy = "('torch', 'matplotlib', 'cv2', 'celery', 'sqlalchemy', 'alembic', 'starlette')"
    probe = f"import sys, scanner.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_python_dash_m_scanner_is_the_command_without_its_entry_point(tmp_path: Path) -> None:
    """A bare GPU machine runs the checkout without installing it: `python -m scanner` from the repository."""
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SCANNER_DATABASE_URL": f"sqlite:///{tmp_path / 'scan.db'}"}
    done = subprocess.run([sys.executable, "-m", "scanner", "models"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "effnet-faces" in done.stdout
