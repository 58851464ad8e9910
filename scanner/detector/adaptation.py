"""Adapting a network's head to reviewed images: folds, fitting, evaluation and guardrails, on view features.

Only the head changes, so features computed once with the base network score every candidate head exactly as the
scanner would (`scanner/detector/features.py`); the check set a shipped model carries (`checkset.py`) is half
replayed while fitting and half kept to check that no source the base knows gets worse.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from PIL import Image
from torch import nn

from scanner.detector.checkpoint import LoadedModel
from scanner.detector.checkset import CheckSet
from scanner.detector.features import final_layer, score_features
from scanner.detector.preprocess import Preprocess
from scanner.detector.rates import lowest_threshold, roc_auc, share_at_or_above
from scanner.detector.views import view_kinds

AUC_TOLERANCE = 0.01  # held-out AUC the adapted model may lose to the base (noise of a few dozen decisions)
CHECKSET_AUC_LOSS = 0.02  # pooled check-set AUC the adapted model may lose: the base's strengths are kept
CHECKSET_CAUGHT_LOSS = 0.10  # share of the check set's fakes it may stop catching (a higher threshold)
POOLED = "check set, all sources"
MAX_FPR = 0.05  # the base's operating point: at most 5% of reals flagged
FOLDS = 5
THRESHOLD_RULE = "adapt:reviewed-and-check-set-fpr:0.05"
Tick = Callable[[int], None]


@dataclass
class Reviewed:
    """One reviewed image: its latest decision and, once read, its view features."""

    item_id: int
    decision_id: int
    label: int  # 1: fake
    sha256: str
    uri: str
    kind: str
    features: torch.Tensor | None = None
    count: int = 0
    thumb: int = 0  # a 64-bit difference hash of the image, to keep near-duplicates in one fold


def difference_hash(image: Image.Image) -> int:
    """A 64-bit difference hash: near-duplicates (re-encoded, resized copies) differ in a few bits."""
    grey = image.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    pixels = grey.tobytes()
    bits = [pixels[row * 9 + col] > pixels[row * 9 + col + 1] for row in range(8) for col in range(8)]
    return sum(1 << index for index, bit in enumerate(bits) if bit)


def near_duplicate_groups(images: Sequence[Reviewed], max_bits: int = 6) -> list[int]:
    """A group number per image: images whose hashes differ in at most `max_bits` bits share one."""
    parent = list(range(len(images)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for i, first in enumerate(images):
        for j in range(i):
            if bin(first.thumb ^ images[j].thumb).count("1") <= max_bits:
                parent[root(i)] = root(j)
    return [root(index) for index in range(len(images))]


def fold_count(labels: Sequence[int]) -> int:
    """FOLDS, or fewer when a class has fewer images (each fold holds one of each at least)."""
    return min(FOLDS, *(sum(1 for y in labels if y == c) for c in (0, 1)))


def assign_folds(images: Sequence[Reviewed], folds: int) -> list[int]:
    """A fold per image: whole near-duplicate groups, each class spread evenly over the folds."""
    groups = near_duplicate_groups(images)
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    largest = max(1, len(images) // (2 * folds))  # a group past a fold's share is a look (a template), not a copy
    for group in [group for group, indices in members.items() if len(indices) > largest]:
        members.update({-1 - index: [index] for index in members.pop(group)})
    generator = torch.Generator().manual_seed(0)
    order = [list(members.values())[i] for i in torch.randperm(len(members), generator=generator).tolist()]
    order.sort(key=lambda indices: max(images[i].label for i in indices))  # reals, then groups with a fake
    fold_of = [0] * len(images)
    for position, indices in enumerate(order):
        for index in indices:
            fold_of[index] = position % folds
    return fold_of


@dataclass(frozen=True)
class Examples:
    """Images as padded view features for fitting: (images, views, features), a mask of real views, the view
    offsets per row, labels and weights."""

    features: torch.Tensor
    present: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor


def as_examples(
    per_image: Sequence[torch.Tensor], labels: Sequence[int], preprocess: Preprocess, total_weight: float
) -> Examples:
    """Pad images' (views, features) into one tensor; each class gets half of `total_weight`."""
    most = max((len(f) for f in per_image), default=1)
    width = per_image[0].shape[1] if per_image else 1
    features = torch.zeros(len(per_image), most, width)
    present = torch.zeros(len(per_image), most, dtype=torch.bool)
    offsets = torch.zeros(len(per_image), most)
    for row, image in enumerate(per_image):
        usable = ~torch.isnan(image[:, 0])
        features[row, : len(image)] = torch.nan_to_num(image)
        present[row, : len(image)] = usable
        kinds = view_kinds(len(image), preprocess.search.image_views)
        offsets[row, : len(image)] = torch.tensor([preprocess.scoring.offset(kind) for kind in kinds])
    label_tensor = torch.tensor(list(labels), dtype=torch.float32)
    weights = torch.zeros(len(per_image))
    for value in (0.0, 1.0):
        chosen = label_tensor == value
        if chosen.any():
            weights[chosen] = total_weight / 2 / int(chosen.sum())
    return Examples(features, present, offsets, label_tensor, weights)


