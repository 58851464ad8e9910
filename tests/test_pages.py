"""Screenshots, letterboxes and padded reposts, and faces on their side: models that trim pages score the photo
inside, models that turn faces score a sideways face upright, the same on every path."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from sqlalchemy import select
from typer.testing import CliRunner

from scanner.cli import app
from scanner.db import Face
from scanner.detector.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from scanner.detector.faces import Box, FaceFinder
from scanner.detector.networks import predict_scores
from scanner.detector.pages import PageSettings, page_region
from scanner.detector.preprocess import Preprocess
from scanner.detector.schema import CURRENT_FORMAT, FORMAT8_PAGE
from scanner.detector.views import Placement, combine_views, make_views
from scanner.model_catalog import _input_policy
from scanner.moderation.explain import explainer
from scanner.moderation.reports import report_rows
from scanner.pipeline.submit import open_database, submit
from tests.conftest import make_settings
from tests.imaging import drawn_face, noisy_image, on_page, smooth_image
from training.data import ImageFolderDataset, Sample
from training.evaluate import score_samples

PAGE = PageSettings()


@pytest.mark.parametrize(
    ("colour", "margin", "bar"),
    [((255, 255, 255), 16, 30), ((18, 18, 18), 24, 40), ((240, 242, 245), 6, 20)],
    ids=["white page", "dark mode", "grey feed"],
)
def test_the_photo_inside_a_page_is_found_to_the_pixel(colour: tuple[int, int, int], margin: int, bar: int) -> None:
    photo = noisy_image(3, 150)
    page, (left, top) = on_page(photo, colour, margin, bar)
    assert page_region(page, PAGE) == (left, top, left + 150, top + 150)


def test_a_thumbnail_sized_photo_is_cut_out_of_its_page() -> None:
    page, (left, top) = on_page(noisy_image(3, 32), margin=8, bar=16)
    assert page_region(page, PAGE) == (left, top, left + 32, top + 32)


def test_letterbox_bars_are_cut_off_a_full_width_frame() -> None:
    frame = Image.new("RGB", (200, 180), (0, 0, 0))
    frame.paste(noisy_image(4, 200).crop((0, 0, 200, 120)), (0, 30))
    assert page_region(frame, PAGE) == (0, 30, 200, 150)


def test_a_large_screenshot_is_searched_on_a_reduced_copy_and_keeps_every_photo_pixel() -> None:
    photo = noisy_image(10, 1500)
    page, (left, top) = on_page(photo, margin=101, bar=203)  # 1702 x 1905: searched at a half
    found = page_region(page, PAGE)
    assert found is not None
    x0, y0, x1, y1 = found
    assert left - 2 < x0 <= left and top - 2 < y0 <= top and left + 1500 <= x1 < left + 1502
    assert top + 1500 <= y1 < top + 1502


def test_a_caption_bar_above_a_meme_is_cut_off() -> None:
    photo = noisy_image(16, 150)
    meme = Image.new("RGB", (150, 190), (255, 255, 255))
    meme.paste(photo, (0, 40))
    ImageDraw.Draw(meme).text((4, 12), "when the photo is too real", fill=(0, 0, 0))
    assert page_region(meme, PAGE) == (0, 40, 150, 190)


def test_photos_are_left_whole() -> None:
    assert page_region(noisy_image(5, 160), PAGE) is None  # no flat edge
    assert page_region(smooth_image(5, 160), PAGE) is None  # a gradient: no edge is one colour
    sky = np.asarray(noisy_image(6, 160)).copy()
    for column in range(160):
        sky[: 30 + int(20 * np.sin(column / 9)), column] = 250  # an overexposed sky above a skyline: not a page
    assert page_region(Image.fromarray(sky), PAGE) is None
    thin = Image.new("RGB", (160, 160), (255, 255, 255))
    thin.paste(noisy_image(7, 158), (1, 1))  # a 1-pixel frame: nothing worth cutting
    assert page_region(thin, PAGE) is None
    tiny = Image.new("RGB", (300, 300), (255, 255, 255))
    tiny.paste(noisy_image(8, 60), (120, 120))  # an icon on a page, not a photo
    assert page_region(tiny, PAGE) is None
    assert page_region(Image.new("RGB", (200, 200), (255, 255, 255)), PAGE) is None  # a blank page
    collage = Image.new("RGB", (340, 200), (255, 255, 255))
    collage.paste(noisy_image(11, 160), (10, 20))
    collage.paste(noisy_image(12, 120), (200, 40))  # two photos: cutting out one would leave the other unscored
    assert page_region(collage, PAGE) is None
    collage.paste(Image.new("RGB", (120, 120), (255, 255, 255)), (200, 40))
    collage.paste(noisy_image(12, 40), (200, 40))  # an avatar beside the photo is not a second photo
    assert page_region(collage, PAGE) == (10, 20, 170, 180)
    assert page_region(Image.new("RGB", (30, 30), (255, 255, 255)), PAGE) is None
    small = Image.new("RGB", (60, 60), (255, 255, 255))
    small.paste(noisy_image(9, 30), (15, 15))  # smaller than a CIFAR image: not a photo worth cutting out
    assert page_region(small, PAGE) is None


@pytest.fixture(scope="module")
def page_model(face_model: Path, face_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny face model recalibrated to trim pages and turn faces (`calibrate --trim-page --turn-faces`)."""
    out = tmp_path_factory.mktemp("page") / "page.pt"
    args = ["model", "calibrate", str(face_model), str(out), str(face_data), "--trim-page", "--turn-faces"]
    result = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 0, result.output
    return out


