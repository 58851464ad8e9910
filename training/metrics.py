"""Detector metrics: ROC AUC, threshold choice, confusion counts, per-stratum accuracy."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from scanner.detector.preprocess import VIEW_KINDS
from scanner.detector.rates import roc_auc
from scanner.detector.views import logit, view_kinds


def roc_curve(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates as the threshold sweeps from high to low."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    n_pos, n_neg = max(1, int((y == 1).sum())), max(1, int((y == 0).sum()))
    fpr = np.array([((s >= t) & (y == 0)).sum() / n_neg for t in thresholds])
    tpr = np.array([((s >= t) & (y == 1)).sum() / n_pos for t in thresholds])
    return fpr, tpr


def choose_threshold(
    labels: Sequence[int], scores: Sequence[float], rule: str, sources: Sequence[str] | None = None
) -> float:
    """Pick the decision threshold on validation data.

    `fpr:X`: the lowest threshold whose false-positive rate on reals is at most X
    (most fakes caught within the false-alarm budget). `source-fpr:X`: the lowest threshold whose
    false-positive rate is at most X on the reals of every source separately. `youden`: maximise TPR - FPR.
    """
    if rule.startswith("source-fpr:"):
        return _per_source_threshold(labels, scores, float(rule.split(":", 1)[1]), sources)
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    candidates = np.unique(np.concatenate([s, [np.nextafter(s.max(initial=0.0), np.inf)]]))  # last: flags none
    n_pos, n_neg = max(1, int((y == 1).sum())), max(1, int((y == 0).sum()))
    fpr = np.array([((s >= t) & (y == 0)).sum() / n_neg for t in candidates])
    tpr = np.array([((s >= t) & (y == 1)).sum() / n_pos for t in candidates])
    if rule == "youden":
        return float(candidates[int(np.argmax(tpr - fpr))])
    if rule.startswith("fpr:"):
        allowed = np.flatnonzero(fpr <= float(rule.split(":", 1)[1]))
        return float(candidates[allowed.min()])
    raise ValueError(f"unknown threshold rule {rule!r}: use 'youden' or 'fpr:0.05'")


def _per_source_threshold(
    labels: Sequence[int], scores: Sequence[float], budget: float, sources: Sequence[str] | None
) -> float:
    if sources is None:
        raise ValueError("the source-fpr rule needs each sample's source")
    thresholds = [0.0]
    for source in sorted(set(sources)):
        reals = [s for s, y, src in zip(scores, labels, sources) if src == source and y == 0]
        if reals:
            thresholds.append(choose_threshold([0] * len(reals), reals, f"fpr:{budget}"))
    return max(thresholds)


def confusion(labels: Sequence[int], scores: Sequence[float], threshold: float) -> dict[str, int]:
    """Counts of true/false positives/negatives, fake being the positive class."""
    y = np.asarray(labels)
    predicted = np.asarray(scores) >= threshold
    return {
        "tp": int((predicted & (y == 1)).sum()),
        "fp": int((predicted & (y == 0)).sum()),
        "tn": int((~predicted & (y == 0)).sum()),
        "fn": int((~predicted & (y == 1)).sum()),
    }


def summarize(
    labels: Sequence[int],
    scores: Sequence[float],
    threshold: float,
    strata: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The metrics reported by `scanner evaluate` and stored in checkpoints."""
    counts = confusion(labels, scores, threshold)
    n = len(labels)
    positives, negatives = counts["tp"] + counts["fn"], counts["tn"] + counts["fp"]
    tpr = counts["tp"] / positives if positives else float("nan")  # a one-class folder has no rate for the other
    tnr = counts["tn"] / negatives if negatives else float("nan")
    result: dict[str, Any] = {
        "n": n,
        "accuracy": (counts["tp"] + counts["tn"]) / max(1, n),
        "balanced_accuracy": float(np.nanmean([tpr, tnr])) if positives or negatives else 0.0,
        "roc_auc": roc_auc(labels, scores),
        "threshold": threshold,
        "false_positive_rate": 1 - tnr,
        "true_positive_rate": tpr,
        "accuracy_at_0_5": float(np.mean((np.asarray(scores) >= 0.5) == (np.asarray(labels) == 1))) if n else 0.0,
        "confusion": counts,
    }
    if strata is not None:
        result["per_stratum"] = per_stratum_accuracy(labels, scores, threshold, strata)
    return result


def per_stratum_accuracy(
    labels: Sequence[int], scores: Sequence[float], threshold: float, strata: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Accuracy and count for each stratum (e.g. ciplab's fake_easy, fake_mid, fake_hard)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for label, score, stratum in zip(labels, scores, strata):
        hits[stratum].append((score >= threshold) == (label == 1))
    return {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(hits.items())}


def fit_view_offsets(
    per_image: Sequence[Sequence[float]], labels: Sequence[int], sources: Sequence[str], image_views: int, rule: str
) -> dict[str, float]:
    """Per view kind, the logit of the threshold that `rule` would choose for that kind alone (its most
    suspicious view of each image), so a view at its own operating point scores 0.5 after `calibrated`."""
    offsets = {}
    for kind in VIEW_KINDS:
        kept: list[tuple[float, int, str]] = []
        for views, label, source in zip(per_image, labels, sources):
            kinds = view_kinds(len(views), image_views)
            scores = [s for s, k in zip(views, kinds) if k == kind and not math.isnan(s)]
            if scores:
                kept.append((max(scores), label, source))
        if not any(label == 0 for _, label, _ in kept):
            offsets[kind] = 0.0
            continue
        threshold = choose_threshold([k[1] for k in kept], [k[0] for k in kept], rule, [k[2] for k in kept])
        offsets[kind] = logit(threshold)
    return offsets
