"""How far from the threshold must a view be before its mirror image can be skipped? A margin sweep.

    .venv/bin/python -m training.probes.mirror_margins effnet-faces --margins 1 2 3 4 6

Scores the model's validation split twice, with its mirrored view kinds scored plain and mirror-averaged, then
for each margin applies what `scanner model calibrate --mirror-margin M` stores: a view is mirror-averaged only
when its calibrated plain logit is within M of the threshold's. Prints the share of views mirrored, the verdicts
that differ from mirroring every view, and the AUC per set and of GAN faces against real HQ portraits.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from scanner.detector.checkpoint import load_model
from scanner.detector.preprocess import Preprocess
from scanner.detector.views import band_around, chunk_views, in_mirror_band, mirror_mask, view_kinds
from scanner.registry import resolve_model
from training.evaluate import select_samples
from training.metrics import roc_auc
from training.probes.report import SETS, goals
from training.train import image_scores, make_eval_loader, score_views


def banded(
    plain: list[list[float]], mirrored: list[list[float]], preprocess: Preprocess
) -> tuple[list[list[float]], int]:
    """Each image's raw view scores as a checkpoint with this mirror band scores them (the band decided by the
    scanner's own `in_mirror_band`), and how many views were mirror-averaged."""
    counts = [len(views) for views in plain]
    flat_plain = [s for views in plain for s in views]
    mirrored_kinds = mirror_mask(counts, preprocess)
    assert mirrored_kinds is not None  # main() refuses a model without mirrored views
    inside = mirrored_kinds & in_mirror_band(flat_plain, counts, preprocess)
    flat = [m if use else p for p, m, use in zip(flat_plain, (s for v in mirrored for s in v), inside.tolist())]
    return chunk_views(flat, counts), int(inside.sum())


def main() -> None:
    """Score the split plain and mirrored once, then print one row per margin."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a calibrated checkpoint with mirrored view kinds, or a registered name")
    parser.add_argument("--margins", type=float, nargs="+", default=[1, 2, 3, 4, 6])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    model = resolve_model(args.model)
    loaded = load_model(model, "cpu")
    full = loaded.preprocess.changed(mirror_band=())
    if not full.scoring.mirror or not full.scoring.view_offsets:
        parser.error(f"{model} has no calibrated, mirrored views")
    samples = select_samples([str(args.data / name) for name in SETS], model, "val")
    plain_pp = full.changed(mirror=())
    plain = score_views(loaded.model, make_eval_loader(samples, plain_pp, None, 64, 1), loaded.device, plain_pp)[0]
    mirrored = score_views(loaded.model, make_eval_loader(samples, full, None, 64, 1), loaded.device, full)[0]
    kinds = (kind for views in plain for kind in view_kinds(len(views), full.search.image_views))
    total = sum(kind in full.scoring.mirror for kind in kinds)
    reference = [s >= loaded.threshold for s in image_scores(mirrored, full)]
    print(f"{loaded.version}, threshold {loaded.threshold:.4f}, mirrored kinds {', '.join(full.scoring.mirror)}")
    print("| margin | views mirrored | verdicts changed | " + " | ".join(SETS[:6]) + " | GAN vs HQ |")
    print("| --- |" + " ---: |" * 9)
    for margin in [math.inf, *args.margins]:
        per_image, used = banded(plain, mirrored, full.changed(mirror_band=band_around(loaded.threshold, margin)))
        scores = image_scores(per_image, full)
        changed = sum((s >= loaded.threshold) != r for s, r in zip(scores, reference))
        aucs = []
        for name in SETS[:6]:
            idx = [i for i, s in enumerate(samples) if s.dataset == name]
            aucs.append(roc_auc([samples[i].label for i in idx], [scores[i] for i in idx]))
        gan = goals(samples, scores, loaded.threshold)["gan_vs_hq_real_auc"]
        name = "every view" if math.isinf(margin) else f"{margin:g}"
        print(f"| {name} | {used / max(total, 1):.0%} | {changed} | " + " | ".join(f"{a:.3f}" for a in aucs)
              + f" | {gan:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
