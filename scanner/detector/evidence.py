"""Where a model saw evidence of a fake: Grad-CAM per view, weighted by the view's score, placed in the image.

Each view's map ([0, 1], from the layer the network names in `cam_layer`) times that view's calibrated score, put
back where the view came from, the highest where views overlap: the hottest point lies in the view that drove the
verdict, and a view that scored real stays cool. The review app and the HTML report draw it
(scanner/moderation/explain.py); training/probes/heatmap_evidence.py measures whether it points at the edit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from scanner.detector.faces import Box
from scanner.detector.networks import inference_forward
from scanner.detector.preprocess import Preprocess, to_tensor
from scanner.detector.views import (
    Region,
    View,
    calibrated,
    cut_views,
    score_flat_views,
    view_kinds,
    view_rows,
)


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


def view_scores(model: nn.Module, views: list[View], preprocess: Preprocess) -> list[tuple[str, float]]:
    """Each cut view's kind and calibrated score as the scan scores it (mirroring included), in the same order."""
    rows = view_rows(views, preprocess)
    device = next(model.parameters()).device
    forward = inference_forward(model, preprocess.decoding.size, device, preprocess.scoring.precision, jit=False)
    flat = score_flat_views(forward, rows, [len(rows)], preprocess, len(rows), device)
    kinds = view_kinds(len(flat), preprocess.search.image_views)
    offset = preprocess.scoring.offset
    return [(kind, calibrated(score, offset(kind))) for score, kind in zip(flat, kinds) if not math.isnan(score)]


def place_maps(maps: Sequence[np.ndarray], regions: Sequence[Region], size: tuple[int, int]) -> np.ndarray:
    """Each view's map resized into the region of the image it came from; the highest where views overlap."""
    canvas = np.zeros((size[1], size[0]), dtype=np.float32)
    for heat, (left, top, right, bottom) in zip(maps, regions):
        if right > left and bottom > top:
            placed = np.asarray(Image.fromarray(heat.astype(np.float32), "F").resize((right - left, bottom - top)))
            canvas[top:bottom, left:right] = np.maximum(canvas[top:bottom, left:right], placed)
    return canvas


def view_evidence(
    model: nn.Module, image: Image.Image, preprocess: Preprocess, boxes: list[Box]
) -> tuple[np.ndarray, list[Region], list[tuple[str, float]]]:  # fmt: skip
    """The image's evidence map (image-sized, [0, 1]), each view's region, and each view's kind and score."""
    views = cut_views(image, preprocess, boxes)
    scored = view_scores(model, views, preprocess)
    maps = [
        gradcam(model, to_tensor(view.image, preprocess.decoding)) * score for view, (_, score) in zip(views, scored)
    ]
    regions = [view.region for view in views]
    return place_maps(maps, regions, image.size), regions, scored
