"""Self-blended images: pseudo-fakes made from one real face (after Shiohara and Yamasaki, CVPR 2022).

A slightly altered copy of a real image (colour, sharpness or blur, a small shift and scale) is blended
back into the image inside a soft, irregular mask over the face or over one part of it (eyes, nose,
mouth). The result has a face swap's or a splice's boundary and mismatched statistics, with no
identity or generator to memorise. The mask comes from the face box (no landmarks needed).
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw, ImageFilter

from scanner.detector.faces import Box
from training.augment import colour_jitter, downscale

# Where a part sits in a frontal face box (Haar's: brows to chin): centre x, centre y, half-width, half-height.
FACE_PARTS: dict[str, tuple[float, float, float, float]] = {
    "eyes": (0.5, 0.38, 0.40, 0.13),
    "nose": (0.5, 0.58, 0.14, 0.18),
    "mouth": (0.5, 0.78, 0.22, 0.10),
}
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def altered_copy(image: Image.Image, box: Box, rng: random.Random) -> Image.Image:
    """The source face: the image with shifted colours, blurred or sharpened, moved and scaled a little."""
    copy = colour_jitter(image, 0.1, rng)
    shifts = [rng.randint(-12, 12) for _ in range(3)]
    copy = Image.merge("RGB", [band.point(lambda v, s=s: v + s) for band, s in zip(copy.split(), shifts)])
    if rng.random() < 0.5:
        copy = downscale(copy, rng.uniform(0.4, 0.9)).resize(image.size, Image.Resampling.BILINEAR)
    else:
        copy = copy.filter(ImageFilter.UnsharpMask(radius=rng.uniform(0.8, 2.0), percent=rng.randint(40, 150)))
    return _moved(copy, box, rng)


def _moved(image: Image.Image, box: Box, rng: random.Random) -> Image.Image:
    """Scale about the face centre by 0.95-1.05 and shift by up to 3% of the face."""
    scale = rng.uniform(0.95, 1.05)
    centre_x, centre_y = box.x + box.w / 2, box.y + box.h / 2
    shift_x, shift_y = (rng.uniform(-0.03, 0.03) * side for side in (box.w, box.h))
    offset_x, offset_y = centre_x - centre_x / scale - shift_x, centre_y - centre_y / scale - shift_y
    inverse = (1 / scale, 0.0, offset_x, 0.0, 1 / scale, offset_y)
    return image.transform(image.size, Image.Transform.AFFINE, inverse, Image.Resampling.BILINEAR)


def blend_mask(size: tuple[int, int], box: Box, rng: random.Random) -> Image.Image:
    """A soft, irregular blob over the whole face (70%) or one of its parts, as an 8-bit mask."""
    if rng.random() < 0.7:
        centre_x, centre_y = box.w * 0.5, box.h * rng.uniform(0.5, 0.6)
        half_w, half_h = box.w * rng.uniform(0.35, 0.5), box.h * rng.uniform(0.45, 0.6)
    else:
        fx, fy, fw, fh = FACE_PARTS[rng.choice(sorted(FACE_PARTS))]
        centre_x, centre_y = box.w * fx, box.h * fy
        half_w, half_h = box.w * fw * rng.uniform(0.8, 1.25), box.h * fh * rng.uniform(0.8, 1.25)
    waves = [(k, rng.uniform(0.0, 0.08), rng.uniform(0.0, 2 * math.pi)) for k in (2, 3, 4)]
    points = []
    for step in range(64):
        angle = 2 * math.pi * step / 64
        radius = 1 + sum(amp * math.sin(k * angle + phase) for k, amp, phase in waves)
        points.append(
            (box.x + centre_x + half_w * radius * math.cos(angle), box.y + centre_y + half_h * radius * math.sin(angle))
        )
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    softness = rng.uniform(0.05, 0.3) * min(half_w, half_h)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, softness)))
    ratio = rng.choice(BLEND_RATIOS)
    return mask if ratio == 1.0 else mask.point(lambda v: round(v * ratio))


def self_blend(image: Image.Image, box: Box, rng: random.Random) -> Image.Image:
    """A pseudo-fake of a real RGB image: an altered copy of itself blended in over the face in `box`."""
    return Image.composite(altered_copy(image, box, rng), image, blend_mask(image.size, box, rng))
