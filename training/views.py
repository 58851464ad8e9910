"""What the model looks at: the whole image and, for face-aware models, each face at one canonical framing.

Training, evaluation and the scanner all build views here, so the same image gets the same score
on every path. The image's score is the highest of its views' scores.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from PIL import Image

from training.faces import Box, FaceFinder, face_region
from training.preprocess import Augment, Preprocess, resize_center_crop, to_tensor


@dataclass
class ImageViews:
    """Model inputs for one image: row 0 the whole image, then one row per face in `boxes`."""

    tensors: torch.Tensor
    boxes: list[Box] = field(default_factory=list)


@dataclass
class ViewScores:
    """Scores of one image's views, combined into the image's score; `boxes` pairs with `faces`."""

    whole: float
    faces: list[float]
    boxes: list[Box] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The image's score: its most suspicious view."""
        return max([self.whole, *self.faces])


def whole_view(image: Image.Image, config: Preprocess) -> Image.Image:
    """The whole-image view: the classic centre crop for old checkpoints, the image scaled down for new ones."""
    max_side = config.max_side if not config.uses_faces else 0
    return resize_center_crop(image, config.size, max_side, config.resample)


def patch_view(image: Image.Image, config: Preprocess) -> Image.Image:
    """A centre patch at native pixels (the image's shorter side kept up to max_side): no downscaling blur."""
    return resize_center_crop(image, config.size, config.max_side, config.resample)


def face_view(image: Image.Image, box: Box, config: Preprocess, widen: float | None = None) -> Image.Image:
    """One face at the canonical framing: a widened square around the box, scaled to the input size."""
    region = face_region(box, image.width, image.height, widen or config.faces.widen)
    crop = image.crop(region)
    return crop.resize((config.size, config.size), Image.Resampling.BILINEAR, reducing_gap=2.0)


def find_faces(image: Image.Image, config: Preprocess, finder: FaceFinder | None) -> list[Box]:
    """Face boxes for a face-aware model; none for whole-image models."""
    return finder.find(image) if config.uses_faces and finder is not None else []


def view_images(image: Image.Image, config: Preprocess, boxes: list[Box]) -> list[Image.Image]:
    """The views as images (the whole image first, then any native patch, then faces), for scoring and heatmaps."""
    patch = [patch_view(image, config)] if config.image_views == 2 else []
    return [whole_view(image, config), *patch, *(face_view(image, box, config) for box in boxes)]


def make_views(image: Image.Image, config: Preprocess, finder: FaceFinder | None) -> ImageViews:
    """Decoded RGB image -> the stacked model inputs and the face boxes they came from."""
    return views_from_boxes(image, config, find_faces(image, config, finder))


def views_from_boxes(image: Image.Image, config: Preprocess, boxes: list[Box]) -> ImageViews:
    """The stacked model inputs of an image whose face boxes are already known."""
    tensors = torch.stack([to_tensor(view, config) for view in view_images(image, config, boxes)])
    return ImageViews(tensors, boxes)


def split_scores(flat_scores: list[float], counts: list[int], image_views: int = 1) -> list[ViewScores]:
    """Regroup a flat list of view scores into one ViewScores per image (`whole`: the highest whole-image view)."""
    result, start = [], 0
    for count in counts:
        chunk = flat_scores[start : start + count]
        result.append(ViewScores(whole=max(chunk[:image_views]), faces=chunk[image_views:]))
        start += count
    return result


def training_view(
    image: Image.Image, boxes: list[Box], config: Preprocess, augment: Augment | None, rng: random.Random
) -> torch.Tensor:
    """One randomly chosen view for training: a face (framing jittered a little) half the time, if any; else the
    whole image, or (faces+patch) the native patch half of those times."""
    if boxes and rng.random() < 0.5:
        box = rng.choice(boxes)
        shift = round(0.08 * max(box.w, box.h))
        moved = Box(box.x + rng.randint(-shift, shift), box.y + rng.randint(-shift, shift), box.w, box.h)
        region = face_region(moved, image.width, image.height, config.faces.widen * rng.uniform(0.85, 1.15))
        crop = image.crop(region)
        if augment is not None:
            crop = augment(crop)
        return to_tensor(crop.resize((config.size, config.size), Image.Resampling.BILINEAR), config)
    if augment is not None:
        image = augment(image)
    if config.image_views == 2 and rng.random() < 0.5:
        return to_tensor(patch_view(image, config), config)
    return to_tensor(whole_view(image, config), config)
