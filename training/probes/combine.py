"""Two ways to score a checkpoint's views differently, held out as `view_rules.py` holds out the calibrated maximum.

    .venv/bin/python -m training.probes.combine effnet-faces [--splits 10] [--zooms 1.1 1.2]

On the checkpoint's validation split of the eight shared sets, every view is scored as the scanner scores it. Then,
for each of `--splits` group splits in halves, both ways round: view offsets and the `source-fpr` threshold are fitted
on one half and read on the other. Each reading counts alone (`view_rules.py` averages the two ways round first).

1. Rules: the maximum of the calibrated view logits (the shipped rule), their mean, and soft maxima (log-sum-exp
   at temperature T, minus the log of the number of views), each at `source-fpr:0.05` and a stricter rule.
2. Zooms: the whole-image view also scored zoomed (its shorter side to size x zoom, centre crop), plain and
   mirrored, and its logit replaced by the mean over the zooms and mirror images (the maximum kept).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scanner.detector.checkpoint import LoadedModel, load_model
from scanner.detector.faces import FaceFinder
from scanner.detector.networks import inference_forward
from scanner.detector.preprocess import decode_image, resize_center_crop, to_tensor
from scanner.detector.views import logit, scored_part, view_kinds
from scanner.registry import resolve_model
from training.data import Sample
from training.evaluate import make_eval_loader, select_samples
from training.metrics import choose_threshold
from training.probes.report import GAN_FAKES, HQ_REALS, SETS, auc_of, pick
from training.probes.view_rules import Halves, fitted_halves
from training.train import score_views

Rule = Callable[[list[float]], float]


def soft_max(temperature: float) -> Rule:
    """Log-sum-exp of the logits at `temperature`, minus log(n): the mean as it grows, the maximum as it shrinks."""
    return lambda x: temperature * (float(np.logaddexp.reduce(np.array(x) / temperature)) - math.log(len(x)))


def calibrated_logits(views: Sequence[float], offsets: Mapping[str, float], image_views: int) -> list[float]:
    """Each present view's logit moved by its kind's offset (0 at the kind's own threshold)."""
    kinds = view_kinds(len(views), image_views)
    return [logit(s) - offsets.get(k, 0.0) for s, k in zip(views, kinds) if not math.isnan(s)]


def held_out(samples: list[Sample], per_image: list[list[float]], image_views: int, rule: Rule, fpr: float,
             splits: list[Halves]) -> list[float]:  # fmt: skip
    """Mean over readings of: mean recall over fake sources, worst real-source FPR, GAN caught, GAN vs HQ AUC;
    and the largest worst real-source FPR."""
    readings = []
    for fit, held, offsets in (half for halves in splits for half in halves):
        labels, sources = [samples[i].label for i in fit], [samples[i].dataset for i in fit]
        scores = {i: rule(calibrated_logits(per_image[i], offsets, image_views)) for i in fit + held}
        probabilities = [1 / (1 + math.exp(-scores[i])) for i in fit]
        threshold = logit(choose_threshold(labels, probabilities, f"source-fpr:{fpr}", sources))
        readings.append(reading(samples, scores, held, threshold))
    table = np.array(readings)
    return [*table.mean(axis=0), float(table[:, 1].max())]


def reading(samples: list[Sample], scores: dict[int, float], held: list[int], threshold: float) -> list[float]:
    """Mean recall over fake sources, worst real-source FPR, GAN caught and GAN vs HQ AUC on the held half."""
    rates: dict[tuple[str, int], list[bool]] = {}
    for i in held:
        rates.setdefault((samples[i].dataset, samples[i].label), []).append(scores[i] >= threshold)
    recall = np.mean([np.mean(hits) for (_, label), hits in rates.items() if label == 1])
    worst = max(float(np.mean(hits)) for (_, label), hits in rates.items() if label == 0)
    kept, held_scores = [samples[i] for i in held], [scores[i] for i in held]
    gan, hq = pick(kept, held_scores, GAN_FAKES), pick(kept, held_scores, HQ_REALS)
    return [float(recall), worst, float(np.mean([g >= threshold for g in gan])), auc_of(hq, gan)]


def zoomed_whole_logits(samples: list[Sample], loaded: LoadedModel, zooms: Sequence[float]) -> np.ndarray:
    """Per image, the whole-image view's logits at each zoom (1 first), plain then mirrored."""
    config, finder = loaded.preprocess.decoding, FaceFinder(loaded.preprocess.search.faces)
    forward = inference_forward(loaded.model, config.size, loaded.device, loaded.preprocess.scoring.precision)
    rows = []
    for sample in samples:
        image = decode_image(sample.path.read_bytes(), config.decode_side).image
        part = scored_part(image, loaded.preprocess.search, finder)[0]
        views = []
        for zoom in (1.0, *zooms):
            scale = round(config.size * zoom) / min(part.size)
            big = part.resize((max(1, round(part.width * scale)), max(1, round(part.height * scale))),
                              Image.Resampling.BILINEAR, reducing_gap=2.0) if zoom != 1.0 else part  # fmt: skip
            tensor = to_tensor(resize_center_crop(big, config.size, 0, config.resample), config)
            views += [tensor, tensor.flip(-1)]
        with torch.inference_mode():
            logits = forward(torch.stack(views))
        rows.append((logits[:, 1] - logits[:, 0]).numpy())
    return np.array(rows)


def print_row(name: str, figures: list[float]) -> None:
    """One Markdown row of `held_out`'s figures."""
    recall, worst, gan, auc, worst_max = figures
    print(f"| {name} | {recall:.3f} | {worst:.3f} ({worst_max:.3f}) | {gan:.3f} | {auc:.3f} |")


def main() -> None:
    """Score the split once, then print both tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--zooms", type=float, nargs="*", default=[1.1, 1.2])
    args = parser.parse_args()
    model = resolve_model(args.model)
    loaded = load_model(model, "cpu")
    samples = select_samples([str(args.data / name) for name in SETS], model, "val")
    loader = make_eval_loader(samples, loaded.preprocess, None, 64, 1)
    per_image = score_views(loaded.model, loader, loaded.device, preprocess=loaded.preprocess)[0]
    image_views = loaded.preprocess.search.image_views
    splits = [fitted_halves(samples, per_image, image_views, salt) for salt in range(args.splits)]
    print("| rule @ threshold rule | mean recall | worst real-source FPR (max) | GAN caught | GAN vs HQ AUC |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rules: dict[str, Rule] = {"maximum": max, "mean": lambda x: float(np.mean(x)), "soft max T=1": soft_max(1.0),
                              "soft max T=2": soft_max(2.0)}  # fmt: skip
    for name, rule in rules.items():
        for fpr in (0.05, 0.04):
            print_row(f"{name} @ source-fpr:{fpr}", held_out(samples, per_image, image_views, rule, fpr, splits))
    if not args.zooms:
        return
    whole = zoomed_whole_logits(samples, loaded, args.zooms)
    print("\n| whole-image view | mean recall | worst real-source FPR (max) | GAN caught | GAN vs HQ AUC |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, columns in (("as the checkpoint scores it", None), ("zoom 1, always mirrored", 2),
                          ("every zoom, mirrored", whole.shape[1])):  # fmt: skip
        views = per_image if columns is None else [
            [1 / (1 + math.exp(-float(np.mean(row[:columns])))), *views[1:]] for row, views in zip(whole, per_image)
        ]  # fmt: skip
        refitted = splits if columns is None else [fitted_halves(samples, views, image_views, salt)
                                                     for salt in range(args.splits)]  # fmt: skip
        for fpr in (0.05, 0.04):
            print_row(f"{name} @ source-fpr:{fpr}", held_out(samples, views, image_views, max, fpr, refitted))


if __name__ == "__main__":
    main()
