"""Ablation copies compared at one operating point, from the scores `training.probes.ablation --out` saved.

    python -m training.probes.matched runs/ablation_edits.json [--reference shipped]

Each copy's threshold is set where it flags, on the stored validation images, no more of any real source than the
reference copy does at its own threshold; then, per edit, the mean recall over the fake sources and the share of
the real source flagged most are printed at that threshold. A copy's own refitted threshold can land anywhere the
threshold rule allows, so comparing copies there mixes what a rule adds with a looser operating point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def worst_real(scores: np.ndarray, datasets: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """The highest share of a real source's images at or over the threshold."""
    reals = sorted(set(datasets[labels == 0]))
    return max(float(np.mean(scores[(datasets == name) & (labels == 0)] >= threshold)) for name in reals)


def mean_recall(scores: np.ndarray, datasets: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """The mean over fake sources of the share caught."""
    fakes = sorted(set(datasets[labels == 1]))
    return float(np.mean([np.mean(scores[(datasets == name) & (labels == 1)] >= threshold) for name in fakes]))


def matched_threshold(scores: np.ndarray, datasets: np.ndarray, labels: np.ndarray, most: float) -> float:
    """The lowest threshold at which no real source is flagged more than `most`."""
    fitting = [t for t in np.unique(scores) if worst_real(scores, datasets, labels, float(t)) <= most + 1e-9]
    return float(min(fitting)) if fitting else 1.0


def main() -> None:
    """Read the saved scores, print one row per copy."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", type=Path)
    parser.add_argument("--reference", default="shipped", help="the copy whose stored operating point all share")
    args = parser.parse_args()
    saved = json.loads(args.scores.read_text())
    datasets = np.array([name for name, _ in saved["samples"]])
    labels = np.array([label for _, label in saved["samples"]])
    reference = saved["variants"][args.reference]
    stored = np.array(reference["scores"]["stored"])
    most = worst_real(stored, datasets, labels, reference["threshold"])
    edits = list(reference["scores"])
    print(f"every copy at the threshold where no real source is flagged more than {most:.1%} on the stored images")
    print("| copy (threshold) | " + " | ".join(edits) + " |")
    print("| --- |" + " ---: |" * len(edits))
    for name, variant in saved["variants"].items():
        threshold = matched_threshold(np.array(variant["scores"]["stored"]), datasets, labels, most)
        cells = []
        for edit in edits:
            scores = np.array(variant["scores"][edit])
            recall, flagged = (
                mean_recall(scores, datasets, labels, threshold),
                worst_real(scores, datasets, labels, threshold),
            )
            cells.append(f"{recall:.3f} / {flagged:.1%}")
        print(f"| {name} ({threshold:.4f}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