def direct_score(model: Path, image: Image.Image) -> tuple[float, list[list[int]]]:
    """The image's score and face boxes computed view by view, without any loader."""
    loaded = load_model(model, "cpu")
    views = make_views(image, loaded.preprocess, FaceFinder(loaded.preprocess.search.faces))
    with torch.inference_mode():
        raw = predict_scores(loaded.model, views.tensors).tolist()
    scores = combine_views(raw, loaded.preprocess.search.image_views, loaded.preprocess.scoring.view_offsets)
    return scores.score, [box.to_list() for box in views.boxes]


def policy_of(checkpoint: dict[str, Any]) -> str:
    """What `scanner models` says a checkpoint scores."""
    return _input_policy(Preprocess.from_dict(checkpoint["preprocess"]))


def test_a_screenshot_scores_as_its_photo_on_every_path(page_model: Path, face_model: Path, tmp_path: Path) -> None:
    before, after = read_checkpoint(face_model), read_checkpoint(page_model)
    assert after["format"] == CURRENT_FORMAT and after["preprocess"]["page"] == asdict(PageSettings())
    assert after["preprocess"]["turns"] == [90, 270] and after["model_version"] != before["model_version"]
    assert "page" not in before["preprocess"] and "turns" not in before["preprocess"]
    policy = policy_of(after)  # as `scanner models` shows it
    assert policy.startswith("photo inside a page, else the whole image") and "(also turned" in policy
    assert policy_of(before).startswith("whole image + up to 3 face crops at 32 px")
    photo = drawn_face(11, size=160, noisy=True)
    page, (dx, dy) = on_page(photo)
    photo_score, photo_boxes = direct_score(page_model, photo)
    page_score, page_boxes = direct_score(page_model, page)
    assert photo_boxes and page_score == pytest.approx(photo_score, abs=1e-6)
    assert page_boxes == [[x + dx, y + dy, w, h] for x, y, w, h in photo_boxes]  # in the page's pixels
    assert not math.isclose(direct_score(face_model, page)[0], photo_score, abs_tol=1e-4)  # the page, scored whole
    folder = tmp_path / "in"
    folder.mkdir()
    photo.save(folder / "photo.png")
    page.save(folder / "page.png")
    samples = [Sample(folder / name, 1, "in", name, "in/fake") for name in ("photo.png", "page.png")]
    assert score_samples(load_model(page_model, "cpu"), samples, batch_size=2) == pytest.approx(
        [photo_score, photo_score], abs=1e-5
    )
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", page_model)
    job_id = submit(settings, [str(folder)], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        rows = {Path(row["uri"]).name: row for row in report_rows(session, job_id)}
        assert len(session.scalars(select(Face)).all()) == 2
    assert rows["page.png"]["score"] == pytest.approx(photo_score, abs=1e-4)
    assert rows["photo.png"]["score"] == pytest.approx(photo_score, abs=1e-4)
    assert rows["page.png"]["faces"][0]["box"] == page_boxes[0]
    loaded = load_model(page_model, "cpu")
    assert np.array_equal(  # the heatmaps of the page are those of the photo
        np.asarray(explainer(loaded)(page, [Box(*box) for box in page_boxes])),
        np.asarray(explainer(loaded)(photo, [Box(*box) for box in photo_boxes])),
    )


@pytest.mark.parametrize("turn", [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270])
def test_a_face_on_its_side_scores_as_upright_on_every_path(
    turn: Image.Transpose, page_model: Path, face_model: Path, tmp_path: Path
) -> None:
    photo = drawn_face(12, size=160, noisy=True)
    turned = photo.transpose(turn)
    photo_score, photo_boxes = direct_score(page_model, photo)
    turned_score, turned_boxes = direct_score(page_model, turned)
    assert photo_boxes and turned_score == pytest.approx(photo_score, abs=1e-6)
    expected = []  # the upright boxes, carried into the turned image's pixels
    for x, y, w, h in photo_boxes:
        corners = [(x, y), (x + w, y + h)]
        if turn == Image.Transpose.ROTATE_90:  # counter-clockwise: (x, y) -> (y, width - x)
            corners = [(b, 160 - a) for a, b in corners]
        else:
            corners = [(160 - b, a) for a, b in corners]
        (x0, y0), (x1, y1) = corners
        expected.append([min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)])
    assert turned_boxes == expected
    assert direct_score(face_model, turned)[1] == []  # a model that does not turn faces finds none
    assert not math.isclose(direct_score(face_model, turned)[0], photo_score, abs_tol=1e-4)
    on_its_side, _ = on_page(turned)  # a screenshot of a sideways face: cut out, then turned
    page_score, page_boxes = direct_score(page_model, on_its_side)
    assert page_score == pytest.approx(photo_score, abs=1e-6) and len(page_boxes) == len(photo_boxes)
    folder = tmp_path / "in"
    folder.mkdir()
    turned.save(folder / "turned.png")
    sample = Sample(folder / "turned.png", 1, "in", "turned", "in/fake")
    assert score_samples(load_model(page_model, "cpu"), [sample], batch_size=1) == pytest.approx(
        [photo_score], abs=1e-5
    )
    loaded = load_model(page_model, "cpu")
    training_image, training_boxes = ImageFolderDataset([sample], loaded.preprocess, None).image(0)
    assert training_image.tobytes() == photo.tobytes() and [b.to_list() for b in training_boxes] == photo_boxes
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", page_model)
    job_id = submit(settings, [str(folder)], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        (row,) = report_rows(session, job_id)
    assert row["score"] == pytest.approx(photo_score, abs=1e-4) and row["faces"][0]["box"] == turned_boxes[0]
    assert np.array_equal(  # the heatmaps of the turned image are those of the upright one
        np.asarray(explainer(loaded)(turned, [Box(*box) for box in turned_boxes])),
        np.asarray(explainer(loaded)(photo, [Box(*box) for box in photo_boxes])),
    )


@pytest.mark.parametrize(
    ("turn", "expected"),
    [(0, (15, 25, 30, 40)), (90, (45, 15, 40, 30)), (180, (65, 25, 30, 40)), (270, (25, 45, 40, 30))],
)
def test_a_box_in_the_turned_part_is_carried_back_to_the_image(turn: int, expected: tuple[int, ...]) -> None:
    """A 100x80 cut at (5, 5) of a page: a box found on it after `turn` lies at `expected` in the page."""
    cut = noisy_image(9, 100).crop((0, 0, 100, 80))
    page = Image.new("RGB", (110, 90), (255, 255, 255))
    page.paste(cut, (5, 5))
    placement = Placement((5, 5, 105, 85), turn)
    part = placement.apply(page)
    box = Box(10, 20, 30, 40)
    carried = placement.to_image(box, part.size)
    assert carried.to_list() == list(expected)
    inside = part.crop((box.x, box.y, box.x + box.w, box.y + box.h))
    back = page.crop((carried.x, carried.y, carried.x + carried.w, carried.y + carried.h))
    undo = {0: None, 90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    assert (inside.transpose(undo[turn]) if undo[turn] else inside).tobytes() == back.tobytes()  # the same pixels


def test_the_training_draws_come_from_the_photo_inside_a_page(page_model: Path, tmp_path: Path) -> None:
    photo = drawn_face(13, size=160, noisy=True)
    page, _ = on_page(photo, (20, 20, 20))
    page.save(tmp_path / "page.png")
    sample = Sample(tmp_path / "page.png", 0, "in", "page", "in/real")
    dataset = ImageFolderDataset([sample], load_model(page_model, "cpu").preprocess, None)
    for _ in range(2):  # the second time from the cut it remembered
        part, boxes = dataset.image(0)
        assert part.tobytes() == photo.tobytes() and boxes
    assert dataset[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("flag", ["trim_page", "turn_faces"])
def test_a_checkpoint_with_an_unusable_page_or_turn_setting_is_refused(
    flag: str, page_model: Path, tmp_path: Path
) -> None:
    """Versions 8-10 wrote flags; one that is not true or false is refused, and no current file holds a flag."""
    checkpoint = read_checkpoint(page_model)
    settings = {k: v for k, v in checkpoint["preprocess"].items() if k not in ("page", "turns")}
    version10 = dict(checkpoint, format="fauxscan-checkpoint/10", preprocess={**settings, flag: "yes"})
    save_checkpoint(version10, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=f"unusable {flag}"):
        load_model(tmp_path / "bad.pt", "cpu")
    save_checkpoint(dict(version10, format=CURRENT_FORMAT), tmp_path / "current.pt")
    with pytest.raises(CheckpointError, match=f"unknown setting.*{flag}"):
        load_model(tmp_path / "current.pt", "cpu")


def noisy_page(photo: Image.Image, spread: int) -> tuple[Image.Image, tuple[int, int]]:
    """`photo` on a white page whose pixels vary by up to `spread` grey levels (a screenshot saved as JPEG)."""
    page, (left, top) = on_page(photo)
    pixels = np.asarray(page).astype(np.int16)
    noise = np.random.default_rng(4).integers(-spread, spread + 1, pixels.shape)
    noise[top : top + photo.height, left : left + photo.width] = 0
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)), (left, top)


def test_page_settings_and_turns_travel_in_the_checkpoint(page_model: Path, face_data: Path, tmp_path: Path) -> None:
    """Format 8's flags mean the settings the default was calibrated with, pinned in the code; other page settings
    and turns are written into the checkpoint (format 9) and used on every path: a looser page tolerance cuts a page
    the pinned one leaves whole, and a half turn sets an upside-down face upright."""
    pinned = load_model(page_model, "cpu").preprocess
    assert pinned.search.page == FORMAT8_PAGE and pinned.search.turns == (90, 270)
    out = tmp_path / "loose.pt"
    turns = ["--turn", "90", "--turn", "180", "--turn", "270"]
    args = ["model", "calibrate", str(page_model), str(out), str(face_data), "--page-setting", "tolerance=12", *turns]
    result = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 0, result.output
    stored = read_checkpoint(out)
    assert stored["format"] == CURRENT_FORMAT and stored["preprocess"]["turns"] == [90, 180, 270]
    assert stored["preprocess"]["page"] == {**asdict(FORMAT8_PAGE), "tolerance": 12}
    assert not {"trim_page", "turn_faces"} & stored["preprocess"].keys()
    assert "(also turned 90, 180 or 270 degrees)" in policy_of(stored)
    photo = drawn_face(17, size=160, noisy=True)  # found neither upright nor sideways when upside down
    page, (left, top) = noisy_page(photo, 8)
    loose = load_model(out, "cpu").preprocess.search.page
    assert loose is not None and page_region(page, FORMAT8_PAGE) is None
    assert page_region(page, loose) == (left, top, left + 160, top + 160)
    photo_score, photo_boxes = direct_score(out, photo)
    assert photo_boxes and direct_score(out, page)[0] == pytest.approx(photo_score, abs=1e-6)
    upside_down = photo.transpose(Image.Transpose.ROTATE_180)
    assert direct_score(page_model, upside_down)[1] == []  # quarter turns only: no face found
    score, boxes = direct_score(out, upside_down)
    assert score == pytest.approx(photo_score, abs=1e-6)
    assert boxes == [[160 - x - w, 160 - y - h, w, h] for x, y, w, h in photo_boxes]
    folder = tmp_path / "in"
    folder.mkdir()
    upside_down.save(folder / "upside-down.png")
    page.save(folder / "page.png")
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", out)
    job_id = submit(settings, [str(folder)], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        rows = {Path(row["uri"]).name: row for row in report_rows(session, job_id)}
    assert rows["upside-down.png"]["score"] == pytest.approx(photo_score, abs=1e-4)
    assert rows["upside-down.png"]["faces"][0]["box"] == boxes[0]
    assert rows["page.png"]["score"] == pytest.approx(photo_score, abs=1e-4)


def two_faces_one_upside_down() -> tuple[Image.Image, Image.Image]:
    """A strip with a drawn face upright on the left and another upside down on the right, and the strip turned over:
    the cascade is surer of the left face (8.9) than of the right one (6.8), so each shows one face upright."""
    strip = Image.new("RGB", (320, 160))
    strip.paste(drawn_face(13, size=160, noisy=True), (0, 0))
    strip.paste(drawn_face(14, size=160, noisy=True).transpose(Image.Transpose.ROTATE_180), (160, 0))
    return strip, strip.transpose(Image.Transpose.ROTATE_180)


def calibrated_copy(source: Path, out: Path, data: Path, *options: str) -> Path:
    """`scanner model calibrate SOURCE OUT DATA OPTIONS`, which must succeed."""
    result = CliRunner().invoke(
        app, ["model", "calibrate", str(source), str(out), str(data), *options, "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_a_weak_upright_face_is_checked_against_the_image_upside_down(
    page_model: Path, face_data: Path, tmp_path: Path
) -> None:
    """With a half-turn check, an image whose upright face is weak and whose upside-down face is surer is scored
    turned over, on every path; a margin or a confident upright face keeps it as stored."""
    turns = ["--turn", "90", "--turn", "180", "--turn", "270"]
    checked = calibrated_copy(page_model, tmp_path / "checked.pt", face_data, *turns, "--half-turn-check", "100,1")
    stored = read_checkpoint(checked)
    assert stored["format"] == CURRENT_FORMAT
    assert stored["preprocess"]["half_turn"] == {"below": 100.0, "margin": 1.0}
    assert "upside down too where the upright face is weaker than 100" in policy_of(stored)
    upright, over = two_faces_one_upside_down()
    upright_score, upright_boxes = direct_score(checked, upright)
    over_score, over_boxes = direct_score(checked, over)
    assert upright_boxes and over_score == pytest.approx(upright_score, abs=1e-6)
    assert over_boxes == [[320 - x - w, 160 - y - h, w, h] for x, y, w, h in upright_boxes]
    unchecked = direct_score(page_model, over)  # every upright find trusted: the right face, as stored
    assert unchecked[1] != over_boxes and not math.isclose(unchecked[0], upright_score, abs_tol=1e-4)
    sure = calibrated_copy(checked, tmp_path / "sure.pt", face_data, "--half-turn-check", "5")  # both finds over 5
    assert direct_score(sure, over)[1] == direct_score(page_model, over)[1]
    wide = calibrated_copy(checked, tmp_path / "wide.pt", face_data, "--half-turn-check", "100,3")  # 8.9 < 6.8 + 3
    assert direct_score(wide, over)[1] == direct_score(page_model, over)[1]
    folder = tmp_path / "in"
    folder.mkdir()
    over.save(folder / "over.png")
    sample = Sample(folder / "over.png", 1, "in", "over", "in/fake")
    loaded = load_model(checked, "cpu")
    assert score_samples(loaded, [sample], batch_size=1) == pytest.approx([upright_score], abs=1e-5)
    training_image, _ = ImageFolderDataset([sample], loaded.preprocess, None).image(0)
    assert training_image.tobytes() == upright.tobytes()
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", checked)
    job_id = submit(settings, [str(folder)], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        (row,) = report_rows(session, job_id)
    assert row["score"] == pytest.approx(upright_score, abs=1e-4) and row["faces"][0]["box"] == over_boxes[0]
    plain = read_checkpoint(calibrated_copy(checked, tmp_path / "plain.pt", face_data, "--half-turn-check", "none"))
    assert plain["format"] == CURRENT_FORMAT and "half_turn" not in plain["preprocess"]


def test_keep_threshold_keeps_the_operating_point_unless_the_rule_breaks(
    page_model: Path, face_data: Path, tmp_path: Path
) -> None:
    """`calibrate --keep-threshold` changes a search setting and keeps the view offsets and threshold, with the stored
    metrics measured there; it refuses a threshold the rule no longer allows, and a source with nothing to keep."""
    turns = ["--turn", "90", "--turn", "180", "--turn", "270"]
    kept = calibrated_copy(
        page_model, tmp_path / "kept.pt", face_data, *turns, "--half-turn-check", "6", "--keep-threshold"
    )
    source, stored = read_checkpoint(page_model), read_checkpoint(kept)
    assert stored["threshold"] == source["threshold"] == stored["metrics"]["threshold"]
    assert stored["preprocess"]["view_offsets"] == source["preprocess"]["view_offsets"]
    assert stored["preprocess"]["half_turn"] == {"below": 6.0, "margin": 1.0}
    assert stored["model_version"] != source["model_version"] and stored["calibrated_from"] == source["model_version"]
    assert stored["metrics"]["threshold_rule"] == source["metrics"]["threshold_rule"]
    low = dict(source, threshold=1e-6)  # flags every real: no rule allows it
    save_checkpoint(low, tmp_path / "low.pt")
    bare = dict(source, preprocess={**source["preprocess"], "view_offsets": None})
    del bare["preprocess"]["view_offsets"]
    save_checkpoint(bare, tmp_path / "bare.pt")
    for name, message in (("low.pt", "the kept threshold"), ("bare.pt", "no view offsets to keep")):
        args = [
            "model",
            "calibrate",
            str(tmp_path / name),
            str(tmp_path / "out.pt"),
            str(face_data),
            "--keep-threshold",
        ]
        result = CliRunner().invoke(app, [*args, "--workers", "0"])
        assert result.exit_code == 1 and message in result.output and not (tmp_path / "out.pt").exists()


def test_a_page_setting_alone_makes_a_model_trim_pages(face_model: Path, face_data: Path, tmp_path: Path) -> None:
    args = ["model", "calibrate", str(face_model), str(tmp_path / "out.pt"), str(face_data)]
    result = CliRunner().invoke(app, [*args, "--page-setting", "min_photo_side=40", "--workers", "0"])
    assert result.exit_code == 0, result.output
    preprocess = load_model(tmp_path / "out.pt", "cpu").preprocess
    assert preprocess.search.page == PageSettings(min_photo_side=40) and preprocess.search.turns == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"page": {"tolerance": "4"}}, "whole number"),
        ({"page": {"tolerance": 4.5}}, "whole number"),
        ({"page": {"margin": 3}}, "unknown"),
        ({"page": {"min_photo_share": 2.0}}, r"\[0, 1\]"),
        ({"page": [4]}, "mapping"),
        ({"turns": [45]}, "among"),
        ({"turns": [90, 90]}, "once"),
        ({"turns": []}, "one or more"),
        ({"page": {}, "trim_page": True}, "both trim_page and page"),
        ({"turns": [180], "turn_faces": True}, "both turn_faces and turns"),
        ({"turns": [90, 270], "half_turn": {"below": 5.0}}, "half turn"),
        ({"turn_faces": True, "half_turn": {"below": 5.0}}, "half turn"),
        ({"turns": [180], "half_turn": {"below": "5"}}, "finite numbers"),
        ({"turns": [180], "half_turn": {"below": 5.0, "margin": -1.0}}, "0 or more"),
        ({"turns": [180], "half_turn": {"margin": 1.0}}, "needs 'below'"),
    ],
)
def test_unusable_page_settings_or_turns_are_refused(
    change: dict[str, object], message: str, page_model: Path, tmp_path: Path
) -> None:
    checkpoint = read_checkpoint(page_model)
    preprocess = {key: value for key, value in checkpoint["preprocess"].items() if key not in ("page", "turns")}
    flags = {"trim_page", "turn_faces"} & change.keys()  # written by versions 8 to 10 only
    version = "fauxscan-checkpoint/10" if flags else CURRENT_FORMAT
    save_checkpoint(dict(checkpoint, format=version, preprocess={**preprocess, **change}), tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "bad.pt", "cpu")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--page-setting", "tolerance"], "expected NAME=NUMBER"),
        (["--page-setting", "tolerance=wide"], "expected NAME=NUMBER"),
        (["--page-setting", "width=3"], "unknown"),
        (["--no-trim-page", "--page-setting", "tolerance=8"], "does not trim pages"),
        (["--turn", "45"], "among"),
        (["--no-turn-faces", "--turn", "180"], "does not turn faces"),
        (["--half-turn-check", "5"], "--turn 180"),
        (["--turn", "180", "--half-turn-check", "weak"], "BELOW,MARGIN"),
        (["--turn", "180", "--half-turn-check", "5,1,2"], "BELOW,MARGIN"),
        (["--turn", "180", "--half-turn-check", "5,-1"], "0 or more"),
        (["--turn", "180", "--half-turn-check", "nan"], "finite"),
    ],
)
def test_calibrate_refuses_bad_page_settings_and_turns_with_one_line(
    options: list[str], message: str, page_model: Path, face_data: Path, tmp_path: Path
) -> None:
    args = ["model", "calibrate", str(page_model), str(tmp_path / "out.pt"), str(face_data), *options]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and message in result.output and not (tmp_path / "out.pt").exists()


