"""What training draws from an image: one view at a time, a face (its framing jittered) or the whole image."""

from __future__ import annotations

import random

import torch
from PIL import Image

from scanner.detector.faces import Box, face_region
from scanner.detector.preprocess import Augment, Preprocess, to_tensor
from scanner.detector.views import has_patch, patch_view, whole_view


def training_view(
    image: Image.Image, boxes: list[Box], config: Preprocess, augment: Augment | None, rng: random.Random
) -> torch.Tensor:
    """One randomly chosen view for training: a face (framing jittered a little) half the time, if any; else the
    whole image, or (faces+patch) the native patch half of those times."""
    if boxes and rng.random() < 0.5:
        return _face_training_view(image, rng.choice(boxes), config, augment, rng)
    if augment is not None:
        image = augment(image)
    if has_patch(image, config.search) and rng.random() < 0.5:
        return to_tensor(patch_view(image, config.decoding), config.decoding)
    return to_tensor(whole_view(image, config), config.decoding)


def blended_training_view(
    image: Image.Image, box: Box, config: Preprocess, augment: Augment | None, rng: random.Random
) -> torch.Tensor:
    """A self-blended image's training view: the blended face, or (faces+patch) the native patch 30% of the time;
    never the scaled whole image, where a small face's blend would not show."""
    if has_patch(image, config.search) and rng.random() < 0.3:
        patch = patch_view(augment(image) if augment is not None else image, config.decoding)
        return to_tensor(patch, config.decoding)
    return _face_training_view(image, box, config, augment, rng)


def _face_training_view(
    image: Image.Image, box: Box, config: Preprocess, augment: Augment | None, rng: random.Random
) -> torch.Tensor:
    shift = round(0.08 * max(box.w, box.h))
    moved = Box(box.x + rng.randint(-shift, shift), box.y + rng.randint(-shift, shift), box.w, box.h)
    region = face_region(moved, image.width, image.height, config.search.faces.widen * rng.uniform(0.85, 1.15))
    crop = image.crop(region)
    if augment is not None:
        crop = augment(crop)
    side = config.decoding.size
    return to_tensor(crop.resize((side, side), Image.Resampling.BILINEAR), config.decoding)