def joined(first: Examples, second: Examples) -> Examples:
    """Two sets of examples as one (padded to the longer view count)."""
    most = max(first.features.shape[1], second.features.shape[1])

    def pad(tensor: torch.Tensor, fill: float | bool = 0.0) -> torch.Tensor:
        extra = most - tensor.shape[1]
        if extra == 0:
            return tensor
        shape = (tensor.shape[0], extra, *tensor.shape[2:])
        return torch.cat([tensor, torch.full(shape, fill, dtype=tensor.dtype)], dim=1)

    return Examples(
        torch.cat([pad(first.features), pad(second.features)]), torch.cat([pad(first.present), pad(second.present)]),
        torch.cat([pad(first.offsets), pad(second.offsets)]), torch.cat([first.labels, second.labels]),
        torch.cat([first.weights, second.weights]),
    )  # fmt: skip


@dataclass(frozen=True)
class FitSettings:
    """How the head is fitted: steps of full-batch Adam, its rate, the pull toward the base head, the replayed
    check set's weight against the decisions'."""

    steps: int = 300
    lr: float = 0.01
    pull: float = 1.0
    replay_weight: float = 1.0


def fit_head(base: nn.Linear, examples: Examples, fit: FitSettings) -> nn.Linear:
    """A copy of `base` whose fake-minus-real direction is moved to fit the examples' image labels (each image's
    logit is its most suspicious calibrated view, as the scanner scores it), pulled toward the base's."""
    direction0 = (base.weight[1] - base.weight[0]).detach()
    bias0 = (base.bias[1] - base.bias[0]).detach()
    change = torch.zeros_like(direction0, requires_grad=True)
    bias_change = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([change, bias_change], lr=fit.lr)
    scale = float(examples.features[examples.present].norm(dim=-1).mean()) if examples.present.any() else 1.0
    for _ in range(fit.steps):
        optimizer.zero_grad()
        logits = examples.features @ (direction0 + change) + bias0 + bias_change - examples.offsets
        image_logits = logits.masked_fill(~examples.present, -1e4).max(dim=1).values
        loss = nn.functional.binary_cross_entropy_with_logits(image_logits, examples.labels, weight=examples.weights)
        loss = loss + fit.pull * (change.norm() * scale) ** 2 / max(1, len(examples.labels))
        loss.backward()
        optimizer.step()
    head = copy.deepcopy(base)
    with torch.no_grad():
        head.weight[1] += change.detach() / 2
        head.weight[0] -= change.detach() / 2
        head.bias[1] += bias_change.detach() / 2
        head.bias[0] -= bias_change.detach() / 2
    return head


def image_scores(head: nn.Linear, per_image: Sequence[torch.Tensor], preprocess: Preprocess) -> list[float]:
    """Each image's score with `head`, exactly as the scanner scores it."""
    if not per_image:
        return []
    stored = torch.cat(list(per_image))
    return [s.score for s in score_features(head, stored, [len(f) for f in per_image], preprocess)]


def checkset_images(checkset: CheckSet) -> list[torch.Tensor]:
    """The check set's images as (views, features, 2), the stored mirror-averaged features in both slots."""
    ends = torch.cumsum(checkset.counts, 0).tolist()
    starts = [end - int(count) for end, count in zip(ends, checkset.counts)]
    return [checkset.features[s:e].unsqueeze(-1).expand(-1, -1, 2) for s, e in zip(starts, ends)]


