"""The photo inside a page: screenshots of posts, letterboxed frames and padded reposts show a photo on a flat
background with a few lines of text or icons around it. The model should see the photo, not the page: a face's
widened crop would run into the page, and the whole-image view would be mostly page."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from scanner.detector.faces import opencv


@dataclass(frozen=True)
class PageSettings:
    """How the photo inside a page is found; stored in the checkpoint, so a model keeps the cut it was
    calibrated with whatever later code prefers."""

    tolerance: int = 4  # grey levels (any channel) a page pixel may differ from the page colour: JPEG noise
    flat_side_share: float = 0.95  # an edge of the image is page when this share of its pixels has the page colour
    straight_share: float = 0.9  # a side of the cut must run along the photo: this share of the pixels along it photo
    min_photo_share: float = 0.1  # the photo found must cover at least this share of the page
    min_photo_side: int = 32  # and be at least this many pixels on each side (a CIFAR image)
    min_trim_share: float = 0.03  # trims that would remove less than this share of the width and of the height: none
    second_photo_share: float = 0.2  # another area this large against the largest: a collage, scored whole
    search_side: int = 1024  # larger images are searched on a copy reduced to at most this (bounded memory and time)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PageSettings:
        """Rebuild from a checkpoint's dictionary; unknown keys, wrong types or values out of range are refused."""
        names = {f.name: f.type for f in fields(cls)}
        if not isinstance(data, dict):
            raise ValueError(f"page settings must be a mapping of {', '.join(names)}, not {data!r}")
        if unknown := sorted(set(data) - set(names)):
            raise ValueError(f"unknown page setting(s) {', '.join(map(str, unknown))}; known: {', '.join(names)}")
        for name, value in data.items():
            whole = names[name] == "int"
            if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
                raise ValueError(f"page setting {name} must be {'a whole number' if whole else 'a number'}: {value!r}")
        settings = cls(**data)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values no page search can use."""
        shares = (self.flat_side_share, self.straight_share, self.min_photo_share, self.min_trim_share,
                  self.second_photo_share)  # fmt: skip
        if not all(0 <= share <= 1 for share in shares):
            raise ValueError(f"page settings: every share must lie in [0, 1]: {self}")
        if not 0 <= self.tolerance <= 255 or self.min_photo_side < 1 or self.search_side < 64:
            raise ValueError(f"page settings: tolerance 0-255, min_photo_side >= 1, search_side >= 64: {self}")


Region = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), as PIL's crop takes it


def _edges(pixels: np.ndarray) -> list[np.ndarray]:
    return [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]


def page_colour(pixels: np.ndarray, settings: PageSettings) -> tuple[np.ndarray, int] | None:
    """The colour that an edge of the image is made of almost entirely (the one most edges share) and how many edges
    share it, or None."""
    flat_colours: list[np.ndarray] = []
    for edge in _edges(pixels):
        colour = np.median(edge, axis=0)
        if np.mean(np.abs(edge - colour).max(axis=1) <= settings.tolerance) >= settings.flat_side_share:
            flat_colours.append(colour)
    close = settings.tolerance
    shared = [sum(np.abs(other - colour).max() <= close for other in flat_colours) for colour in flat_colours]
    return (flat_colours[int(np.argmax(shared))], max(shared)) if flat_colours else None


def _straight_cut(mask: np.ndarray, region: Region, share: float) -> bool:
    """Whether every side of `region` that lies inside the image runs along the photo's edge (almost all photo along
    it), as a photo pasted on a page does, and not across a photo's overexposed sky or studio backdrop."""
    left, top, right, bottom = region
    height, width = mask.shape
    sides = [(left > 0, mask[top:bottom, left]), (top > 0, mask[top, left:right]),
             (right < width, mask[top:bottom, right - 1]), (bottom < height, mask[bottom - 1, left:right])]  # fmt: skip
    return all(float(np.mean(line)) >= share for inside, line in sides if inside)


def _photo_box(mask: np.ndarray, min_side: int, second_share: float) -> Region | None:
    """The box of the largest connected area of `mask`, unless another area is a photo too, `min_side` or more a side
    (a collage, a grid of posts: the page is scored whole, so no photo on it goes unscored; a line of text is not)."""
    cv2 = opencv()
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    order = 1 + np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1]  # areas by size; label 0 is the page
    if len(order) > 1:
        first, second = stats[order[0]], stats[order[1]]
        photo_sized = min(second[cv2.CC_STAT_WIDTH], second[cv2.CC_STAT_HEIGHT]) >= min_side
        if photo_sized and second[cv2.CC_STAT_AREA] >= second_share * first[cv2.CC_STAT_AREA]:
            return None
    left, top, width, height = (int(v) for v in stats[order[0], :4])
    return left, top, left + width, top + height


def page_region(image: Image.Image, settings: PageSettings) -> Region | None:
    """The photo's rectangle when `image` is a photo on a flat page (two edges of one colour: a screenshot, a
    letterbox; or one, as a caption bar above a meme, when the cut runs along straight sides of the photo): the largest
    connected area of other colours. None when it is not, or the photo would be too small or nearly the whole image."""
    if min(image.size) < settings.min_photo_side:
        return None
    factor = -(-max(image.size) // settings.search_side)  # ceil: the copy's longer side is at most search_side
    copy = image.reduce(factor) if factor > 1 else image
    pixels = np.asarray(copy.convert("RGB"), dtype=np.int16)
    page = page_colour(pixels, settings)
    if page is None:
        return None
    mask = np.abs(pixels - page[0].astype(np.int16)).max(axis=2) > settings.tolerance
    region = _photo_box(mask, settings.min_photo_side // factor, settings.second_photo_share)
    one_edge = page[1] < 2  # one flat edge: a caption bar, or a photo's sky?
    if region is None or (one_edge and not _straight_cut(mask, region, settings.straight_share)):
        return None
    left, top = region[0] * factor, region[1] * factor  # widened to whole copy pixels: no photo pixel is cut
    right, bottom = min(image.width, region[2] * factor), min(image.height, region[3] * factor)
    width, height = right - left, bottom - top
    too_small = width * height < settings.min_photo_share * image.width * image.height
    if min(width, height) < settings.min_photo_side or too_small:
        return None
    keep = 1 - settings.min_trim_share
    if width > keep * image.width and height > keep * image.height:
        return None
    return left, top, right, bottom
