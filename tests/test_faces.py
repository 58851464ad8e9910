"""Face-aware scoring: faces found, the same score on every path, boxes stored and shown, the model registry."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from scanner.cli import app
from scanner.db import Face, Verdict
from scanner.detector.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from scanner.detector.faces import Box, FaceFinder, FaceSettings, face_region
from scanner.detector.networks import precision_runs_natively, predict_scores
from scanner.detector.preprocess import Preprocess, to_tensor
from scanner.detector.schema import CURRENT_FORMAT
from scanner.detector.views import calibrated, combine_views, make_views
from scanner.model_catalog import _input_policy
from scanner.moderation.html_report import with_visuals
from scanner.moderation.reports import report_rows
from scanner.pipeline.submit import open_database, submit
from scanner.registry import registered_models, resolve_model
from scanner.settings import Settings
from tests.conftest import make_settings, settings_env
from tests.imaging import drawn_face, noisy_image, smooth_image
from training.data import find_samples
from training.evaluate import score_samples
from training.metrics import choose_threshold, fit_view_offsets


def test_face_finder_finds_drawn_faces_and_nothing_in_a_gradient() -> None:
    finder = FaceFinder(FaceSettings())
    face = drawn_face(3, size=200)
    boxes = finder.find(face)
    assert len(boxes) == 1
    box = boxes[0]
    assert 40 <= box.w <= 200 and abs((box.x + box.w / 2) - 100) < 30 and abs((box.y + box.h / 2) - 100) < 30
    assert finder.find(smooth_image(1, 200)) == []
    assert finder.find(smooth_image(1, 12)) == []  # too small to hold a face


def test_the_sure_search_finds_the_same_faces_with_a_confidence_at_any_turn() -> None:
    finder = FaceFinder(FaceSettings())
    face = drawn_face(13, size=160, noisy=True)
    boxes, confidence = finder.find_sure(face)
    assert boxes == finder.find(face) and boxes and math.isfinite(confidence)
    upside_down = face.transpose(Image.Transpose.ROTATE_180)
    assert finder.find(upside_down) == []
    assert finder.find_sure(upside_down, 180) == (boxes, confidence)  # searched turned over: the upright face again
    assert finder.find_sure(smooth_image(1, 200)) == ([], -math.inf)
    assert finder.find_sure(smooth_image(1, 12)) == ([], -math.inf)  # too small to hold a face


def test_face_region_is_a_square_inside_the_image() -> None:
    assert face_region(Box(10, 10, 50, 50), 200, 100, 1.6) == (0, 0, 80, 80)
    left, top, right, bottom = face_region(Box(150, 60, 40, 40), 200, 100, 1.6)
    assert right - left == bottom - top == 64 and right <= 200 and bottom <= 100
    assert face_region(Box(0, 0, 90, 90), 120, 60, 2.0) == (15, 0, 75, 60)  # never larger than the image


def test_per_source_threshold_keeps_every_source_within_budget() -> None:
    labels = [0] * 20 + [0] * 20 + [1] * 10
    scores = [i / 100 for i in range(20)] + [0.5 + i / 100 for i in range(20)] + [0.9] * 10
    sources = ["a"] * 20 + ["b"] * 20 + ["a"] * 10
    pooled = choose_threshold(labels, scores, "fpr:0.05")
    per_source = choose_threshold(labels, scores, "source-fpr:0.05", sources)
    b_scores = scores[20:40]
    assert sum(s >= pooled for s in b_scores) / 20 > 0.05  # the pooled rule lets source b run over budget
    assert sum(s >= per_source for s in b_scores) / 20 <= 0.05
    with pytest.raises(ValueError, match="source"):
        choose_threshold(labels, scores, "source-fpr:0.05")


def test_a_source_with_few_reals_allows_none_flagged_without_flagging_nothing_at_all() -> None:
    """Under 20 reals, 5% means none of them flagged: the threshold sits just above its highest real, not at 1.0."""
    labels = [0] * 10 + [0] * 40 + [1] * 10
    scores = [0.1 + i / 50 for i in range(10)] + [i / 100 for i in range(40)] + [0.6 + i / 50 for i in range(10)]
    sources = ["few"] * 10 + ["many"] * 40 + ["many"] * 10
    threshold = choose_threshold(labels, scores, "source-fpr:0.05", sources)
    assert max(scores[:10]) < threshold <= min(scores[50:])  # every fake still caught
    logits = [10 * s - 5 for s in scores]  # any score scale, not only probabilities
    assert max(logits[:10]) < choose_threshold(labels, logits, "source-fpr:0.05", sources) <= min(logits[50:])


def combined(raw: list[float], preprocess: Preprocess) -> float:
    """An image's score written out: each view moved by its kind's logit offset (whole, patch, face), the maximum."""
    if not preprocess.scoring.view_offsets:
        return max(raw)
    image_views, offsets = preprocess.search.image_views, preprocess.scoring.view_offsets
    kinds = ["whole", "patch"][:image_views] + ["face"] * (len(raw) - image_views)
    return max(1 / (1 + math.exp(offsets[k] - math.log(s / (1 - s)))) for s, k in zip(raw, kinds))


def test_view_offsets_put_each_view_kind_at_its_own_threshold() -> None:
    """A patch that scores low on everything still flags the fakes only it separates, once calibrated."""
    reals = [[0.10 + i / 100, 0.01 + i / 1000, 0.3] for i in range(40)]  # whole, patch, one face
    fakes_whole = [[0.95, 0.02, 0.3] for _ in range(10)]  # caught by the whole view
    fakes_patch = [[0.30, 0.20, 0.3] for _ in range(10)]  # only the patch separates these
    per_image = reals + fakes_whole + fakes_patch
    labels = [0] * 40 + [1] * 20
    offsets = fit_view_offsets(per_image, labels, ["s"] * 60, 2, "source-fpr:0.05")
    whole_t = choose_threshold([0] * 40 + [1] * 20, [v[0] for v in per_image], "fpr:0.05")
    assert set(offsets) == {"whole", "patch", "face"}  # by kind, not by position
    assert offsets["whole"] == pytest.approx(math.log(whole_t / (1 - whole_t)))
    assert calibrated(whole_t, offsets["whole"]) == pytest.approx(0.5)
    raw = [max(v) for v in per_image]
    fitted = [combine_views(v, 2, offsets).score for v in per_image]
    raw_t = choose_threshold(labels, raw, "fpr:0.05")
    fitted_t = choose_threshold(labels, fitted, "fpr:0.05")
    assert sum(s >= raw_t for s in raw[40:]) == 10  # the raw maximum misses every patch-only fake
    assert sum(s >= fitted_t for s in fitted[40:]) == 20 and sum(s >= fitted_t for s in fitted[:40]) <= 2
    assert combine_views([0.4, 0.2], 2, {}).score == 0.4  # no offsets: the raw maximum, as before


def test_uncalibrated_and_calibrated_checkpoints(face_model: Path, face_data: Path, tmp_path: Path) -> None:
    """Training calibrates by default (format 3); --no-calibrate-views keeps format 2, and `scanner model
    calibrate` turns such a file into a calibrated one with a new version; a centre-crop model is refused."""
    calibrated_file = read_checkpoint(face_model)
    assert calibrated_file["format"] == CURRENT_FORMAT
    assert len(calibrated_file["preprocess"]["view_offsets"]) == 3
    runner = CliRunner()

    def train_args(out: Path, views: str) -> list[str]:
        return ["train", str(face_data), "--out", str(out), "--arch", "fauxnet", "--epochs", "1", "--size", "32",
                "--max-side", "160", "--views", views, "--augment", "none", "--workers", "0",
                "--threshold-rule", "source-fpr:0.05", "--no-calibrate-views"]  # fmt: skip

    plain = tmp_path / "plain.pt"
    result = runner.invoke(app, train_args(plain, "faces"))
    assert result.exit_code == 0, result.output
    before = read_checkpoint(plain)
    assert before["format"] == CURRENT_FORMAT and "view_offsets" not in before["preprocess"]
    result = runner.invoke(app, ["model", "calibrate", str(plain), str(tmp_path / "cal.pt"), str(face_data)])
    assert result.exit_code == 0, result.output
    after = load_model(tmp_path / "cal.pt", "cpu")
    assert len(after.preprocess.scoring.view_offsets) == 3 and after.version != before["model_version"]
    assert read_checkpoint(tmp_path / "cal.pt")["calibrated_from"] == before["model_version"]
    samples = find_samples(face_data)
    assert 0.0 < after.threshold <= 1.0 and len(score_samples(after, samples, batch_size=4, workers=0)) == len(samples)
    center = tmp_path / "center.pt"
    result = runner.invoke(app, train_args(center, "center"))
    assert result.exit_code == 0, result.output
    for bad in ([1.0, 2.0], [1.0, float("nan"), 2.0], "1,2,3"):
        broken = read_checkpoint(tmp_path / "cal.pt")
        broken["preprocess"]["view_offsets"] = bad
        save_checkpoint(broken, tmp_path / "broken.pt")
        with pytest.raises(CheckpointError, match="view_offsets"):
            load_model(tmp_path / "broken.pt", "cpu")
    result = runner.invoke(app, ["model", "calibrate", str(center), str(tmp_path / "x.pt"), str(face_data)])
    assert result.exit_code == 1 and "nothing to calibrate" in result.output
    assert not (tmp_path / "x.pt").exists()


def test_training_evaluation_and_scanning_give_the_same_score(
    face_model: Path, face_data: Path, tmp_path: Path
) -> None:
    loaded = load_model(face_model, "cpu")
    assert loaded.preprocess.search.uses_faces and read_checkpoint(face_model)["train_config"]["views"] == "faces"
    samples = find_samples(face_data)[:6]
    evaluated = score_samples(loaded, samples, batch_size=4, workers=0)
    finder = FaceFinder(loaded.preprocess.search.faces)
    direct = []
    for sample in samples:
        image = Image.open(sample.path).convert("RGB")
        views = make_views(image, loaded.preprocess, finder)
        assert len(views.tensors) == 1 + len(views.boxes) and views.boxes  # whole image + the face
        with torch.inference_mode():
            direct.append(combined(predict_scores(loaded.model, views.tensors).tolist(), loaded.preprocess))
    assert evaluated == pytest.approx(direct, abs=1e-5)
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", face_model)
    summary = submit(settings, [str(s.path) for s in samples], wait=True).summary
    with open_database(settings)() as session:
        scanned = {row["uri"]: row["score"] for row in report_rows(session, summary["job_id"])}
    assert [scanned[str(s.path)] for s in samples] == pytest.approx(direct, abs=1e-4)


@pytest.fixture(scope="module")
def mirror_model(face_model: Path, face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny face model recalibrated with its whole-image view mirrored (`scanner model calibrate --mirror`)."""
    out = tmp_path_factory.mktemp("mirror") / "mirror.pt"
    args = ["model", "calibrate", str(face_model), str(out), str(face_data), "--mirror", "whole", "--workers", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_mirrored_views_average_each_with_its_mirror_image_on_every_path(
    mirror_model: Path, face_model: Path, face_data: Path, tmp_path: Path
) -> None:
    """A format-4 file with a new version; evaluation and the traced scanner score the whole-image view as the
    mean logit of the view and its mirror image, and the faces as before; `--mirror none` takes it off again."""
    before, after = read_checkpoint(face_model), read_checkpoint(mirror_model)
    assert after["format"] == CURRENT_FORMAT and after["preprocess"]["mirror"] == ["whole"]
    assert after["model_version"] != before["model_version"] and after["calibrated_from"] == before["model_version"]
    loaded = load_model(mirror_model, "cpu")
    samples = find_samples(face_data)[:6]
    finder = FaceFinder(loaded.preprocess.search.faces)
    direct = []
    for sample in samples:
        views = make_views(Image.open(sample.path).convert("RGB"), loaded.preprocess, finder).tensors
        with torch.inference_mode():
            logits = loaded.model(views)
            logits[0] = (logits[0] + loaded.model(views[:1].flip(-1))[0]) / 2  # the whole image; faces as they are
            raw = torch.softmax(logits, dim=1)[:, 1].tolist()
            mirrored = torch.tensor([True] + [False] * (len(views) - 1))
            assert predict_scores(loaded.model, views.flip(-1), mirrored)[0] == pytest.approx(raw[0], abs=1e-6)
        assert len(raw) > 1 and raw[1:] == pytest.approx(predict_scores(loaded.model, views)[1:].tolist(), abs=1e-6)
        direct.append(combined(raw, loaded.preprocess))
    assert score_samples(loaded, samples, batch_size=4, workers=0) == pytest.approx(direct, abs=1e-5)
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", mirror_model, batch_size=3, model_batch=3)
    assert settings.jit  # the traced copy must mirror too, in network calls of 3 views that split images of 2
    summary = submit(settings, [str(s.path) for s in samples], wait=True).summary
    with open_database(settings)() as session:
        scanned = {row["uri"]: row["score"] for row in report_rows(session, summary["job_id"])}
    assert [scanned[str(s.path)] for s in samples] == pytest.approx(direct, abs=1e-4)
    undo = ["model", "calibrate", str(mirror_model), str(tmp_path / "plain.pt"), str(face_data), "--mirror", "none"]
    result = CliRunner().invoke(app, [*undo, "--workers", "0"])
    assert result.exit_code == 0, result.output
    plain = read_checkpoint(tmp_path / "plain.pt")
    assert plain["format"] == CURRENT_FORMAT and "mirror" not in plain["preprocess"]
    bad = CliRunner().invoke(app, [*undo[:5], "--mirror", "left-ear", "--workers", "0"])
    assert bad.exit_code == 1 and "left-ear" in bad.output and "whole, patch, face" in bad.output
    for kinds in (["whole", "whole"], "whole", [3]):
        broken = dict(after, preprocess={**after["preprocess"], "mirror": kinds})
        save_checkpoint(broken, tmp_path / "broken.pt")
        with pytest.raises(CheckpointError, match="mirror"):
            load_model(tmp_path / "broken.pt", "cpu")


def test_a_mirror_band_mirrors_only_views_near_the_threshold_on_every_path(
    mirror_model: Path, face_data: Path, tmp_path: Path
) -> None:
    """`scanner model calibrate --mirror-margin M`: a format-7 file whose band is the threshold's logit +- M. Every
    view is scored plain; a view of a mirrored kind whose calibrated plain logit lies in the band is averaged with
    its mirror image (a second call holding only those), the others keep their plain score, the same in evaluation
    and in the scanner; margin 0 mirrors every view again."""
    from scanner.detector.views import score_flat_views

    out = tmp_path / "band.pt"
    args = ["model", "calibrate", str(mirror_model), str(out), str(face_data), "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--mirror-margin", "0.5"])
    assert result.exit_code == 0, result.output
    banded = read_checkpoint(out)
    middle = math.log(banded["threshold"] / (1 - banded["threshold"]))
    assert banded["format"] == CURRENT_FORMAT
    assert banded["preprocess"]["mirror_band"] == pytest.approx([middle - 0.5, middle + 0.5])
    assert "scored mirrored when within 0.5 logits of the threshold" in _input_policy(
        Preprocess.from_dict(banded["preprocess"])
    )
    loaded = load_model(out, "cpu")
    samples = find_samples(face_data)[:8]
    finder = FaceFinder(loaded.preprocess.search.faces)
    stacks = [make_views(Image.open(s.path).convert("RGB"), loaded.preprocess, finder).tensors for s in samples]
    offsets = loaded.preprocess.scoring.view_offsets
    with torch.inference_mode():
        plain = [predict_scores(loaded.model, views).tolist() for views in stacks]
    wholes = sorted(math.log(p[0] / (1 - p[0])) - offsets["whole"] for p in plain)
    low, high = wholes[2] - 1e-4, wholes[5] + 1e-4  # a band that holds some whole-image views and not others
    crafted = dict(banded, preprocess={**banded["preprocess"], "mirror_band": [low, high]})
    save_checkpoint(crafted, tmp_path / "crafted.pt")
    loaded = load_model(tmp_path / "crafted.pt", "cpu")
    direct, inside = [], 0
    for views, scores in zip(stacks, plain):
        logit = math.log(scores[0] / (1 - scores[0]))
        if low <= logit - offsets["whole"] <= high:  # only the whole image is a mirrored kind here
            inside += 1
            with torch.inference_mode():
                mirrored = predict_scores(loaded.model, views[:1].flip(-1))[0].item()
            scores = [1 / (1 + math.exp(-(logit + math.log(mirrored / (1 - mirrored))) / 2)), *scores[1:]]
        direct.append(combined(scores, loaded.preprocess))
    assert inside == 4
    calls: list[int] = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        return loaded.model(batch)

    with torch.inference_mode():
        score_flat_views(forward, torch.cat(stacks), [len(v) for v in stacks], loaded.preprocess, 1000, loaded.device)
    assert calls == [sum(len(v) for v in stacks), 4]  # every view plain, then the four mirror images
    assert score_samples(loaded, samples, batch_size=3, workers=0) == pytest.approx(direct, abs=1e-5)
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", tmp_path / "crafted.pt", batch_size=3, model_batch=3)
    summary = submit(settings, [str(s.path) for s in samples], wait=True).summary
    with open_database(settings)() as session:
        scanned = {row["uri"]: row["score"] for row in report_rows(session, summary["job_id"])}
    assert [scanned[str(s.path)] for s in samples] == pytest.approx(direct, abs=1e-4)
    back = CliRunner().invoke(app, ["model", "calibrate", str(out), str(tmp_path / "all.pt"), *args[4:],
                                    "--mirror-margin", "0"])  # fmt: skip
    assert back.exit_code == 0, back.output
    every = read_checkpoint(tmp_path / "all.pt")
    assert every["format"] == CURRENT_FORMAT and "mirror_band" not in every["preprocess"]
    assert every["model_version"] == read_checkpoint(mirror_model)["model_version"]  # the same model as before
    for bad in ("-1", "nan"):
        refused = CliRunner().invoke(app, [*args[:3], str(tmp_path / "no.pt"), *args[4:], "--mirror-margin", bad])
        assert refused.exit_code == 1 and "0 or more" in refused.output
    for band in ([1.0], [2.0, 1.0], [0.0, "x"]):
        save_checkpoint(dict(banded, preprocess={**banded["preprocess"], "mirror_band": band}), tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match="mirror_band"):
            load_model(tmp_path / "bad.pt", "cpu")


