"""Explanations drawn for people: the detector's evidence map (scanner/detector/evidence.py) over the image, on one
colour scale with its legend, each view outlined and labelled with its score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from scanner.detector.evidence import view_evidence
from scanner.detector.faces import Box, FaceFinder
from scanner.detector.preprocess import VIEW_WORDS, Preprocess
from scanner.detector.views import Region, scored_part


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """Map [0, 1] to a transparent-blue -> yellow -> red palette (RGB uint8)."""
    red = np.clip(heatmap * 2, 0, 1)
    green = np.clip(2 - heatmap * 2, 0, 1) * np.clip(heatmap * 2, 0, 1)
    blue = np.clip(1 - heatmap * 3, 0, 1) * 0.4
    return (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def blend(image: Image.Image, heat: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """The image with `heat` ([0, 1], one colour scale) painted over it, stronger where hotter."""
    colours = Image.fromarray(colorize(heat), "RGB")
    mask = Image.fromarray((np.clip(heat, 0, 1) * 255 * alpha).astype(np.uint8), "L")
    return Image.composite(colours, image.convert("RGB"), mask)


def label_views(image: Image.Image, regions: Sequence[Region], scored: Sequence[tuple[str, float]]) -> None:
    """Outline each view but the whole image and label every view with its name and score, in words."""
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(11, round(max(image.size) / 40)))
    faces = 0
    for (left, top, right, bottom), (kind, score) in zip(regions, scored):
        faces += kind == "face"
        if kind != "whole":
            pen.rectangle([left, top, right - 1, bottom - 1], outline=(255, 255, 255), width=2)
        text = f"{VIEW_WORDS[kind]}{f' {faces}' if kind == 'face' else ''} · {score:.2f}"
        x0, y0, x1, y1 = pen.textbbox((0, 0), text, font=font)
        height = y1 - y0 + 4
        y = bottom - height if kind == "whole" else top if top < height else top - height  # the whole's at its foot
        pen.rectangle([left, y, left + x1 - x0 + 6, y + height], fill=(20, 20, 20))
        pen.text((left + 3, y + 2 - y0), text, fill=(255, 255, 255), font=font)


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
    heat, regions, scored = view_evidence(model, part, preprocess, part_boxes)
    shown = blend(part, heat)
    label_views(shown, regions, scored)
    return shown


def legend_stops(steps: int = 5) -> list[str]:
    """The palette at `steps` evenly spaced heat values, as CSS colours (for the legend beside a heatmap)."""
    colours = colorize(np.linspace(0.0, 1.0, steps))
    return [f"rgb({r}, {g}, {b})" for r, g, b in colours.tolist()]


def explainer(loaded: Any) -> Any:
    """A callable (image, face boxes in that image's pixels) -> the labelled heatmap, bound to a loaded model."""
    finder = FaceFinder(loaded.preprocess.search.faces)  # its cascade is loaded once per thread, not once per image
    return lambda image, boxes=(): explain_image(loaded.model, image, loaded.preprocess, boxes, finder)
