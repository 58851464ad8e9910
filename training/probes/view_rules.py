"""How to combine a model's view scores: each rule's AUCs and recall at a per-source-calibrated threshold
(`source-fpr:0.05`, chosen on the same validation images for every rule), on a checkpoint's validation split.

    python -m training.probes.view_rules [CHECKPOINT] [--splits N]   # default runs/v3-release.pt (faces+patch)

A second table checks the calibrated maximum (view offsets, `scanner model calibrate`) out of sample: the
images are split in two halves by near-duplicate group; offsets fitted on one half are applied to the other,
where the threshold of both rules is chosen and the figures are read; the two halves' figures are averaged.
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scanner.detector.checkpoint import LoadedModel, load_model
from scanner.detector.views import combine_views
from training.data import Sample
from training.evaluate import make_eval_loader, select_samples
from training.metrics import (
    choose_threshold,
    fit_view_offsets,
    roc_auc,
)
from training.probes.report import GAN_FAKES, HQ_REALS, SETS, auc_of, pick
from training.train import score_views

Rule = Callable[[list[float]], float]
RULES: dict[str, Rule] = {
    "max (raw)": max,
    "whole (scaled)": lambda v: v[0],
    "patch (native)": lambda v: v[1],
    "faces, else whole": lambda v: max(v[2:]) if len(v) > 2 else max(v[:2]),
    "mean": lambda v: float(np.mean(v)),
}


def view_scores(model: Path, loaded: LoadedModel) -> tuple[list[Sample], list[list[float]]]:
    """Every raw view score of every validation image, views in the scanner's order (whole, patch, faces)."""
    samples = select_samples([f"../shared/data/{name}" for name in SETS], model, "val")
    loader = make_eval_loader(samples, loaded.preprocess, None, 64, 1)
    return samples, score_views(loaded.model, loader, loaded.device, preprocess=loaded.preprocess)[0]


def rule_figures(samples: list[Sample], scores: list[float]) -> list[float]:
    """Threshold, pooled AUC, GAN-vs-HQ AUC, GAN caught, mean recall over fake sources, diffusion people caught."""
    threshold = choose_threshold([s.label for s in samples], scores, "source-fpr:0.05", [s.dataset for s in samples])
    gan = pick(samples, scores, GAN_FAKES)
    recalls = {
        d: float(np.mean([score >= threshold for score, s in zip(scores, samples) if s.dataset == d and s.label == 1]))
        for d in SETS
        if any(s.dataset == d and s.label == 1 for s in samples)
    }
    pooled = roc_auc([s.label for s in samples], scores)
    ganhq = auc_of(pick(samples, scores, HQ_REALS), gan)
    gan_caught = float(np.mean([g >= threshold for g in gan]))
    diffusion = recalls.get("diffusion_people_multi", float("nan"))
    return [threshold, pooled, ganhq, gan_caught, float(np.mean(list(recalls.values()))), diffusion]


def rule_row(name: str, samples: list[Sample], scores: list[float]) -> str:
    """One Markdown row: threshold, pooled AUC, GAN-vs-HQ AUC, GAN caught, mean recall over fake sources."""
    threshold, pooled, ganhq, gan_caught, mean_recall, _ = rule_figures(samples, scores)
    return f"| {name} | {threshold:.4f} | {pooled:.3f} | {ganhq:.3f} | {gan_caught:.3f} | {mean_recall:.3f} |"


Halves = list[tuple[list[int], list[int], dict[str, float]]]  # (fit indices, held indices, offsets fitted on fit)


def fitted_halves(samples: list[Sample], per_image: list[list[float]], image_views: int, salt: int = 0) -> Halves:
    """The images split in two by near-duplicate group (`salt` picks another split), both ways round: (fit indices,
    held indices, the view offsets fitted on the fit half)."""
    key = [zlib.crc32((f"{salt}:" if salt else "").encode() + s.group.encode()) % 2 for s in samples]
    halves = [[i for i, side in enumerate(key) if side == h] for h in (0, 1)]
    return [
        (fit, held, fit_view_offsets([per_image[i] for i in fit], [samples[i].label for i in fit],
                                     [samples[i].dataset for i in fit], image_views, "source-fpr:0.05"))
        for fit, held in ((halves[0], halves[1]), (halves[1], halves[0]))
    ]  # fmt: skip


