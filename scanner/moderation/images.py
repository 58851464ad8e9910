"""Images for the review app: read once through the scanner's limits, thumbnailed, cached on disk by sha256."""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from scanner.db import Face, Item, Verdict
from scanner.detector.faces import Box, scale_box, upright_size
from scanner.detector.preprocess import ImageRejected, decode_image
from scanner.pipeline.loader import read_item
from scanner.settings import Settings

SIDES = {"thumb": 160, "large": 1024, "full": 4096}  # the only sizes served: one cache file per image and size
HEATMAP = "heatmap"
SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ImageUnavailable(LookupError):
    """The item's image cannot be shown (not scanned, source gone or changed, not decodable)."""


BOX_STYLE = 2  # how face boxes are drawn (2: labelled in words); part of the cached file's name


class ImageCache:
    """JPEGs of scanned items with their face boxes, written once per (sha256, model, size) under `root`."""

    def __init__(
        self, settings: Settings, root: Path, explain_loader: Callable[[], tuple[str, Any]] | None = None
    ) -> None:
        self.settings = settings
        self.root = root
        self._explain_loader = explain_loader
        self._explain: Any = None
        self._explain_lock = threading.Lock()
        # Requests run in a thread pool: without a bound, a dozen uncached 64 Mpx images decode at once (6.7 GB).
        self._decodes = threading.BoundedSemaphore(settings.decodes_at_once)

    def path_for(self, item: Item, verdict: Verdict, kind: str) -> Path:
        """Where this image (a size from SIDES, or the heatmap) is cached."""
        model = SAFE.sub("_", verdict.model_version)[:80]  # faces and heatmaps depend on content and model only
        name = f"{item.sha256}-{model}-b{BOX_STYLE}-{kind}.jpg"
        return self.root / str(item.sha256)[:2] / name

    def get(self, item: Item, verdict: Verdict | None, faces: list[Face], kind: str) -> Path:
        """The cached JPEG, made on first use; ImageUnavailable when the item has no image to show."""
        if verdict is None or not item.sha256:
            raise ImageUnavailable("this item was not scanned")
        path = self.path_for(item, verdict, kind)
        if not path.exists():
            with self._decodes:
                if not path.exists():  # made meanwhile by a request that held the slot first
                    _write_atomically(path, self._render(item, verdict, faces, kind))
        return path

    def _render(self, item: Item, verdict: Verdict, faces: list[Face], kind: str) -> Image.Image:
        side = SIDES["large"] if kind == HEATMAP else SIDES[kind]
        image = scanned_image(item.id, item.uri, item.kind, item.sha256, side, self.settings)
        boxes = boxes_on(image, item.width, item.height, [Box(f.x, f.y, f.w, f.h) for f in faces])
        if kind == HEATMAP:
            return self._heatmap(image, boxes, verdict.model_version)
        return draw_boxes(image, boxes, [f.score for f in faces], verdict.threshold)

    def _heatmap(self, image: Image.Image, boxes: list[Box], model_version: str) -> Image.Image:
        if self._explain_loader is None:
            raise ImageUnavailable("heatmaps are off")
        with self._explain_lock:  # one model, loaded once; Grad-CAM needs gradients: one image at a time
            if self._explain is None:
                self._explain = self._explain_loader()
            version, explain = self._explain
            if version != model_version:
                raise ImageUnavailable(f"scored by {model_version}; this server holds {version} (--model)")
            return explain(image, boxes)  # type: ignore[no-any-return]


def scanned_image(item_id: int, uri: str, kind: str, sha256: str | None, side: int, settings: Settings) -> Image.Image:
    """The item's source decoded towards `side`, read through the scan's limits; ImageUnavailable (with why) when
    it cannot be read now, is no longer the content that was scanned, or does not decode."""
    loaded, data = read_item(item_id, uri, kind, settings)
    if data is None:
        raise ImageUnavailable(f"the source is not readable now ({loaded.error_code})")
    if sha256 and loaded.sha256 != sha256:
        raise ImageUnavailable("the source changed since it was scanned")
    try:
        return decode_image(data, side, settings.max_pixels).image
    except ImageRejected as exc:
        raise ImageUnavailable(str(exc)) from None


def boxes_on(image: Image.Image, width: int | None, height: int | None, boxes: list[Box]) -> list[Box]:
    """Face boxes stored in the full-size upright image (`width` x `height`) scaled to `image`."""
    full_size = upright_size(image.size, width or image.width, height or image.height)
    return [scale_box(box, full_size, image.size) for box in boxes]


def draw_boxes(image: Image.Image, boxes: list[Box], scores: list[float], threshold: float) -> Image.Image:
    """A copy with each face outlined (red when its crop scored at or above the threshold, green below) and
    labelled in words, so colour is not the only cue: "face 1 · fake 0.91"."""
    marked = image.copy().convert("RGB")
    pen = ImageDraw.Draw(marked)
    width = max(2, round(max(image.size) / 100))
    font = ImageFont.load_default(size=max(11, round(max(image.size) / 40)))
    for number, (box, score) in enumerate(zip(boxes, scores), start=1):
        flagged = score >= threshold
        colour = (220, 40, 40) if flagged else (30, 150, 70)
        pen.rectangle([box.x, box.y, box.x + box.w, box.y + box.h], outline=colour, width=width)
        text = f"face {number} · {'fake' if flagged else 'real'} {score:.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        height = bottom - top + 4
        y = box.y - height if box.y >= height else box.y + box.h  # above the box, else below it
        pen.rectangle([box.x, y, box.x + right - left + 6, y + height], fill=colour)
        pen.text((box.x + 3, y + 2 - top), text, fill=(255, 255, 255), font=font)
    return marked


def _write_atomically(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(handle, "wb") as out:
        out.write(buffer.getvalue())
    os.replace(temporary, path)
