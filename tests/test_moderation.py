"""Moderation: the HTML report in a real headless Chromium, explanations, decisions, exports and SQL views."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from scanner.cli import app
from scanner.db import make_engine
from scanner.detector.checkpoint import load_model
from scanner.detector.evidence import gradcam
from scanner.detector.preprocess import preprocess_bytes
from scanner.moderation.html_report import render_html_chunks
from scanner.moderation.queue import item_detail
from scanner.moderation.reports import job_status, render_jsonl, report_rows
from scanner.moderation.review import ReviewError, add_decision, export_labels, import_decisions
from scanner.pipeline.submit import open_database
from scanner.settings import Settings
from tests.conftest import settings_env
from tests.imaging import encode, noisy_image, smooth_image
from tests.support import browser, scanned_job
from training.data import find_samples

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def chromium(*args: str, timeout: float = 90) -> str:
    """Run headless Chromium and return what it printed."""
    assert CHROMIUM, "chromium is not installed: scripts/test.sh installs Debian's chromium"
    result = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=timeout)
    return result.stdout


def rendered_dom(page: Path) -> str:
    """The page's DOM once its script has counted the loaded thumbnails (a wait on the page, not on a timer)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.thumbsLoaded"))
        return str(driver.page_source)
    finally:
        driver.quit()