def cross_fitted(samples: list[Sample], per_image: list[list[float]], image_views: int, halves: Halves) -> None:
    """Print the out-of-sample table: the raw maximum against the calibrated maximum, offsets from the other half."""
    sums: dict[str, list[float]] = {}
    for _, held, offsets in halves:
        kept = [samples[i] for i in held]
        for name, chosen in (("max (raw)", {}), ("calibrated max", offsets)):
            scores = [combine_views(per_image[i], image_views, chosen).score for i in held]
            figures = rule_figures(kept, scores)
            sums[name] = [a + b / 2 for a, b in zip(sums.get(name, [0.0] * len(figures)), figures)]
    header = "threshold | pooled AUC | GAN vs HQ AUC | GAN caught | mean recall | diffusion caught"
    print(f"\n| rule (cross-fitted) | {header} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, figures in sums.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in figures) + " |")


def held_out_figures(
    samples: list[Sample], per_image: list[list[float]], image_views: int, halves: Halves
) -> tuple[dict[str, float], dict[str, float]]:
    """Recall per fake source and false-positive rate per real source, with offsets AND threshold fitted on one
    half and read on the other, averaged over the two ways round."""
    recalls: dict[str, list[float]] = {}
    fprs: dict[str, list[float]] = {}
    for fit, held, offsets in halves:
        labels, sources = [samples[i].label for i in fit], [samples[i].dataset for i in fit]
        scores = {i: combine_views(per_image[i], image_views, offsets).score for i in fit + held}
        threshold = choose_threshold(labels, [scores[i] for i in fit], "source-fpr:0.05", sources)
        for label, into in ((1, recalls), (0, fprs)):
            for name in SETS:
                hits = [scores[i] >= threshold for i in held if (samples[i].dataset, samples[i].label) == (name, label)]
                if hits:
                    into.setdefault(name, []).append(float(np.mean(hits)))
    return {k: float(np.mean(v)) for k, v in recalls.items()}, {k: float(np.mean(v)) for k, v in fprs.items()}


def held_out_threshold(samples: list[Sample], per_image: list[list[float]], image_views: int, halves: Halves) -> None:
    """Print the calibrated maximum with offsets AND threshold fitted on one half, read on the other: the recall
    a new batch would get, and the false-positive rate it would really see on each real source."""
    recalls, fprs = held_out_figures(samples, per_image, image_views, halves)
    mean_recall = np.mean(list(recalls.values()))
    worst = max(fprs, key=lambda name: fprs[name])
    print(
        f"\nthreshold fitted on the other half too: mean recall over fake sources {mean_recall:.3f}; "
        f"highest false-positive rate of a real source {fprs[worst]:.3f} ({worst})"
    )
    print("recall by source: " + ", ".join(f"{name} {v:.3f}" for name, v in recalls.items()))


def many_splits(samples: list[Sample], per_image: list[list[float]], image_views: int, splits: int) -> None:
    """Print the held-out figures over `splits` different group splits: how much of a difference is the split."""
    rows = []
    for salt in range(splits):
        recalls, fprs = held_out_figures(samples, per_image, image_views, fitted_halves(samples, per_image,
                                                                                        image_views, salt))  # fmt: skip
        rows.append((float(np.mean(list(recalls.values()))), max(fprs.values()), recalls))
    mean_recalls, worst_fprs = [r[0] for r in rows], [r[1] for r in rows]
    print(
        f"\nover {splits} group splits: mean recall {np.mean(mean_recalls):.3f} (min {min(mean_recalls):.3f}, "
        f"max {max(mean_recalls):.3f}); highest false-positive rate of a real source {np.mean(worst_fprs):.3f} "
        f"(max {max(worst_fprs):.3f})"
    )
    names = rows[0][2]
    print("mean recall by source: " + ", ".join(f"{n} {np.mean([r[2][n] for r in rows]):.3f}" for n in names))


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="runs/v3-release.pt")
    parser.add_argument("--splits", type=int, default=0, help="also repeat the held-out line over N group splits")
    args = parser.parse_args()
    model = Path(args.model)
    loaded = load_model(model, "cpu")
    samples, per_image = view_scores(model, loaded)
    print("| rule | threshold | pooled AUC | GAN vs HQ AUC | GAN caught | mean recall, fake sources |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, rule in RULES.items():
        print(rule_row(name, samples, [rule(views) for views in per_image]))
    image_views = loaded.preprocess.search.image_views
    halves = fitted_halves(samples, per_image, image_views)
    cross_fitted(samples, per_image, image_views, halves)
    held_out_threshold(samples, per_image, image_views, halves)
    if args.splits:
        many_splits(samples, per_image, image_views, args.splits)


if __name__ == "__main__":
    main()