def plain_scoring(preprocess: Preprocess) -> Preprocess:
    """The scoring of stored mirror-averaged features: no second mirroring."""
    return preprocess.changed(mirror=(), mirror_band=())


def mean_views(per_image: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """(views, features): each view's plain and mirrored features averaged, as fitting sees a view."""
    return [image.mean(dim=-1) for image in per_image]


@dataclass
class Evaluation:
    """Held-out figures for the base and the adapted model, and the check set's per source."""

    rows: list[dict[str, Any]]
    threshold: float
    failures: list[str]


def reviewed_row(name: str, labels: list[int], scores: list[float], threshold: float) -> dict[str, Any]:
    """AUC, fakes caught and reals flagged of one model on the held-out decisions."""
    fakes = [s for s, y in zip(scores, labels) if y == 1]
    reals = [s for s, y in zip(scores, labels) if y == 0]
    return {
        "model": name, "set": "held-out decisions", "auc": roc_auc(labels, scores),
        "caught": share_at_or_above(fakes, threshold), "flagged": share_at_or_above(reals, threshold),
        "fakes": len(fakes), "reals": len(reals), "threshold": threshold,
    }  # fmt: skip


def checkset_rows(name: str, checkset: CheckSet, scores: list[float], threshold: float) -> list[dict[str, Any]]:
    """Every check-set source pooled, then each: AUC, reals flagged and fakes caught."""
    labels = [int(y) for y in checkset.label]
    rows = [{**reviewed_row(name, labels, scores, threshold), "set": POOLED}]
    for index, source in enumerate(checkset.sources):
        picked = [(s, int(y)) for s, y, k in zip(scores, checkset.label, checkset.source) if int(k) == index]
        fakes = [s for s, y in picked if y == 1]
        reals = [s for s, y in picked if y == 0]
        rows.append({
            "model": name, "set": source, "auc": roc_auc([y for _, y in picked], [s for s, _ in picked]),
            "caught": share_at_or_above(fakes, threshold), "flagged": share_at_or_above(reals, threshold),
            "fakes": len(fakes), "reals": len(reals), "threshold": threshold,
        })  # fmt: skip
    return rows


@dataclass
class Adapted:
    """The fitted head, its threshold and the evaluation behind them."""

    head: nn.Linear
    evaluation: Evaluation


def adapt_head(
    loaded: LoadedModel, images: list[Reviewed], checkset: CheckSet, fit: FitSettings, tick: Tick | None = None
) -> Adapted:
    """Fit on each k-1 folds and score the held-out fold; then fit on all decisions, choose the threshold and run
    the guardrails."""
    preprocess, base = loaded.preprocess, final_layer(loaded.model)
    per_image = [image.features for image in images if image.features is not None]
    labels = [image.label for image in images]
    replay, kept = checkset.part(replay=True), checkset.part(replay=False)
    replay_examples = as_examples(mean_views(checkset_images(replay)), replay.label.tolist(), preprocess,
                                  fit.replay_weight * len(images))  # fmt: skip
    folds = assign_folds(images, fold_count(labels))
    held_out = [math.nan] * len(images)
    for fold in sorted(set(folds)):
        train_rows = [i for i, f in enumerate(folds) if f != fold]
        test_rows = [i for i, f in enumerate(folds) if f == fold]
        train = as_examples(mean_views([per_image[i] for i in train_rows]), [labels[i] for i in train_rows],
                            preprocess, len(train_rows))  # fmt: skip
        head = fit_head(base, joined(train, replay_examples), fit)
        for row, score in zip(test_rows, image_scores(head, [per_image[i] for i in test_rows], preprocess)):
            held_out[row] = score
        if tick:
            tick(1)
    everything = as_examples(mean_views(per_image), labels, preprocess, len(images))
    head = fit_head(base, joined(everything, replay_examples), fit)
    if tick:
        tick(1)
    return Adapted(head, evaluate(loaded, base, head, labels, per_image, held_out, replay, kept))


def evaluate(
    loaded: LoadedModel, base: nn.Linear, head: nn.Linear, labels: list[int], per_image: list[torch.Tensor],
    held_out: list[float], replay: CheckSet, kept: CheckSet,
) -> Evaluation:  # fmt: skip
    """The threshold (`operating_threshold`) and the base-against-adapted table, with the guardrails that failed.
    The base is shown at its own threshold and at the threshold the same rule gives its scores, the operating point
    the adapted model is compared at."""
    stored = plain_scoring(loaded.preprocess)
    replay_images, kept_images = checkset_images(replay), checkset_images(kept)
    new_replay = image_scores(head, replay_images, stored)
    old_replay = image_scores(base, replay_images, stored)
    base_scores = image_scores(base, per_image, loaded.preprocess)
    rule = partial(operating_threshold, replay=replay, base_replay=old_replay, base_threshold=loaded.threshold)
    threshold = rule([s for s, y in zip(held_out, labels) if y == 0], new_replay)
    matched = rule([s for s, y in zip(base_scores, labels) if y == 0], old_replay)
    rows = [reviewed_row("base", labels, base_scores, loaded.threshold),
            reviewed_row("base@5%", labels, base_scores, matched),
            reviewed_row("adapted", labels, held_out, threshold)]  # fmt: skip
    rows += checkset_rows("base", kept, image_scores(base, kept_images, stored), loaded.threshold)
    rows += checkset_rows("adapted", kept, image_scores(head, kept_images, stored), threshold)
    return Evaluation(rows, threshold, guardrail_failures(rows))


def operating_threshold(
    reviewed_reals: list[float], replay_scores: list[float], replay: CheckSet, base_replay: list[float],
    base_threshold: float,
) -> float:  # fmt: skip
    """The lowest threshold that flags at most 5% of the reviewed reals and, of each replayed source's reals, at most
    5% or as many as the base flags at its own threshold in that sample."""
    candidates = [lowest_threshold(reviewed_reals, MAX_FPR)]
    for index in range(len(replay.sources)):
        reals = [i for i, (y, k) in enumerate(zip(replay.label, replay.source)) if int(k) == index and int(y) == 0]
        allowed = max(MAX_FPR, share_at_or_above([base_replay[i] for i in reals], base_threshold) if reals else 0.0)
        candidates.append(lowest_threshold([replay_scores[i] for i in reals], allowed))
    return max(candidates)


def guardrail_failures(rows: list[dict[str, Any]]) -> list[str]:
    """What keeps the adapted model from being registered, with by how much."""
    failures = []
    base, matched, adapted = rows[0], rows[1], rows[2]
    if adapted["auc"] < base["auc"] - AUC_TOLERANCE:
        failures.append(f"it ranks the held-out decisions worse than the base (AUC {adapted['auc']:.3f} against "
                        f"{base['auc']:.3f})")  # fmt: skip
    if adapted["caught"] < matched["caught"]:
        failures.append(f"it catches fewer held-out fakes than the base at the same operating point (at most 5% of "
                        f"reviewed reals and of each check-set source flagged): {adapted['caught']:.1%} against "
                        f"{matched['caught']:.1%}")  # fmt: skip
    if adapted["fakes"] and not adapted["caught"]:
        failures.append("it catches none of the held-out fakes")
    pooled = {row["model"]: row for row in rows[3:] if row["set"] == POOLED}
    old, new = pooled["base"], pooled["adapted"]
    if new["auc"] < old["auc"] - CHECKSET_AUC_LOSS:
        failures.append(f"it ranks the check set's images (the sources the base knows) worse than the base (AUC "
                        f"{new['auc']:.3f} against {old['auc']:.3f})")  # fmt: skip
    if new["caught"] < old["caught"] - CHECKSET_CAUGHT_LOSS:
        failures.append(f"it catches {new['caught']:.1%} of the check set's fakes, the base {old['caught']:.1%} (at "
                        f"most {CHECKSET_CAUGHT_LOSS:.0%} fewer)")  # fmt: skip
    before = {row["set"]: row["flagged"] for row in rows[3:] if row["model"] == "base"}
    for row in rows[3:]:
        allowed = max(MAX_FPR, before.get(row["set"], 0.0))  # a small sample the base itself flags more of
        if row["model"] == "adapted" and row["reals"] and row["flagged"] > allowed:
            failures.append(f"it flags {row['flagged']:.1%} of {row['set']}'s check-set reals (at most "
                            f"{allowed:.0%})")  # fmt: skip
    return failures
