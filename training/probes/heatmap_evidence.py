"""Do the heatmaps point at the evidence? On flagged fakes whose edit is the face (face swaps, face splices), the
share whose hottest point falls inside the face box, per explanation method.

    python -m training.probes.heatmap_evidence effnet-faces --data ../shared/data/lfw_faceswap --limit 120

Methods: Grad-CAM at the last block (what the review app showed) and at earlier blocks (finer), each on the
whole-image view alone and per view: every view's map, weighted by the view's calibrated score, placed back on the
image where that view came from. "chance" is the mean share of the image the face box covers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scanner.detector.checkpoint import load_model
from scanner.detector.evidence import gradcam, place_maps, view_scores
from scanner.detector.faces import Box, FaceFinder
from scanner.detector.preprocess import decode_image, to_tensor
from scanner.detector.views import cut_views, scored_part
from scanner.registry import resolve_model
from training.data import find_samples

Method = Callable[[nn.Module, torch.Tensor], np.ndarray]


def gradcam_at(block: int) -> Method:
    """Grad-CAM at the network's block number `block` (negative: from the end)."""

    def method(model: nn.Module, tensor: torch.Tensor) -> np.ndarray:
        original = model.cam_layer
        model.cam_layer = lambda: model._blocks[block]  # type: ignore[assignment,union-attr,index]
        try:
            return gradcam(model, tensor)
        finally:
            model.cam_layer = original  # type: ignore[method-assign]

    return method


def hottest(heat: np.ndarray) -> tuple[int, int]:
    """(x, y) of the map's maximum."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(x), int(y)


def inside(point: tuple[int, int], box: Box) -> bool:
    """Whether the point lies in the box."""
    return box.x <= point[0] < box.x + box.w and box.y <= point[1] < box.y + box.h


def main() -> None:
    """Print one row per method: flagged fakes whose hottest point is inside the face box."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=120)
    parser.add_argument("--blocks", type=int, nargs="+", default=[-1, -2, -3, -4])
    args = parser.parse_args()
    loaded = load_model(resolve_model(args.model), "cpu")
    config, model = loaded.preprocess, loaded.model
    finder = FaceFinder(config.search.faces)
    methods = {f"grad-cam block {block}": gradcam_at(block) for block in args.blocks}
    hits = {f"{name}, {scope}": 0 for name in methods for scope in ("whole view", "per view")}
    seconds = dict.fromkeys(methods, 0.0)
    used, chance = 0, 0.0
    for sample in find_samples(args.data):
        if sample.label != 1 or used >= args.limit:
            continue
        image = decode_image(sample.path.read_bytes(), config.decoding.decode_side).image
        part, boxes, _ = scored_part(image, config.search, finder)
        if not boxes:
            continue
        views = cut_views(part, config, boxes)
        scores = [score for _, score in view_scores(model, views, config)]
        if max(scores) < loaded.threshold:  # not flagged
            continue
        used += 1
        face = max(boxes, key=lambda b: b.w * b.h)
        chance += face.w * face.h / (part.width * part.height)
        regions = [view.region for view in views]
        for name, method in methods.items():
            started = time.perf_counter()
            maps = [method(model, to_tensor(view.image, config.decoding)) for view in views]
            seconds[name] += time.perf_counter() - started
            maps = [m * s for m, s in zip(maps, scores)]
            hits[f"{name}, whole view"] += inside(hottest(place_maps(maps[:1], regions[:1], part.size)), face)
            hits[f"{name}, per view"] += inside(hottest(place_maps(maps, regions, part.size)), face)
    print(f"{args.data.name}: {used} flagged fakes with a face; face box covers {chance / max(1, used):.1%} "
          f"of the image on average (chance)")  # fmt: skip
    print("| method | hottest point inside the face box | seconds an image |")
    print("| --- | ---: | ---: |")
    for key, count in hits.items():
        name = key.split(",")[0]
        print(f"| {key} | {count} / {used} ({count / max(1, used):.0%}) | {seconds[name] / max(1, used):.2f} |")


if __name__ == "__main__":
    main()