@pytest.mark.skipif(
    not precision_runs_natively("bfloat16", torch.device("cpu")), reason="this CPU has no bfloat16 kernels"
)
def test_bfloat16_model_scores_in_bfloat16_on_every_path(
    mirror_model: Path, face_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scanner model calibrate --precision bfloat16` writes format 5 with a new version; evaluation and the traced
    scanner both run the network in bfloat16, so they agree with each other and not exactly with float32. A device
    without bfloat16 kernels falls back to float32 with a warning; unknown precisions are refused."""
    out = tmp_path / "bf16.pt"
    args = ["model", "calibrate", str(mirror_model), str(out), str(face_data), "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--precision", "bfloat16"])
    assert result.exit_code == 0, result.output
    before, after = read_checkpoint(mirror_model), read_checkpoint(out)
    assert after["format"] == CURRENT_FORMAT and after["preprocess"]["precision"] == "bfloat16"
    assert after["preprocess"]["mirror"] == ["whole"] and after["calibrated_from"] == before["model_version"]
    assert after["model_version"] != before["model_version"]
    samples = find_samples(face_data)[:8]
    half = load_model(out, "cpu")
    half_as_single = replace(half, preprocess=half.preprocess.changed(precision="float32"))
    evaluated = score_samples(half, samples, batch_size=4, workers=0)
    in_float32 = score_samples(half_as_single, samples, batch_size=4, workers=0)
    gaps = [abs(a - b) for a, b in zip(evaluated, in_float32)]
    assert max(gaps) > 1e-4 and max(gaps) < 0.05  # rounded to bfloat16, and only that
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", out, batch_size=3, model_batch=3)
    summary = submit(settings, [str(s.path) for s in samples], wait=True).summary
    with open_database(settings)() as session:
        scanned = {row["uri"]: row["score"] for row in report_rows(session, summary["job_id"])}
    assert [scanned[str(s.path)] for s in samples] == pytest.approx(evaluated, abs=1e-4)
    monkeypatch.setattr(
        "scanner.detector.networks.precision_runs_natively", lambda precision, device: precision == "float32"
    )
    with pytest.warns(RuntimeWarning, match="no bfloat16 kernels"):
        fallback = score_samples(half, samples, batch_size=4, workers=0)
    assert fallback == pytest.approx(in_float32, abs=1e-6)
    bad = CliRunner().invoke(app, [*args, "--precision", "float16"])
    assert bad.exit_code == 1 and "float16" in bad.output and "float32, bfloat16" in bad.output
    for value in ("float16", 16, None):
        broken = dict(after, preprocess={**after["preprocess"], "precision": value})
        save_checkpoint(broken, tmp_path / "broken.pt")
        with pytest.raises(CheckpointError, match="precision"):
            load_model(tmp_path / "broken.pt", "cpu")


@pytest.mark.parametrize(
    ("option", "value", "key", "stored", "version"),
    [("--mirror", "whole", "mirror", ["whole"], 4), ("--precision", "bfloat16", "precision", "bfloat16", 5)],
)
def test_training_validates_as_the_scanner_scores(
    face_data: Path, tmp_path: Path, option: str, value: str, key: str, stored: object, version: int
) -> None:
    """`scanner train --mirror whole` (format 4) or `--precision bfloat16` (format 5) validates as the scanner will
    score: calibrating the file again on the same split finds the offsets and threshold that training stored.
    An unknown value stops at once."""
    args = ["train", str(face_data), "--arch", "fauxnet", "--epochs", "1", "--size", "32", "--max-side", "160",
            "--views", "faces", "--augment", "none", "--workers", "0",
            "--threshold-rule", "source-fpr:0.05"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "m.pt"), option, value])
    assert result.exit_code == 0, result.output
    trained = read_checkpoint(tmp_path / "m.pt")
    assert trained["format"] == CURRENT_FORMAT and trained["preprocess"][key] == stored
    result = CliRunner().invoke(app, ["model", "calibrate", str(tmp_path / "m.pt"), str(tmp_path / "c.pt"),
                                      str(face_data), "--workers", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    again = read_checkpoint(tmp_path / "c.pt")
    assert again["preprocess"]["view_offsets"] == pytest.approx(trained["preprocess"]["view_offsets"], abs=1e-4)
    assert again["threshold"] == pytest.approx(trained["threshold"], abs=1e-5)
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x.pt"), option, "left-ear"])
    assert bad.exit_code == 1 and "left-ear" in bad.output and not (tmp_path / "x.pt").exists()


def test_face_boxes_are_stored_reported_and_drawn(face_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    drawn_face(7, size=240).save(folder / "face.png")
    smooth_image(2, 120).save(folder / "scene.png")
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", face_model)
    job_id = submit(settings, [str(folder)], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        faces = session.scalars(select(Face)).all()
        verdicts = {v.id: v for v in session.scalars(select(Verdict))}
        rows = {Path(row["uri"]).name: row for row in report_rows(session, job_id)}
    assert len(faces) == 1 and verdicts[faces[0].verdict_id].face_count == 1
    x, y, w, h = rows["face.png"]["faces"][0]["box"]
    assert abs(x + w / 2 - 120) < 35 and abs(y + h / 2 - 120) < 35 and w > 50
    assert rows["face.png"]["score"] == pytest.approx(
        max(rows["face.png"]["whole_score"], rows["face.png"]["faces"][0]["score"])
    )
    assert rows["scene.png"]["faces"] == [] and rows["scene.png"]["face_count"] == 0
    result = CliRunner().invoke(app, ["report", str(job_id), "--format", "json"], env=settings_env(settings))
    assert json.loads(result.stdout)["items"][0]["faces"] is not None
    csv_text = CliRunner().invoke(app, ["report", str(job_id), "--format", "csv"], env=settings_env(settings)).stdout
    parsed = {Path(row["uri"]).name: row for row in csv.DictReader(io.StringIO(csv_text))}  # stdout is valid CSV
    assert json.loads(parsed["face.png"]["faces"])[0]["box"] == [x, y, w, h] and parsed["scene.png"]["faces"] == "[]"
    face_row = dict(rows["face.png"], threshold=-1.0)  # every face counts as flagged: drawn red
    list(with_visuals([face_row], settings, None, 10))
    thumb = Image.open(io.BytesIO(base64.b64decode(face_row["thumb"].split(",", 1)[1]))).convert("RGB")
    scale = thumb.width / 240
    red, green, blue = thumb.getpixel((round((x + w / 2) * scale), round(y * scale) + 1))
    assert red > 150 and green < 120 and blue < 120  # the box's top edge


def test_heatmaps_cover_the_whole_image_and_each_face(face_model: Path) -> None:
    from scanner.moderation.explain import explainer

    loaded = load_model(face_model, "cpu")
    image = drawn_face(5, size=200)
    boxes = FaceFinder(loaded.preprocess.search.faces).find(image)
    assert boxes
    shown = explainer(loaded)(image, boxes)
    assert shown.size == image.size  # one heatmap over the image, each view's map where the view came from
    plain = np.asarray(image.convert("RGB"), dtype=np.int16)
    left, top, right, bottom = face_region(boxes[0], image.width, image.height, loaded.preprocess.search.faces.widen)
    middle = slice((top + bottom) // 2 - 5, (top + bottom) // 2 + 5)
    outline = np.asarray(shown, dtype=np.int16)[middle, right - 1]  # the face view, outlined in white
    assert (outline > 240).all() and not (plain[middle, right - 1] > 240).all()
    assert explainer(loaded)(image, []).size == image.size


def test_evaluate_takes_several_folders_including_one_class_ones(
    face_model: Path, face_data: Path, tmp_path: Path
) -> None:
    only_real = tmp_path / "only_real"
    (only_real / "real").mkdir(parents=True)
    for index in range(3):
        drawn_face(500 + index).save(only_real / "real" / f"r{index}.png")
    runner = CliRunner()
    args = ["evaluate", str(face_data), str(only_real), "--model", str(face_model), "--workers", "0"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert any(line.startswith("only_real") and line.split()[3] == "0" for line in lines)  # 0 fakes
    assert any(line.startswith("pooled") for line in lines)
    data = json.loads(runner.invoke(app, [*args, "--json"]).stdout)  # standard JSON: no NaN
    assert data["per_dataset"]["only_real"]["roc_auc"] is None
    assert data["per_dataset"]["only_real"]["n"] == 3 and data["n"] == 27
    assert not math.isnan(data["roc_auc"])


def test_registry_names_resolve_and_are_listed(tmp_path: Path) -> None:
    models = registered_models()
    assert models[0].default and all(model.path.is_file() for model in models)
    names = [model.name for model in models]
    assert "fauxnet-fast" in names
    assert resolve_model("fauxnet-fast").name == "fauxnet-fast.pt"
    assert resolve_model(None) == models[0].path
    assert resolve_model("runs/mine.pt") == Path("runs/mine.pt")
    env = {"SCANNER_MODEL": "fauxnet-fast"}
    assert Settings.from_env(env).model_path == resolve_model("fauxnet-fast")
    listed = json.loads(CliRunner().invoke(app, ["models", "--json"]).stdout)
    assert [row["name"] for row in listed] == names
    for row in listed:
        assert re.match(r"^[a-z0-9-]+-\d+-[0-9a-f]{12}$", row["version"]) and row["input"] and row["metrics"]
    installed = subprocess.run(["scanner", "models"], capture_output=True, text=True, env={"PATH": _venv_path()})
    assert installed.returncode == 0 and "fauxnet-fast" in installed.stdout and "(default)" in installed.stdout
    bad = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--model", "no-such-model"])
    assert bad.exit_code == 1 and "not found" in bad.stderr


def test_previous_checkpoint_format_still_loads_and_foreign_ones_fail_clearly(tmp_path: Path) -> None:
    old = read_checkpoint(resolve_model("fauxnet-fast-v1"))
    assert "views" not in old["preprocess"]  # written before face-aware scoring existed
    loaded = load_model(resolve_model("fauxnet-fast-v1"), "cpu")
    assert not loaded.preprocess.search.uses_faces
    views = make_views(drawn_face(1), loaded.preprocess, FaceFinder(loaded.preprocess.search.faces))
    assert views.tensors.shape == (1, 3, 128, 128) and views.boxes == []
    future = dict(old, format="fauxscan-checkpoint/99")
    save_checkpoint(future, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="fauxscan-checkpoint/99"):
        read_checkpoint(tmp_path / "future.pt")


def _venv_path() -> str:
    import os
    import sys

    return f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"


def test_model_export_drops_the_optimizer_state(face_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "release.pt"
    result = CliRunner().invoke(app, ["model", "export", str(face_model), str(target)])
    assert result.exit_code == 0, result.output
    original, release = read_checkpoint(face_model), read_checkpoint(target)
    assert "train_state" in original and "train_state" not in release
    assert release["model_version"] == original["model_version"] and target.stat().st_size < face_model.stat().st_size
    missing = CliRunner().invoke(app, ["model", "export", str(tmp_path / "nope.pt"), str(target)])
    assert missing.exit_code == 1 and "not found" in missing.stderr


def test_face_finding_is_safe_from_the_first_call_in_many_threads() -> None:
    import sys

    probe = (
        "import threading\n"
        "from tests.imaging import drawn_face\n"
        "from scanner.detector.faces import FaceFinder, FaceSettings\n"
        "finder, image, barrier, errors = FaceFinder(FaceSettings()), drawn_face(1), threading.Barrier(8), []\n"
        "def work():\n"
        "    barrier.wait()\n"
        "    try:\n        assert finder.find(image)\n"
        "    except Exception as exc:\n        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=work) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(errors)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    for _ in range(3):  # a fresh process each time: the race is on OpenCV's first import
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=repo, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


@pytest.fixture(scope="module")
def patch_model(face_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny face model fine-tuned for one epoch with the native patch view (faces+patch)."""
    from training.train import TrainConfig
    from training.train import main as train_main

    base = read_checkpoint(face_model)
    out = tmp_path_factory.mktemp("patch") / "patch.pt"
    train_main(TrainConfig(**{**base["train_config"], "out": str(out), "epochs": 1, "views": "faces+patch",
                              "init": str(face_model)}))  # fmt: skip
    return out


def test_native_patch_view_fine_tuned_from_a_released_model(
    patch_model: Path, face_model: Path, face_data: Path, tmp_path: Path
) -> None:
    from training.train import TrainConfig
    from training.train import main as train_main

    config = TrainConfig(**read_checkpoint(patch_model)["train_config"])
    loaded = load_model(patch_model, "cpu")
    assert loaded.preprocess.search.image_views == 2 and loaded.preprocess.search.uses_faces
    samples = find_samples(face_data)[:4]
    finder = FaceFinder(loaded.preprocess.search.faces)
    direct, wholes, pairs = [], [], []
    for sample in samples:
        views = make_views(Image.open(sample.path).convert("RGB"), loaded.preprocess, finder)
        assert len(views.tensors) == 2 + len(views.boxes) and views.boxes  # whole, native patch, the face
        with torch.inference_mode():
            scores = predict_scores(loaded.model, views.tensors).tolist()
        direct.append(combined(scores, loaded.preprocess))
        wholes.append(combined(scores[:1], loaded.preprocess))
        pairs.append(combined(scores[:2], loaded.preprocess))  # the higher of the whole image and its native patch
    assert score_samples(loaded, samples, batch_size=4, workers=0) == pytest.approx(direct, abs=1e-5)
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", patch_model)
    job_id = submit(settings, [str(s.path) for s in samples], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        rows = {row["uri"]: row for row in report_rows(session, job_id)}
    assert [rows[str(s.path)]["score"] for s in samples] == pytest.approx(direct, abs=1e-4)
    assert [rows[str(s.path)]["whole_score"] for s in samples] == pytest.approx(wholes, abs=1e-4)
    both = [max(rows[str(s.path)]["whole_score"], rows[str(s.path)]["patch_score"]) for s in samples]
    assert both == pytest.approx(pairs, abs=1e-4)  # the native patch's own score, stored beside the whole image's
    other = TrainConfig(**{**config.__dict__, "out": str(tmp_path / "other.pt"),
                           "arch_args": {"widths": [4, 4], "dropout": 0.0}})  # fmt: skip
    with pytest.raises(ValueError, match="--init"):
        train_main(other)


def test_small_images_are_scored_without_the_native_patch_on_every_path(
    patch_model: Path, face_model: Path, face_data: Path, tmp_path: Path
) -> None:
    """`scanner model calibrate --patch-min-side 100`: a format-6 file with a new version. An image whose shorter
    side is 100 px or less keeps the layout whole, patch, faces, but its patch row is a placeholder that never
    reaches the network; its score is the highest of its other views, the same in evaluation and in the scanner,
    and training never draws its patch. Larger images are scored as before."""
    from scanner.detector.networks import predict_in_chunks
    from scanner.detector.views import has_patch, patch_view
    from training.draws import training_view

    out = tmp_path / "limited.pt"
    args = ["model", "calibrate", str(patch_model), str(out), str(face_data), "--patch-min-side", "100"]
    result = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 0, result.output
    before, after = read_checkpoint(patch_model), read_checkpoint(out)
    assert after["format"] == CURRENT_FORMAT and after["preprocess"]["patch_min_side"] == 100
    assert after["model_version"] != before["model_version"] and "patch_min_side" not in before["preprocess"]
    assert "patch (up to 160 px; images over 100 px only)" in _input_policy(
        Preprocess.from_dict(after["preprocess"])
    )  # scanner models
    loaded = load_model(out, "cpu")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for index, sample in enumerate(find_samples(face_data)[:6]):
        image = Image.open(sample.path).convert("RGB")
        (image if index % 2 else image.resize((90, 90), Image.Resampling.LANCZOS)).save(folder / sample.path.name)
    paths = sorted(folder.iterdir())
    finder = FaceFinder(loaded.preprocess.search.faces)
    network_rows: list[int] = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        assert not torch.isnan(batch).any()  # placeholders never reach the network
        network_rows.append(len(batch))
        return loaded.model(batch)

    direct = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        views = make_views(image, loaded.preprocess, finder).tensors
        small = min(image.size) <= 100
        assert has_patch(image, loaded.preprocess.search) is not small and len(views) >= 2
        assert bool(torch.isnan(views[1]).all()) is small and not torch.isnan(views[[0, *range(2, len(views))]]).any()
        with torch.inference_mode():
            raw = predict_in_chunks(forward, views, None, 64, torch.device("cpu"))
            present = [0] + ([] if small else [1]) + list(range(2, len(views)))
            kept = [v for v in raw if not math.isnan(v)]
            assert kept == pytest.approx(predict_scores(loaded.model, views[present]).tolist(), abs=1e-6)
        assert network_rows.pop() == len(views) - small and math.isnan(raw[1]) is small
        kinds = ["whole", "patch"] + ["face"] * (len(raw) - 2)
        offsets = loaded.preprocess.scoring.view_offsets
        direct.append(max(calibrated(v, offsets[k]) for v, k in zip(raw, kinds) if not math.isnan(v)))
    labelled = [replace(sample, path=folder / sample.path.name) for sample in find_samples(face_data)[:6]]
    scores = dict(zip([s.path for s in labelled], score_samples(loaded, labelled, batch_size=4, workers=0)))
    assert [scores[path] for path in paths] == pytest.approx(direct, abs=1e-5)
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", out, batch_size=3, model_batch=3)
    job_id = submit(settings, [str(path) for path in paths], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        scanned = {row["uri"]: row["score"] for row in report_rows(session, job_id)}
    assert [scanned[str(path)] for path in paths] == pytest.approx(direct, abs=1e-4)
    small_image = Image.open(paths[0]).convert("RGB")
    large_image = Image.open(paths[1]).convert("RGB")
    for image, drawn in ((small_image, False), (large_image, True)):
        patch = to_tensor(patch_view(image, loaded.preprocess.decoding), loaded.preprocess.decoding)
        rng = random.Random(0)
        draws = [training_view(image, [], loaded.preprocess, None, rng) for _ in range(30)]
        assert any(torch.equal(draw, patch) for draw in draws) is drawn
    broken_args = [*args[:3], str(tmp_path / "no.pt"), str(face_data), "--workers", "0"]
    refused = CliRunner().invoke(app, [*broken_args, "--patch-min-side", "-1"])
    assert refused.exit_code == 1 and "0 or more" in refused.output
    refused = CliRunner().invoke(
        app, ["model", "calibrate", str(face_model), *broken_args[3:], "--patch-min-side", "9"]
    )
    assert refused.exit_code == 1 and "no native patch" in refused.output
    for value in (-5, "100", 2.5):
        save_checkpoint(dict(after, preprocess={**after["preprocess"], "patch_min_side": value}), tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match="patch_min_side"):
            load_model(tmp_path / "bad.pt", "cpu")
    train = ["train", str(face_data), "--out", str(tmp_path / "t.pt"), "--patch-min-side", "100"]
    refused = CliRunner().invoke(app, [*train, "--views", "faces"])
    assert refused.exit_code == 2 and "--views faces+patch" in refused.output


def test_training_with_a_patch_limit_writes_it_into_the_checkpoint(patch_model: Path, tmp_path: Path) -> None:
    from training.train import TrainConfig
    from training.train import main as train_main

    config = TrainConfig(**{**read_checkpoint(patch_model)["train_config"], "out": str(tmp_path / "t.pt"),
                            "patch_min_side": 100, "init": str(patch_model)})  # fmt: skip
    train_main(config)
    trained = read_checkpoint(tmp_path / "t.pt")
    assert trained["format"] == CURRENT_FORMAT and trained["preprocess"]["patch_min_side"] == 100
    assert load_model(tmp_path / "t.pt", "cpu").preprocess.search.patch_min_side == 100


def test_face_box_file_gives_the_views_that_finding_faces_gives(
    face_model: Path, face_data: Path, tmp_path: Path
) -> None:
    from scanner.detector.faces import load_boxes
    from training.data import ImageFolderDataset, ViewsDataset

    preprocess = load_model(face_model, "cpu").preprocess
    out = tmp_path / "boxes.json"
    args = ["--size", "32", "--max-side", "160", "--views", "faces", "--jobs", "1", "--out", str(out)]
    module = [sys.executable, "-m", "training.face_boxes"]
    done = subprocess.run([*module, str(face_data), *args], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    known = load_boxes(out, preprocess.search.faces)
    samples = find_samples(face_data)
    assert sorted(known) == sorted(s.key for s in samples) and samples[0].key.startswith(f"{face_data.name}/")
    assert all(known[s.key] for s in samples)  # every drawn face was found
    for index in range(4):
        searched, cached = (
            ViewsDataset(samples, preprocess, None)[index],
            ViewsDataset(samples, preprocess, None, known)[index],
        )
        assert torch.equal(searched[0], cached[0])
        assert torch.equal(ImageFolderDataset(samples, preprocess, None)[index][0],
                           ImageFolderDataset(samples, preprocess, None, known)[index][0])  # fmt: skip
    no_faces = {**known, samples[0].key: []}  # the file is what is used: no search behind it
    assert len(ViewsDataset(samples, preprocess, None, no_faces)[0][0]) == 1 < len(searched[0])
    with pytest.raises(ValueError, match="face settings"):
        load_boxes(out, FaceSettings(detect_side=99))


def test_set_weights_scale_a_sets_share_of_the_draws(face_data: Path, tmp_path: Path) -> None:
    from training.data import Sample, balanced_weights

    samples = [
        Sample(Path(f"/{n}/{i}.jpg"), i % 2, n, f"{n}{i}", "x")
        for n in ("a", "b")
        for i in range(10 if n == "a" else 30)
    ]
    weights = balanced_weights(samples, {"a": 3.0})
    share_a = sum(w for w, s in zip(weights, samples, strict=True) if s.dataset == "a") / sum(weights)
    assert share_a == pytest.approx(0.75)
    fakes_a = sum(w for w, s in zip(weights, samples, strict=True) if s.dataset == "a" and s.label == 1)
    assert fakes_a / sum(weights) == pytest.approx(0.375)
    for bad in ("a", "a=x", "=2", "a=0"):
        result = CliRunner().invoke(app, ["train", str(face_data), "--out", str(tmp_path / "m.pt"), "--weight", bad])
        assert result.exit_code == 2 and "--weight" in result.output


def test_missing_face_cascade_stops_the_scan_and_fails_no_image(
    face_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    from scanner.db import Item

    folder = tmp_path / "in"
    folder.mkdir()
    drawn_face(3, size=200).save(folder / "face.png")
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", face_model)
    monkeypatch.setattr(cv2.data, "haarcascades", f"{tmp_path / 'opencv-5-has-none'}/")  # as OpenCV 5.x
    result = CliRunner().invoke(app, ["submit", str(folder)], env=settings_env(settings))
    assert result.exit_code == 1 and "opencv-python-headless>=4.8,<5" in result.output, result.output
    with open_database(settings)() as session:
        assert [item.status for item in session.scalars(select(Item))] == ["queued"]
    monkeypatch.undo()
    resumed = CliRunner().invoke(app, ["resume", "1"], env=settings_env(settings))
    assert resumed.exit_code == 0, resumed.output
    with open_database(settings)() as session:
        assert [item.status for item in session.scalars(select(Item))] == ["done"]


@pytest.mark.parametrize("seed", range(6))
def test_a_self_blended_real_changes_around_its_face_and_nowhere_else(seed: int) -> None:
    from training.selfblend import self_blend

    image, box = noisy_image(seed, 240), Box(100, 100, 40, 40)
    blended = self_blend(image, box, random.Random(seed))
    change = np.abs(np.asarray(blended, dtype=np.int16) - np.asarray(image, dtype=np.int16)).sum(axis=2)
    around = np.zeros(change.shape, dtype=bool)
    around[60:180, 60:180] = True  # the face box widened by its size on every side
    assert change[~around].max() == 0
    assert change[110:130, 110:130].mean() > 1.0  # the middle of the face always changes
    assert self_blend(image, box, random.Random(seed)).tobytes() == blended.tobytes()


def test_self_blending_turns_only_real_draws_with_a_face_into_fakes(tmp_path: Path) -> None:
    from training.data import ImageFolderDataset, Sample

    preprocess = Preprocess().changed(size=32, max_side=64, views="faces+patch")
    samples, known = [], {}
    for index, (label, has_face) in enumerate([(0, True), (0, False), (1, True)]):
        path = tmp_path / f"{index}.png"
        noisy_image(index, 96).save(path)
        samples.append(Sample(path, label, "set", f"g{index}", "real" if label == 0 else "fake", f"set/{index}.png"))
        known[samples[-1].key] = [Box(30, 30, 36, 36)] if has_face else []
    for share, labels in ((0.0, [0, 0, 1]), (1.0, [1, 0, 1])):
        dataset = ImageFolderDataset(samples, preprocess, None, known, blend_share=share)
        for _ in range(5):
            assert [dataset[index][1] for index in range(3)] == labels
            assert all(dataset[index][0].shape == (3, 32, 32) for index in range(3))


def test_the_self_blend_share_reaches_the_training_draws_and_a_bad_share_is_refused(
    face_data: Path, tmp_path: Path
) -> None:
    from training.train import TrainConfig, make_loader

    config = TrainConfig(data_dirs=[str(face_data)], out=str(tmp_path / "m.pt"), workers=0, self_blend=0.4)
    loader = make_loader(
        find_samples(face_data), Preprocess().changed(size=32, views="faces"), None, config, shuffle=True
    )
    assert loader.dataset.blend_share == 0.4  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, ["train", str(face_data), "--out", str(tmp_path / "m.pt"), "--self-blend", "1.5"])
    assert result.exit_code == 2 and "--self-blend must be between 0 and 1" in result.output
    assert not (tmp_path / "m.pt").exists()


def test_each_view_is_a_record_of_its_kind_and_the_region_it_shows() -> None:
    """Heatmaps are placed where each view came from: a view's region, cut out and scaled, is what the network
    sees (the whole image's centre square, the native patch at its own pixels, each widened face)."""
    from scanner.detector.faces import FaceSettings
    from scanner.detector.views import cut_views

    config = Preprocess().changed(size=32, max_side=64, views="faces+patch", faces=FaceSettings(widen=1.5),
                                  patch_min_side=50)  # fmt: skip
    image = noisy_image(9, 120).resize((160, 120))
    box = Box(70, 40, 30, 30)
    views = cut_views(image, config, [box])
    assert [view.kind for view in views] == ["whole", "patch", "face"] and views[2].box == box
    assert views[0].region == (20, 0, 140, 120)  # the centre square, scaled down
    assert views[1].region == (50, 30, 110, 90)  # the shorter side brought to max_side (64), its centre 32 px
    for view in views:
        left, top, right, bottom = view.region
        seen = np.asarray(view.image, dtype=np.float32)
        cut = np.asarray(image.crop(view.region).resize(view.image.size), dtype=np.float32)
        assert np.abs(seen - cut).mean() < 12, view.kind  # the same pixels, up to resampling
    assert [view.kind for view in cut_views(image.resize((60, 45)), config, [])] == ["whole"]  # too small for a patch
