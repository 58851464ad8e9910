"""Explanations: Grad-CAM heatmaps of what drove a fake score, overlaid on the region the model saw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from scanner.detector.faces import Box, FaceFinder
from scanner.detector.preprocess import Preprocess, to_tensor
from scanner.detector.views import scored_part, view_images


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


def overlay(model: nn.Module, view: Image.Image, preprocess: Preprocess, alpha: float = 0.45) -> Image.Image:
    """One model view with its Grad-CAM heatmap blended on top."""
    heatmap = gradcam(model, to_tensor(view, preprocess.decoding))
    colours = Image.fromarray(colorize(heatmap), "RGB")
    mask = Image.fromarray((np.clip(heatmap, 0, 1) * 255 * alpha).astype(np.uint8), "L")
    return Image.composite(colours, view, mask)


def explain_image(
    model: nn.Module, image: Image.Image, preprocess: Preprocess, boxes: Sequence[Box] = (),
    finder: FaceFinder | None = None,
) -> Image.Image:  # fmt: skip
    """Heatmaps of every view the model scored (the whole image, then each face), side by side; `finder` (one is
    made if None) finds the faces again for models that turn faces, since they may have been found turned."""
    if preprocess.search.turns and boxes:  # the faces may have been found turned: find them again, as the scan did
        part, part_boxes, _ = scored_part(image, preprocess.search, finder or FaceFinder(preprocess.search.faces))
    else:  # the photo inside a page, for models that trim pages
        part, _, placement = scored_part(image, preprocess.search)
        left, top = placement.region[:2] if placement.region else (0, 0)
        part_boxes = [Box(box.x - left, box.y - top, box.w, box.h) for box in boxes]
    panels = [overlay(model, view, preprocess) for view in view_images(part, preprocess, part_boxes)]
    strip = Image.new("RGB", (sum(p.width for p in panels) + 4 * (len(panels) - 1), panels[0].height), "white")
    left = 0
    for panel in panels:
        strip.paste(panel, (left, 0))
        left += panel.width + 4
    return strip


def explainer(loaded: Any) -> Any:
    """A callable (image, face boxes in that image's pixels) -> heatmap strip, bound to a loaded model."""
    finder = FaceFinder(loaded.preprocess.search.faces)  # its cascade is loaded once per thread, not once per image
    return lambda image, boxes=(): explain_image(loaded.model, image, loaded.preprocess, boxes, finder)
