"""The photo inside a page: screenshots of posts, letterboxed frames and padded reposts show a photo on a flat
background with a few lines of text or icons around it. The model should see the photo, not the page: a face's
widened crop would run into the page, and the whole-image view would be mostly page."""

from __future__ import annotations

import numpy as np
from PIL import Image

from training.faces import opencv

PAGE_TOLERANCE = 4  # grey levels (any channel) a page pixel may differ from the page colour: JPEG noise
FLAT_SIDE_SHARE = 0.95  # an edge of the image is page when this share of its pixels has the page colour
STRAIGHT_SHARE = 0.9  # a side of the cut must run along the photo: this share of the pixels along it not page colour
MIN_PHOTO_SHARE = 0.1  # the photo found must cover at least this share of the page
MIN_PHOTO_SIDE = 32  # and be at least this many pixels on each side (a CIFAR image)
MIN_TRIM_SHARE = 0.03  # trims that would remove less than this share of the width and of the height are not made
SECOND_PHOTO_SHARE = 0.2  # another area this large against the largest makes the page a collage, scored whole
SEARCH_SIDE = 1024  # larger images are searched on a copy reduced to at most this (bounded memory and time)
Region = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), as PIL's crop takes it


def _edges(pixels: np.ndarray) -> list[np.ndarray]:
    return [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]


def page_colour(pixels: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The colour that an edge of the image is made of almost entirely (the one most edges share) and how many edges
    share it, or None."""
    flat_colours: list[np.ndarray] = []
    for edge in _edges(pixels):
        colour = np.median(edge, axis=0)
        if np.mean(np.abs(edge - colour).max(axis=1) <= PAGE_TOLERANCE) >= FLAT_SIDE_SHARE:
            flat_colours.append(colour)
    shared = [sum(np.abs(other - colour).max() <= PAGE_TOLERANCE for other in flat_colours) for colour in flat_colours]
    return (flat_colours[int(np.argmax(shared))], max(shared)) if flat_colours else None


def _straight_cut(mask: np.ndarray, region: Region) -> bool:
    """Whether every side of `region` that lies inside the image runs along the photo's edge (almost all photo along
    it), as a photo pasted on a page does, and not across a photo's overexposed sky or studio backdrop."""
    left, top, right, bottom = region
    height, width = mask.shape
    sides = [(left > 0, mask[top:bottom, left]), (top > 0, mask[top, left:right]),
             (right < width, mask[top:bottom, right - 1]), (bottom < height, mask[bottom - 1, left:right])]  # fmt: skip
    return all(float(np.mean(line)) >= STRAIGHT_SHARE for inside, line in sides if inside)


def _photo_box(mask: np.ndarray, min_side: int) -> Region | None:
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
        if photo_sized and second[cv2.CC_STAT_AREA] >= SECOND_PHOTO_SHARE * first[cv2.CC_STAT_AREA]:
            return None
    left, top, width, height = (int(v) for v in stats[order[0], :4])
    return left, top, left + width, top + height


def page_region(image: Image.Image) -> Region | None:
    """The photo's rectangle when `image` is a photo on a flat page (two edges of one colour: a screenshot, a
    letterbox; or one, as a caption bar above a meme, when the cut runs along straight sides of the photo): the largest
    connected area of other colours. None when it is not, or the photo would be too small or nearly the whole image."""
    if min(image.size) < MIN_PHOTO_SIDE:
        return None
    factor = -(-max(image.size) // SEARCH_SIDE)  # ceil: the copy's longer side is at most SEARCH_SIDE
    copy = image.reduce(factor) if factor > 1 else image
    pixels = np.asarray(copy.convert("RGB"), dtype=np.int16)
    page = page_colour(pixels)
    if page is None:
        return None
    mask = np.abs(pixels - page[0].astype(np.int16)).max(axis=2) > PAGE_TOLERANCE
    region = _photo_box(mask, MIN_PHOTO_SIDE // factor)
    if region is None or (page[1] < 2 and not _straight_cut(mask, region)):  # one flat edge: a bar, or a sky?
        return None
    left, top = region[0] * factor, region[1] * factor  # widened to whole copy pixels: no photo pixel is cut
    right, bottom = min(image.width, region[2] * factor), min(image.height, region[3] * factor)
    width, height = right - left, bottom - top
    if min(width, height) < MIN_PHOTO_SIDE or width * height < MIN_PHOTO_SHARE * image.width * image.height:
        return None
    if width > (1 - MIN_TRIM_SHARE) * image.width and height > (1 - MIN_TRIM_SHARE) * image.height:
        return None
    return left, top, right, bottom