def test_html_report_renders_in_a_real_browser(settings: Settings, tmp_path: Path) -> None:
    if "postgresql" in settings.database_url:
        pytest.skip("the browser check runs once, on SQLite")
    job_id = scanned_job(settings, tmp_path / "in")
    with open_database(settings).begin() as session:
        first_item = report_rows(session, job_id)[0]["item_id"]
        add_decision(session, first_item, "fake", "alice", "<script>alert(1)</script>")
    (tmp_path / "in" / "real_4.png").unlink()  # a source that is gone gets a placeholder
    report = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        ["report", str(job_id), "--format", "html", "--explain", "--output", str(report)],
        env=settings_env(settings),
    )
    assert result.exit_code == 0, result.output
    html = report.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert "<script>alert(1)" not in html
    dom = rendered_dom(report)
    rows = re.findall(r'<tr class="(fake|real)" data-item-id="(\d+)"', dom)
    assert len(rows) == 10
    labels = [label for label, _ in rows]
    assert labels == sorted(labels, key=lambda label: label != "fake") and "fake" in labels  # flagged first
    loaded = int(re.search(r'data-thumbs-loaded="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r'data-thumbs-failed="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    flagged = labels.count("fake")
    assert (loaded, failed) == (9 + flagged, 0)  # 9 thumbnails (one source gone) + one heatmap per flagged item
    assert dom.count('class="placeholder"') == 1
    assert "alice" in dom and "<td>truncated</td>" in dom
    screenshot = tmp_path / "report.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1280,900", report.as_uri())
    assert screenshot.stat().st_size > 5000


def test_html_escapes_everything_from_the_data() -> None:
    status = {"job_id": 1, "model_version": "<b>v</b>", "threshold": 0.5, "mode": "embedded", "created_at": "x",
              "finished_at": None, "items": 1, "done": 1, "flagged": 0, "errors": 0, "skipped": 0,
              "errors_by_code": {"<img src=x>": 1}}  # fmt: skip
    row = {"item_id": 1, "uri": "/x/</script><script>alert(1)</script>.png", "status": "done", "score": 0.1,
           "label": "real", "error_code": None, "error_message": None}  # fmt: skip
    html = "".join(render_html_chunks(status, [row]))
    assert "</script><script>alert(1)" not in html
    assert "<b>v</b>" not in html and "<img src=x>" not in html


def test_gradcam_points_at_the_manipulated_region(tiny_model: Path) -> None:
    loaded = load_model(tiny_model, "cpu")
    image = np.asarray(smooth_image(3, 32)).copy()
    image[:, 16:] = np.asarray(noisy_image(3, 32))[:, 16:]  # only the right half carries the 'fake' trace
    tensor = preprocess_bytes(encode(_image(image)), loaded.preprocess.decoding)
    heatmap = gradcam(loaded.model, tensor)
    assert heatmap.shape == (32, 32) and 0 <= heatmap.min() and heatmap.max() <= 1
    assert heatmap[:, 16:].mean() > heatmap[:, :16].mean()


def test_each_views_heat_lands_where_the_view_came_from_on_one_scale() -> None:
    """The review app painted each view's map in a panel of its own, each scaled to its own peak (a face that scored
    real looked as hot as the view that flagged the image); now one map over the image, weighted by view scores."""
    from scanner.detector.evidence import place_maps

    whole = np.full((4, 4), 0.2, dtype=np.float32)  # the whole image: a weak view, evenly warm
    face = np.zeros((4, 4), dtype=np.float32)
    face[1, 2] = 0.9  # the face view: one hot spot
    heat = place_maps([whole, face], [(0, 0, 100, 80), (40, 20, 80, 60)], (100, 80))
    assert heat.shape == (80, 80 + 20)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert 40 <= x < 80 and 20 <= y < 60 and heat.max() == pytest.approx(0.9, abs=0.05)
    assert heat[5, 5] == pytest.approx(0.2) and heat[75, 95] == pytest.approx(0.2)  # outside the face: the whole's
    assert place_maps([whole], [(10, 10, 10, 30)], (20, 40)).max() == 0  # an empty region paints nothing


def _image(array: np.ndarray):  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image.fromarray(array)


def test_decisions_are_rows_and_exports_feed_training(settings: Settings, tmp_path: Path) -> None:
    job_id = scanned_job(settings, tmp_path / "in")
    sessions = open_database(settings)
    with sessions() as session:
        rows = report_rows(session, job_id)
    by_name = {Path(r["uri"]).name: r for r in rows}
    env = settings_env(settings)
    runner = CliRunner()
    first = runner.invoke(app, ["review", str(by_name["fake_0.png"]["item_id"]), "--decision", "real",
                                "--reviewer", "bob", "--note", "looks fine"], env=env)  # fmt: skip
    assert first.exit_code == 0, first.output
    csv_file = tmp_path / "decisions.csv"
    lines = ["item_id,decision,reviewer,note"]
    lines += [f"{by_name[f'fake_{i}.png']['item_id']},fake,carol," for i in range(3)]
    lines += [f"{by_name[f'real_{i}.png']['item_id']},real,," for i in range(2)]
    lines += [f"{by_name['real_2.png']['item_id']},unsure,dave,hmm"]
    csv_file.write_text("\n".join(lines) + "\n")
    imported = runner.invoke(app, ["review", "--import", str(csv_file)], env={**env, "USER": "erin"})
    assert imported.exit_code == 0, imported.output
    bad = runner.invoke(app, ["review", "999999", "--decision", "fake"], env=env)
    assert bad.exit_code == 1 and "no item" in bad.stderr
    with sessions() as session:
        history = item_detail(session, by_name["fake_0.png"]["item_id"])["history"]  # type: ignore[index]
        assert [(d.decision, d.reviewer) for d in history] == [("real", "bob"), ("fake", "carol")]
        rows_after = {Path(r["uri"]).name: r for r in report_rows(session, job_id)}
        assert rows_after["fake_0.png"]["decision"] == "fake"
        assert rows_after["fake_0.png"]["score"] == by_name["fake_0.png"]["score"]  # verdict untouched
        assert rows_after["real_0.png"]["reviewer"] == "erin"
        with pytest.raises(ReviewError):
            import_decisions(session, io.StringIO("item_id,decision\n1,maybe\n"), "x")
    out = tmp_path / "labels"
    exported = runner.invoke(app, ["export-labels", str(job_id), "--out", str(out)], env=env)
    assert exported.exit_code == 0, exported.output
    samples = find_samples(out)
    assert sorted((s.label, s.path.name.split("_", 1)[1]) for s in samples) == sorted(
        [(1, f"fake_{i}.png") for i in range(3)] + [(0, "real_0.png"), (0, "real_1.png")]
    )
    with sessions() as session:
        assert export_labels(session, settings, job_id, tmp_path / "again").written == {"real": 2, "fake": 3}


def test_reporting_views_and_jsonl(settings: Settings, tmp_path: Path) -> None:
    job_id = scanned_job(settings, tmp_path / "in")
    sessions = open_database(settings)
    with sessions.begin() as session:
        rows = report_rows(session, job_id)
        flagged = [r for r in rows if r["label"] == "fake"]
        add_decision(session, flagged[0]["item_id"], "unsure", "alice")
        add_decision(session, flagged[0]["item_id"], "real", "bob")
        status = job_status(session, job_id)
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        view_rows = connection.execute(text("SELECT item_id, latest_decision, reviewer FROM flagged_items")).all()
        summary = connection.execute(
            text("SELECT items, done, errors, flagged, queued FROM job_summary WHERE job_id = :j"), {"j": job_id}
        ).one()
        daily = connection.execute(text("SELECT processed, flagged, errors FROM daily_counts")).all()
    engine.dispose()
    assert len(view_rows) == len(flagged) == status["flagged"]
    assert (flagged[0]["item_id"], "real", "bob") in [tuple(r) for r in view_rows]
    assert tuple(summary) == (11, 10, 1, status["flagged"], 0)
    assert [tuple(r) for r in daily] == [(11, status["flagged"], 1)]
    lines = "".join(render_jsonl(rows)).splitlines()
    assert len(lines) == 11 and all(line.startswith("{") for line in lines)
