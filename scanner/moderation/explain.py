"""Explanations: Grad-CAM heatmaps of what drove a fake score, each view's placed where it came from, on one scale."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from scanner.detector.faces import Box, FaceFinder
from scanner.detector.networks import inference_forward
from scanner.detector.preprocess import VIEW_KINDS, Preprocess, to_tensor
from scanner.detector.views import (
    calibrated,
    has_patch,
    score_flat_views,
    scored_part,
    view_images,
    view_kinds,
    view_regions,
    views_from_boxes,
)

Region = tuple[int, int, int, int]


def gradcam(model: nn.Module, tensor: torch.Tensor) -> np.ndarray:
    """A [0, 1] heatmap (input size) of the regions that raise the fake-class logit."""
    layer: nn.Module = model.cam_layer()  # type: ignore[operator]
    captured: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda _m, _i, output: captured.__setitem__("a", output))
    try:
        with torch.enable_grad():
            batch = tensor.unsqueeze(0).to(next(model.parameters()).device)
            logit = model(batch)[0, 1]
            (grads,) = torch.autograd.grad(logit, captured["a"])
    finally:
        hook.remove()
    activations = captured["a"].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=tensor.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak).cpu().numpy() if peak > 0 else np.zeros(tuple(tensor.shape[-2:]), dtype=np.float32)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """Map [0, 1] to a transparent-blue -> yellow -> red palette (RGB uint8)."""
    red = np.clip(heatmap * 2, 0, 1)
    green = np.clip(2 - heatmap * 2, 0, 1) * np.clip(heatmap * 2, 0, 1)
    blue = np.clip(1 - heatmap * 3, 0, 1) * 0.4
    return (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def view_scores(model: nn.Module, image: Image.Image, preprocess: Preprocess, boxes: list[Box]) -> list[float]:
    """Each view's calibrated score as the scan scores it (mirroring included), in `view_images`' order."""
    views = views_from_boxes(image, preprocess, boxes)
    device = next(model.parameters()).device
    forward = inference_forward(model, preprocess.decoding.size, device, preprocess.scoring.precision, jit=False)
    flat = score_flat_views(forward, views.tensors, [len(views.tensors)], preprocess, len(views.tensors), device)
    offsets = preprocess.scoring.view_offsets or (0.0,) * len(VIEW_KINDS)
    kinds = view_kinds(len(flat), preprocess.search.image_views)
    return [calibrated(score, offsets[kind]) for score, kind in zip(flat, kinds) if not math.isnan(score)]


def place_maps(maps: Sequence[np.ndarray], regions: Sequence[Region], size: tuple[int, int]) -> np.ndarray:
    """Each view's map resized into the region of the image it came from; the highest where views overlap."""
    canvas = np.zeros((size[1], size[0]), dtype=np.float32)
    for heat, (left, top, right, bottom) in zip(maps, regions):
        if right > left and bottom > top:
            placed = np.asarray(Image.fromarray(heat.astype(np.float32), "F").resize((right - left, bottom - top)))
            canvas[top:bottom, left:right] = np.maximum(canvas[top:bottom, left:right], placed)
    return canvas


def blend(image: Image.Image, heat: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """The image with `heat` ([0, 1], one colour scale) painted over it, stronger where hotter."""
    colours = Image.fromarray(colorize(heat), "RGB")
    mask = Image.fromarray((np.clip(heat, 0, 1) * 255 * alpha).astype(np.uint8), "L")
    return Image.composite(colours, image.convert("RGB"), mask)


def label_views(image: Image.Image, names: Sequence[str], regions: Sequence[Region], scores: Sequence[float]) -> None:
    """Outline each view but the whole image and label every view with its name and score, in words."""
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(11, round(max(image.size) / 40)))
    for name, (left, top, right, bottom), score in zip(names, regions, scores):
        whole = name == "whole image"
        if not whole:
            pen.rectangle([left, top, right - 1, bottom - 1], outline=(255, 255, 255), width=2)
        text = f"{name} · {score:.2f}"
        x0, y0, x1, y1 = pen.textbbox((0, 0), text, font=font)
        height = y1 - y0 + 4
        y = bottom - height if whole else top if top < height else top - height  # the whole image's at its foot
        pen.rectangle([left, y, left + x1 - x0 + 6, y + height], fill=(20, 20, 20))
        pen.text((left + 3, y + 2 - y0), text, fill=(255, 255, 255), font=font)


def view_names(count: int, has_patch_view: bool) -> list[str]:
    """Words for each view, in `view_images`' order."""
    patch = ["native patch"] if has_patch_view else []
    return ["whole image", *patch, *(f"face {n}" for n in range(1, count - len(patch)))]


def explain_image(
    model: nn.Module, image: Image.Image, preprocess: Preprocess, boxes: Sequence[Box] = (),
    finder: FaceFinder | None = None,
) -> Image.Image:  # fmt: skip
    """The part of the image the model scored with one heatmap over it: each view's Grad-CAM (a [0, 1] map) times
    that view's calibrated score, placed where the view came from, so the hottest point lies in the view that drove
    the verdict and a view that scored real stays cool; each view is labelled with its score. `finder` (one is made
    if None) finds the faces again for models that turn faces, since they may have been found turned."""
    if preprocess.search.turns and boxes:  # the faces may have been found turned: find them again, as the scan did
        part, part_boxes, _ = scored_part(image, preprocess.search, finder or FaceFinder(preprocess.search.faces))
    else:  # the photo inside a page, for models that trim pages
        part, _, placement = scored_part(image, preprocess.search)
        left, top = placement.region[:2] if placement.region else (0, 0)
        part_boxes = [Box(box.x - left, box.y - top, box.w, box.h) for box in boxes]
    views = view_images(part, preprocess, part_boxes)
    regions = view_regions(part, preprocess, part_boxes)
    scores = view_scores(model, part, preprocess, part_boxes)
    maps = [gradcam(model, to_tensor(view, preprocess.decoding)) * score for view, score in zip(views, scores)]
    shown = blend(part, place_maps(maps, regions, part.size))
    label_views(shown, view_names(len(views), has_patch(part, preprocess.search)), regions, scores)
    return shown


def legend_stops(steps: int = 5) -> list[str]:
    """The palette at `steps` evenly spaced heat values, as CSS colours (for the legend beside a heatmap)."""
    colours = colorize(np.linspace(0.0, 1.0, steps))
    return [f"rgb({r}, {g}, {b})" for r, g, b in colours.tolist()]


def explainer(loaded: Any) -> Any:
    """A callable (image, face boxes in that image's pixels) -> the labelled heatmap, bound to a loaded model."""
    finder = FaceFinder(loaded.preprocess.search.faces)  # its cascade is loaded once per thread, not once per image
    return lambda image, boxes=(): explain_image(loaded.model, image, loaded.preprocess, boxes, finder)
