"""The embedded path end to end on SQLite and PostgreSQL: schema, submit, dedup, errors, resume, reports."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from scanner.db import Item, Job, Skipped, Verdict, current_revision, head_revision, make_engine
from scanner.moderation.reports import render_csv, render_json, report_rows
from scanner.pipeline.jobs import create_job, queued_item_ids
from scanner.pipeline.scan import ScanContext, scan_batch
from scanner.pipeline.sources import expand_sources
from scanner.pipeline.submit import SetupError, open_database, submit
from scanner.settings import Settings
from tests.imaging import encode, noisy_image, png_bomb, smooth_image, variants
from tests.support import items_by_uri


def build_mixed_folder(root: Path) -> dict[str, str | None]:
    """Good, bad and duplicate files; maps each name to the error code it must get (None: scanned)."""
    expected: dict[str, str | None] = {}
    for index in range(6):
        (root / f"real_{index}.png").write_bytes(encode(smooth_image(index, 32)))
        (root / f"fake_{index}.png").write_bytes(encode(noisy_image(index, 32)))
        expected[f"real_{index}.png"] = expected[f"fake_{index}.png"] = None
    nested = root / "nested" / "deeper"
    nested.mkdir(parents=True)
    (nested / "copy_of_fake_0.png").write_bytes((root / "fake_0.png").read_bytes())
    expected["nested/deeper/copy_of_fake_0.png"] = None
    for name, data in variants().items():
        (root / name).write_bytes(data)
        expected[name] = None
    (root / "no_extension").write_bytes(encode(noisy_image(50, 32), "JPEG"))
    expected["no_extension"] = None
    (root / "avif_no_extension").write_bytes(encode(noisy_image(51, 32), "AVIF"))  # found by its ftyp brand
    expected["avif_no_extension"] = None
    (root / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "empty_file"
    (root / "truncated.jpg").write_bytes(encode(noisy_image(7, 64), "JPEG")[:300])
    expected["truncated.jpg"] = "truncated"
    # seeded: about 1 in 300 random tails reads as a truncated PNG rather than a corrupt one
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(47).randbytes(200))
    expected["garbage.png"] = "decode_error"
    (root / "bomb.png").write_bytes(png_bomb())
    expected["bomb.png"] = "too_many_pixels"
    (root / "fake_text.jpg").write_bytes(b"this is not a jpeg at all")
    expected["fake_text.jpg"] = "not_an_image"
    (root / "README.txt").write_text("not an image")
    (root / "data.bin").write_bytes(random.Random(54).randbytes(64))
    return expected


def test_schema_comes_from_migrations(settings: Settings) -> None:
    open_database(settings)
    engine = make_engine(settings.database_url)
    assert current_revision(engine) == head_revision(settings.database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"jobs", "items", "verdicts", "decisions", "skipped", "alembic_version"} <= tables
    uniques = {u["name"] for u in inspect(engine).get_unique_constraints("verdicts")}
    assert "uq_verdicts_sha256_model_version" in uniques
    engine.dispose()


def test_submit_mixed_folder(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    expected = build_mixed_folder(folder)
    missing = tmp_path / "missing.jpg"
    result = submit(settings, [str(folder), str(missing), str(folder / "README.txt")], wait=True)
    summary = result.summary
    assert summary["finished"] and summary["queued"] == 0
    items = items_by_uri(settings, summary["job_id"])
    by_name = {
        Path(uri).relative_to(folder).as_posix(): row for uri, row in items.items() if uri.startswith(str(folder))
    }
    assert set(by_name) == set(expected) | {"README.txt"}
    for name, code in expected.items():
        row = by_name[name]
        assert (row.status, row.error_code) == (("done", None) if code is None else ("error", code)), name
    assert by_name["README.txt"].error_code == "not_an_image"  # named explicitly: an item, not skipped
    assert items[str(missing)].error_code == "not_found"
    assert summary["skipped"] == 1  # data.bin; README.txt was named explicitly
    assert summary["items"] == len(expected) + 2
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        done_hashes = connection.scalars(select(Item.sha256).where(Item.status == "done")).all()
        verdicts = connection.scalar(select(func.count()).select_from(Verdict))
        skipped = connection.scalars(select(Skipped.path)).all()
    engine.dispose()
    assert verdicts == len(set(done_hashes)) == len(done_hashes) - 1  # the nested copy shares a verdict
    assert skipped == [str(folder / "data.bin")]
    assert by_name["nested/deeper/copy_of_fake_0.png"].verdict_id == by_name["fake_0.png"].verdict_id
    assert by_name["exif.jpg"].format == "JPEG"


def test_toy_model_flags_the_noisy_images(settings: Settings, tmp_path: Path) -> None:
    for index in range(4):
        (tmp_path / f"real_{index}.png").write_bytes(encode(smooth_image(100 + index, 32)))
        (tmp_path / f"fake_{index}.png").write_bytes(encode(noisy_image(100 + index, 32)))
    summary = submit(settings, [str(tmp_path)], wait=True).summary
    with open_database(settings)() as session:
        rows = report_rows(session, summary["job_id"])
    scores = {Path(row["uri"]).name: row["score"] for row in rows}
    real = [v for k, v in scores.items() if k.startswith("real")]
    fake = [v for k, v in scores.items() if k.startswith("fake")]
    assert min(fake) > max(real)  # the model's scores reach the report unchanged in order
    flags = [row["label"] == "fake" for row in rows]
    assert flags == sorted(flags, reverse=True) and summary["flagged"] == sum(flags)  # flagged first
    assert all(row["threshold"] == pytest.approx(summary["threshold"]) for row in rows)


def test_rescan_reuses_verdicts_and_resume_finishes_interrupted_job(settings: Settings, tmp_path: Path) -> None:
    for index in range(20):
        (tmp_path / f"img_{index}.png").write_bytes(encode(noisy_image(index, 32)))
    sessions = open_database(settings)
    expansion = expand_sources([str(tmp_path)])
    from scanner.pipeline.model import model_identity

    version, threshold = model_identity(settings)
    job_id, _ = create_job(sessions, [str(tmp_path)], expansion, version, threshold, "embedded")
    ctx = ScanContext.create(settings, sessions)
    with sessions() as session:
        first_batch = queued_item_ids(session, job_id)[:8]
    scan_batch(ctx, job_id, first_batch)
    scan_batch(ctx, job_id, first_batch)  # a redelivered batch writes nothing new
    ctx.close()
    # the process "dies" here; the same submit again resumes the unfinished job
    result = submit(settings, [str(tmp_path)], wait=True)
    assert result.resumed and result.summary["job_id"] == job_id
    assert result.summary["done"] == 20
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Verdict)) == 20
        first_scans = session.scalars(select(Item.scanned_at).where(Item.id.in_(first_batch))).all()
        assert session.get(Job, job_id).finished_at is not None
    again = submit(settings, [str(tmp_path)], wait=True)
    assert not again.resumed and again.summary["job_id"] != job_id and again.summary["done"] == 20
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Verdict)) == 20
        assert session.scalars(select(Item.scanned_at).where(Item.id.in_(first_batch))).all() == first_scans


def test_report_csv_and_json_match_the_database(settings: Settings, tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"f{index}.png").write_bytes(encode(noisy_image(index, 32)))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff broken")
    summary = submit(settings, [str(tmp_path)], wait=True).summary
    with open_database(settings)() as session:
        rows = report_rows(session, summary["job_id"])
        db = {i.uri: i for i in session.scalars(select(Item).where(Item.job_id == summary["job_id"]))}
        verdicts = {v.id: v for v in session.scalars(select(Verdict))}
    parsed = list(csv.DictReader(io.StringIO("".join(render_csv(rows)))))
    document = json.loads("".join(render_json(rows, summary)))
    assert len(parsed) == len(document["items"]) == len(db) == 4
    for csv_row, json_row in zip(parsed, document["items"]):
        item = db[csv_row["uri"]]
        assert csv_row["status"] == json_row["status"] == item.status
        assert int(csv_row["item_id"]) == json_row["item_id"] == item.id
        if item.verdict_id:
            verdict = verdicts[item.verdict_id]
            assert json_row["score"] == pytest.approx(verdict.score)
            assert float(csv_row["score"]) == pytest.approx(verdict.score, abs=1e-4)
            assert csv_row["label"] == verdict.label and csv_row["model_version"] == verdict.model_version
        else:
            assert csv_row["error_code"] == json_row["error_code"] == item.error_code
    assert document["job"]["job_id"] == summary["job_id"]


def test_unmigrated_postgresql_asks_for_db_upgrade(pg_url: str, tiny_model: Path) -> None:
    from tests.conftest import make_settings

    with pytest.raises(SetupError, match="scanner db upgrade"):
        open_database(make_settings(pg_url, tiny_model))


def test_dead_database_is_a_clear_setup_error(tiny_model: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings("postgresql+psycopg://scanner:s3cret@127.0.0.1:1/none", tiny_model)
    with pytest.raises(SetupError) as caught:
        submit(settings, ["/nonexistent"], wait=True)
    assert "cannot use the database" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_frozen_cpu_model_scores_like_the_eager_one(tiny_model: Path, tmp_path: Path) -> None:
    from scanner.detector.preprocess import preprocess_bytes
    from scanner.detector.views import ImageViews
    from scanner.pipeline.model import ModelRunner
    from tests.conftest import make_settings

    settings = make_settings(f"sqlite:///{tmp_path / 'x.db'}", tiny_model)
    frozen, eager = ModelRunner(settings), ModelRunner(settings.with_overrides(jit=False))
    images = [
        ImageViews(preprocess_bytes(encode(noisy_image(i, 32)), frozen.loaded.preprocess.decoding)[None])
        for i in range(12)
    ]
    assert frozen._forward is not frozen.loaded.model  # really traced and frozen
    frozen_scores = [result.score for result in frozen.score(images)]
    assert frozen_scores == pytest.approx([result.score for result in eager.score(images)], abs=1e-5)


def test_decode_threads_keep_torch_single_threaded_without_touching_the_models_threads(settings: Settings) -> None:
    """A decode thread's tensor work must not start OpenMP teams of its own (while they lived, the model's forward
    pass ran 30% slower), and setting that up must leave the model thread's torch thread count alone."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    ctx = ScanContext.create(settings)
    try:
        in_decode_thread = ctx.pool.submit(torch.get_num_threads).result()
        assert torch.get_num_threads() == 2
    finally:
        ctx.close()
        torch.set_num_threads(before)
    assert in_decode_thread == 1


def test_conflicting_rows_are_skipped_and_new_ones_kept(settings: Settings) -> None:
    from scanner.pipeline.sink import insert_ignoring_conflicts

    def rows(shas: str, score: float) -> list[dict]:
        return [{"sha256": sha * 64, "model_version": "m", "score": score, "label": "real", "threshold": 0.5}
                for sha in shas]  # fmt: skip

    sessions = open_database(settings)
    with sessions.begin() as session:
        insert_ignoring_conflicts(session, Verdict, rows("ab", 0.1), ["sha256", "model_version"])
    with sessions.begin() as session:  # a redelivered batch beside new content, as two workers may write
        insert_ignoring_conflicts(session, Verdict, rows("bcd", 0.9), ["sha256", "model_version"])
    with sessions() as session:
        stored = {sha: score for sha, score in session.execute(select(Verdict.sha256, Verdict.score))}
    assert stored == {"a" * 64: 0.1, "b" * 64: 0.1, "c" * 64: 0.9, "d" * 64: 0.9}
