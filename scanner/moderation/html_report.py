"""A self-contained HTML report: summary, flagged items first with thumbnails and score bars, errors."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from PIL import Image

from scanner.detector.faces import Box
from scanner.moderation.images import ImageUnavailable, boxes_on, draw_boxes, scanned_image
from scanner.moderation.reports import redact_row
from scanner.settings import Settings

THUMB_SIDE = 112
PAGE_SIZE = 100
VISUAL_CHUNK = 64
HTML_FIELDS = ("item_id", "uri", "status", "score", "label", "error_code", "error_message", "size_bytes", "width",
               "height", "decision", "reviewer", "thumb", "heat", "whole_score", "patch_score", "faces")  # fmt: skip
Explain = Callable[[Image.Image, list[Box]], Image.Image]


def jpeg_data_uri(image: Image.Image, side: int = THUMB_SIDE, quality: int = 70) -> str:
    """A small JPEG of the image as a data: URI."""
    thumb = image.copy()
    thumb.thumbnail((side, side))
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def boxes_in(image: Image.Image, row: dict[str, Any]) -> list[Box]:
    """The row's stored face boxes (upright full-size pixels) scaled to `image`."""
    return boxes_on(image, row.get("width"), row.get("height"), [Box(*face["box"]) for face in row.get("faces") or []])


def _visuals(row: dict[str, Any], settings: Settings, explain: Explain | None) -> tuple[str | None, str | None]:
    try:
        image = scanned_image(row["item_id"], row["uri"], row["kind"], row["sha256"], 4 * THUMB_SIDE, settings)
    except ImageUnavailable:
        return None, None  # the source is gone, changed since the scan, or no longer decodes: placeholder
    boxes = boxes_in(image, row)
    heat = jpeg_data_uri(explain(image, boxes), side=4 * THUMB_SIDE) if explain and row["label"] == "fake" else None
    scores = [face["score"] for face in row.get("faces") or []]
    return jpeg_data_uri(draw_boxes(image, boxes, scores, row["threshold"] or 0.5)), heat


def with_visuals(
    rows: Iterable[dict[str, Any]], settings: Settings, explain: Explain | None, max_thumbnails: int
) -> Iterator[dict[str, Any]]:
    """The rows as they come, the first `max_thumbnails` scanned ones given `thumb` (and `heat` for flagged items
    when explaining), made VISUAL_CHUNK at a time: a chunk of rows and their pictures in memory, not the job."""
    left, pending, scanned = max_thumbnails, [], []
    workers = 1 if explain is not None else 4  # Grad-CAM shares one model: keep it on one thread
    with ThreadPoolExecutor(workers) as pool:
        for row in rows:
            pending.append(row)
            if left > 0 and row["status"] == "done":
                scanned.append(row)
                left -= 1
            if len(pending) >= VISUAL_CHUNK or left <= 0:
                _attach(pool, scanned, settings, explain)
                yield from pending
                pending, scanned = [], []
        _attach(pool, scanned, settings, explain)
        yield from pending


def _attach(pool: ThreadPoolExecutor, rows: list[dict[str, Any]], settings: Settings, explain: Explain | None) -> None:
    for row, (thumb, heat) in zip(rows, pool.map(lambda row: _visuals(row, settings, explain), rows)):
        row["thumb"], row["heat"] = thumb, heat


def _json_for_script(value: Any) -> str:
    """JSON that cannot close the <script> element it sits in."""
    text = json.dumps(value, default=str, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _summary_html(status: dict[str, Any]) -> str:
    e = html.escape
    counts = "".join(
        f"<div class='stat'><b>{e(str(status[key]))}</b><span>{e(label)}</span></div>"
        for key, label in (("items", "items"), ("done", "scanned"), ("flagged", "flagged"),
                           ("errors", "errors"), ("skipped", "skipped"))
    )  # fmt: skip
    codes = "".join(f"<li><code>{e(code)}</code>: {count}</li>" for code, count in status["errors_by_code"].items())
    return (
        f"<h1>fauxscan job {e(str(status['job_id']))}</h1>"
        f"<p class='meta'>model <code>{e(status['model_version'])}</code>, threshold "
        f"{status['threshold']:.4f}, {e(status['mode'])}, created {e(str(status['created_at']))}, "
        f"finished {e(str(status['finished_at'] or 'not yet'))}</p>"
        f"<div class='stats'>{counts}</div>" + (f"<h3>Errors by code</h3><ul>{codes}</ul>" if codes else "")
    )


def render_html_chunks(status: dict[str, Any], rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The report's HTML a row at a time: the page up to its data, the rows as a JSON array, the rest."""
    template = (resources.files("scanner.moderation") / "templates" / "report.html").read_text(encoding="utf-8")
    head, tail = (
        part.replace("{{summary}}", _summary_html(status)).replace("{{page_size}}", str(PAGE_SIZE))
        for part in template.split("{{data}}")
    )
    yield head + "["
    for number, row in enumerate(rows):
        kept = redact_row({k: row.get(k) for k in HTML_FIELDS})
        yield ("," if number else "") + _json_for_script(kept)
    yield "]" + tail
