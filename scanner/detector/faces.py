"""Face finding with the Haar cascade that ships inside opencv-python-headless 4.x (no download)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CASCADE_FILE = "haarcascade_frontalface_default.xml"
NEEDS_OPENCV = "face-aware models need pip install 'opencv-python-headless>=4.8,<5'"


@dataclass(frozen=True)
class Box:
    """A rectangle in the pixel coordinates of the decoded image."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        """Width times height."""
        return self.w * self.h

    def to_list(self) -> list[int]:
        """[x, y, w, h] for JSON and SQL."""
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class FaceSettings:
    """How faces are found and framed; stored in the checkpoint's preprocessing."""

    detect_side: int = 160
    min_face_fraction: float = 0.12
    scale_factor: float = 1.2
    min_neighbors: int = 4
    widen: float = 1.6
    max_faces: int = 3


@dataclass(frozen=True)
class HalfTurnCheck:
    """When the upright search's surest face is weak (the cascade's confidence under `below`), search the image
    upside down too, and keep that find where it is surer by more than `margin`: the Haar cascade takes many
    upside-down faces for weak upright ones, and an upside-down image scored as stored hides a fake."""

    below: float
    margin: float = 1.0

    @classmethod
    def from_dict(cls, data: Any) -> HalfTurnCheck:
        """Rebuild from a checkpoint's mapping; ValueError unless both are finite numbers and the margin >= 0."""
        if not isinstance(data, dict) or set(data) - {"below", "margin"} or "below" not in data:
            raise ValueError(f"a half-turn check needs 'below' and optionally 'margin', not {data!r}")
        values = [data["below"], data.get("margin", 1.0)]
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in values):
            raise ValueError(f"the half-turn check's below and margin must be finite numbers, not {data!r}")
        if values[1] < 0:
            raise ValueError(f"the half-turn check's margin must be 0 or more, not {values[1]}")
        return cls(float(values[0]), float(values[1]))


_IMPORT_LOCK = threading.Lock()  # cv2's first import is not thread-safe (a half-initialised module is seen)


def opencv() -> Any:
    """The cv2 module, imported under a lock (its first import is not thread-safe), with one thread per call."""
    with _IMPORT_LOCK:
        import cv2

        cv2.setNumThreads(1)  # decoding already runs one image per thread
        return cv2


