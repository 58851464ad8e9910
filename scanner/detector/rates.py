"""Rates every evaluation reports, training's and `scanner adapt`'s alike: ROC AUC, shares flagged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve by the rank-sum statistic (ties counted half); NaN without both classes."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    positives, negatives = s[y == 1], s[y == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = ranks[y == 1].sum()
    n_pos, n_neg = len(positives), len(negatives)
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def share_at_or_above(scores: Sequence[float], threshold: float) -> float:
    """The share of `scores` at or above `threshold` (flagged); NaN for none."""
    return float(np.mean(np.asarray(scores) >= threshold)) if len(scores) else float("nan")


def lowest_threshold(real_scores: Sequence[float], max_share: float) -> float:
    """The lowest threshold that flags at most `max_share` of these real scores (scores at or above it are
    flagged): just above the score that would tip it over."""
    ordered = sorted(real_scores, reverse=True)
    allowed = int(np.floor(max_share * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return 0.0
    return float(np.nextafter(ordered[allowed], 1.0))


def without_nan(value: Any) -> Any:
    """NaN (an AUC without both classes) as None, in nested dicts and lists, so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nan(item) for item in value]
    return value