def test_odd_pages_and_strips_are_scanned_by_a_model_that_trims_and_turns(page_model: Path, tmp_path: Path) -> None:
    """Shapes the page search and the turned search meet in the wild, through the scanner: each is scanned, none errs,
    and a flat-coloured photo on a page is cut out like any other."""
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.new("RGB", (1, 5000), (255, 255, 255)).save(folder / "strip.png")  # thinner than any photo
    dot = Image.new("RGB", (3000, 40), (255, 255, 255))
    dot.putpixel((1500, 20), (0, 0, 0))
    dot.save(folder / "dot.png")  # a page with one dark pixel
    Image.new("RGB", (2500, 2500), (250, 250, 250)).save(folder / "blank.png")  # a blank page, searched reduced
    block = Image.new("RGB", (300, 300), (255, 255, 255))
    block.paste((200, 30, 30), (50, 60, 250, 260))
    block.save(folder / "block.png")  # a one-colour photo on a page
    clear = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    clear.paste(drawn_face(14, 120, noisy=True).convert("RGBA"), (40, 40))
    clear.save(folder / "clear.png")  # transparency, flattened onto white: a page
    drawn_face(15, 160, noisy=True).transpose(Image.Transpose.ROTATE_270).convert("P").save(folder / "palette.gif")
    settings = make_settings(f"sqlite:///{tmp_path / 'scan.db'}", page_model)
    job_id = submit(settings, [str(folder)], wait=True).summary["job_id"]
    with open_database(settings)() as session:
        rows = {Path(row["uri"]).name: row for row in report_rows(session, job_id)}
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(rows, "done") and len(rows) == 6
    assert page_region(Image.open(folder / "block.png").convert("RGB"), PAGE) == (50, 60, 250, 260)
    assert rows["clear.png"]["face_count"] == 1 and rows["palette.gif"]["face_count"] >= 1  # cut out; turned