class FaceFinder:
    """Finds frontal faces; one cascade per thread (OpenCV classifiers are not shared safely)."""

    def __init__(self, settings: FaceSettings) -> None:
        self.settings = settings
        self._local = threading.local()

    def _cascade(self) -> object:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cv2 = opencv()
            folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
            if not hasattr(cv2, "CascadeClassifier") or not folder:
                raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar cascades (5.x dropped them): {NEEDS_OPENCV}")
            cascade = cv2.CascadeClassifier(folder + CASCADE_FILE)
            if cascade.empty():
                raise RuntimeError(f"OpenCV {cv2.__version__} could not load {folder + CASCADE_FILE}: {NEEDS_OPENCV}")
            self._local.cascade = cascade
        return cascade

    def check(self) -> None:
        """Load the cascade now, so a missing one is one setup error rather than every image failing."""
        self._cascade()

    def _search_copy(self, image: Image.Image) -> tuple[np.ndarray, float, int]:
        """The grey copy faces are searched on, its scale against `image`, and the smallest face side searched."""
        cfg = self.settings
        grey = image.convert("L")
        scale = min(1.0, cfg.detect_side / max(grey.size))
        if scale < 1.0:
            small = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
            grey = grey.resize(small, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(grey), scale, max(20, round(cfg.min_face_fraction * min(grey.size)))

    def _detect(self, grey: np.ndarray, scale: float, min_side: int) -> tuple[list[Box], float]:
        """Face boxes in the image's pixels, largest first, at most `max_faces`, and the cascade's confidence in the
        surest (its last stage's sum; -inf when none). detectMultiScale3 gave the boxes detectMultiScale gives on
        all 72,146 searches of the shared sets' 36,073 images (at 128 and 160 px), at the same cost."""
        cfg = self.settings
        found, _, weights = self._cascade().detectMultiScale3(  # type: ignore[attr-defined]
            np.ascontiguousarray(grey), scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors,
            minSize=(min_side, min_side), outputRejectLevels=True,
        )  # fmt: skip
        boxes = [Box(*(round(int(v) / scale) for v in row)) for row in found]
        largest = sorted(boxes, key=lambda box: box.area, reverse=True)[: cfg.max_faces]
        return largest, float(np.max(weights)) if len(weights) else -math.inf

    def find(self, image: Image.Image) -> list[Box]:
        """Face boxes in `image` coordinates, largest first, at most `max_faces`."""
        return self.find_sure(image)[0]

    def find_sure(self, image: Image.Image, turn: int = 0) -> tuple[list[Box], float]:
        """Boxes found in `image` turned by `turn` degrees counter-clockwise (in the turned image's pixels), and the
        cascade's confidence in the surest (-inf when none)."""
        grey, scale, min_side = self._search_copy(image)
        if min(grey.shape) < min_side:
            return [], -math.inf
        return self._detect(np.rot90(grey, turn // 90), scale, min_side)

    def find_checked(self, image: Image.Image, check: HalfTurnCheck) -> tuple[int, list[Box]]:
        """`find` with the half-turn check: (0, the upright boxes), or (180, the boxes in the upside-down image's
        pixels) where the upright find is weak and the upside-down one surer (see HalfTurnCheck)."""
        grey, scale, min_side = self._search_copy(image)
        if min(grey.shape) < min_side:
            return 0, []
        boxes, confidence = self._detect(grey, scale, min_side)
        if not boxes or confidence >= check.below:
            return 0, boxes
        turned_boxes, turned_confidence = self._detect(np.rot90(grey, 2), scale, min_side)
        return (180, turned_boxes) if turned_confidence > confidence + check.margin else (0, boxes)

    def find_turned(self, image: Image.Image, turns: tuple[int, ...]) -> tuple[int, list[Box]] | None:
        """The turn (degrees counter-clockwise, one of `turns`) that shows faces in `image`, and their boxes in the
        turned image's pixels, largest first; None when no turn does. When several do, the one the cascade is surest
        of (its last stage's sum). The grey copy is made once and turned (cheap), not the image."""
        grey, scale, min_side = self._search_copy(image)
        if min(grey.shape) < min_side:
            return None
        found = {}
        for turn in turns:
            boxes, confidence = self._detect(np.rot90(grey, turn // 90), scale, min_side)
            if boxes:
                found[turn] = boxes, confidence
        if not found:
            return None
        surest = max(found, key=lambda turn: found[turn][1])
        return surest, found[surest][0]


def save_boxes(path: Path, settings: FaceSettings, boxes: Mapping[str, list[Box]]) -> None:
    """Write face boxes found once (by sample key) with the settings that found them."""
    payload = {"face_settings": asdict(settings), "boxes": {k: [b.to_list() for b in v] for k, v in boxes.items()}}
    path.write_text(json.dumps(payload, sort_keys=True))


def load_boxes(path: Path, settings: FaceSettings) -> dict[str, list[Box]]:
    """Read a face-box file; it must have been made with these face settings."""
    payload = json.loads(path.read_text())
    if payload.get("face_settings") != asdict(settings):
        raise ValueError(f"{path} was made with face settings {payload.get('face_settings')}, not {asdict(settings)}")
    return {key: [Box(*row) for row in rows] for key, rows in payload["boxes"].items()}


def upright_size(image_size: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """A file's (width, height) as its decoded image shows it: swapped when EXIF orientation turned the image."""
    if (image_size[0] > image_size[1]) != (width > height):
        return height, width
    return width, height


def scale_box(box: Box, source: tuple[int, int], target: tuple[int, int]) -> Box:
    """`box` on an image of size `source`, in the pixels of the same image shown at size `target`."""
    fx, fy = target[0] / source[0], target[1] / source[1]
    return Box(round(box.x * fx), round(box.y * fy), max(1, round(box.w * fx)), max(1, round(box.h * fy)))


def face_region(box: Box, width: int, height: int, widen: float) -> tuple[int, int, int, int]:
    """The square around a face, widened by `widen`, moved (not cut) to lie inside the image."""
    side = min(round(max(box.w, box.h) * widen), width, height)
    centre_x, centre_y = box.x + box.w / 2, box.y + box.h / 2
    left = int(min(max(0, round(centre_x - side / 2)), width - side))
    top = int(min(max(0, round(centre_y - side / 2)), height - side))
    return left, top, left + side, top + side
