"""A network's last features, and scoring them with a head exactly as the scanner scores views.

A view's features are stored with its mirror image's features in the last dimension (`[..., 0]` plain,
`[..., 1]` mirrored), so the scanner's own `score_flat_views` mirrors a stored view with the same `flip(-1)` it
applies to pixels, and a new head scores stored views the way `scanner submit` scores the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn

from scanner.detector.faces import FaceFinder
from scanner.detector.networks import Forward
from scanner.detector.preprocess import Preprocess
from scanner.detector.views import ViewScores, make_views, mirror_mask, score_flat_views, split_scores


def final_layer(model: nn.Module) -> nn.Linear:
    """The network's last linear layer (its head), whose input are the features."""
    layer = getattr(model, "head", None) or getattr(model, "classifier", None)
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no linear head to read features before")
    return layer


@torch.inference_mode()
def features_of(model: nn.Module, views: torch.Tensor, step: int = 24) -> torch.Tensor:
    """The head's input for each view (eval mode), in network calls of `step` views."""
    captured: list[torch.Tensor] = []
    hook = final_layer(model).register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0].detach()))
    try:
        model.eval()
        for start in range(0, len(views), step):
            model(views[start : start + step])
    finally:
        hook.remove()
    return torch.cat(captured).float() if captured else torch.zeros(0)


def view_features(model: nn.Module, views: torch.Tensor, counts: Sequence[int], preprocess: Preprocess) -> torch.Tensor:
    """(views, features, 2): each view's features with, for the kinds the model mirrors, its mirror image's;
    the placeholder row of an absent view (all NaN) stays NaN, unrun, as the scanner leaves it."""
    device = next(model.parameters()).device
    width = final_layer(model).in_features
    present = ~torch.isnan(views.flatten(1)[:, 0])
    plain = torch.full((len(views), width), float("nan"))
    plain[present] = features_of(model, views[present].to(device)).cpu()
    mirrored = plain.clone()
    mask = mirror_mask(counts, preprocess)
    if mask is not None and bool((mask & present).any()):
        rows = mask & present
        mirrored[rows] = features_of(model, views[rows].flip(-1).to(device)).cpu()
    return torch.stack([plain, mirrored], dim=-1)


def image_features(
    model: nn.Module, image: Image.Image, preprocess: Preprocess, finder: FaceFinder | None
) -> torch.Tensor:  # fmt: skip
    """A decoded image's views, built as the scanner builds them, as (views, features, 2) (see view_features)."""
    views = make_views(image, preprocess, finder).tensors
    return view_features(model, views, [len(views)], preprocess)


def head_forward(head: nn.Linear) -> Forward:
    """A forward over stored view features (plain in `[..., 0]`) through `head`."""
    return lambda stored: head(stored[..., 0])


@torch.inference_mode()
def score_features(
    head: nn.Linear, stored: torch.Tensor, counts: Sequence[int], preprocess: Preprocess
) -> list[ViewScores]:
    """Each image's ViewScores from its stored view features, as the scanner would score its pixels with `head`."""
    flat = score_flat_views(head_forward(head), stored, counts, preprocess, 4096, torch.device("cpu"))
    return split_scores(flat, list(counts), preprocess.search.image_views, preprocess.scoring.view_offsets)
