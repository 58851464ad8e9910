"""Learning curve of `scanner adapt`: one source as new traffic, N reviewed images per class, the rest scored.

    python -m training.probes.adapt_curve effnet-faces --fakes ../shared/data/generated_faces \
        --reals ../shared/data/unsplash_people_real --sizes 25 50 100 200

The model may be a path: a leave-one-source-out run's release (training.probes.leave_one_out), whose check set
sits beside it, is a base that never saw the new source.

The reviewed images are the first N fakes of the new source and N reals of the real source (seeded); the
adapted model (scanner.adapt's fitting, evaluation and threshold) scores the rest of both, and the check set
without either source says whether every other real source stays at or under 5% flagged.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from scanner.detector.adaptation import FitSettings, Reviewed, adapt_head, difference_hash, image_scores
from scanner.detector.checkpoint import load_model
from scanner.detector.checkset import CheckSet, checkset_path, read_checkset
from scanner.detector.faces import FaceFinder
from scanner.detector.features import final_layer, image_features
from scanner.detector.preprocess import decode_image
from scanner.detector.rates import roc_auc, share_at_or_above
from scanner.registry import WEIGHTS_DIR, resolve_model
from training.data import find_samples


def without_sources(checkset: CheckSet, names: set[str]) -> CheckSet:
    """The check set without the images of these sources."""
    return checkset.subset(torch.tensor([checkset.sources[int(k)] not in names for k in checkset.source]))


def featurised(model_name: str, folders: list[Path], cache: Path) -> list[Reviewed]:
    """Every image of the folders as a Reviewed with its view features (cached in `cache`)."""
    if cache.exists():
        return [Reviewed(**row) for row in torch.load(cache, weights_only=False)]
    loaded = load_model(resolve_model(model_name), "cpu")
    finder = FaceFinder(loaded.preprocess.search.faces)
    images = []
    for folder in folders:
        for number, sample in enumerate(find_samples(folder)):
            image = decode_image(sample.path.read_bytes(), loaded.preprocess.decoding.decode_side).image
            features = image_features(loaded.model, image, loaded.preprocess, finder)
            images.append(Reviewed(number, number, sample.label, sample.dataset, str(sample.path), "file", features,
                                   len(features), difference_hash(image)))  # fmt: skip
    torch.save([vars(image) for image in images], cache)
    return images


def rates(scores: list[float], labels: list[int], threshold: float) -> tuple[float, float]:
    """(fakes caught, reals flagged) at `threshold`."""
    caught = share_at_or_above([s for s, y in zip(scores, labels) if y == 1], threshold)
    return caught, share_at_or_above([s for s, y in zip(scores, labels) if y == 0], threshold)


def main() -> None:
    """Adapt on N reviewed images per class for each N; print one table row per N."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--fakes", type=Path, required=True)
    parser.add_argument("--reals", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pull", type=float, default=FitSettings.pull)
    parser.add_argument("--replay-weight", type=float, default=FitSettings.replay_weight)
    parser.add_argument("--steps", type=int, default=FitSettings.steps)
    parser.add_argument("--cache", type=Path, default=Path("runs/adapt-features.pt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = resolve_model(args.model)
    loaded = load_model(path, "cpu")
    beside = checkset_path(loaded.version, path.parent)  # a recipe's run writes its check set beside its model
    shipped = read_checkset(beside if beside.exists() else checkset_path(loaded.version, WEIGHTS_DIR))
    checkset = without_sources(shipped, {args.fakes.name, args.reals.name})
    images = featurised(args.model, [args.fakes, args.reals], args.cache)
    fakes = [i for i in images if i.label == 1 and i.sha256 == args.fakes.name]
    reals = [i for i in images if i.label == 0 and i.sha256 == args.reals.name]
    random.Random(args.seed).shuffle(fakes)
    random.Random(args.seed + 1).shuffle(reals)
    fit = FitSettings(steps=args.steps, pull=args.pull, replay_weight=args.replay_weight)
    base = final_layer(loaded.model)
    print(f"new fakes: {args.fakes.name} ({len(fakes)}), reals: {args.reals.name} ({len(reals)}); {fit}")
    print("| N per class | held-out AUC base / adapted | rest: AUC base / adapted | rest: caught base / adapted | "
          "rest: reals flagged base / adapted | worst other real source flagged | seconds |")  # fmt: skip
    print("| ---: | --- | --- | --- | --- | --- | ---: |")
    for size in args.sizes:
        started = time.perf_counter()
        reviewed, rest = fakes[:size] + reals[:size], fakes[size:] + reals[size:]
        adapted = adapt_head(loaded, reviewed, checkset, fit)
        rows = adapted.evaluation.rows
        labels = [image.label for image in rest]
        features = [image.features for image in rest if image.features is not None]
        new = image_scores(adapted.head, features, loaded.preprocess)
        old = image_scores(base, features, loaded.preprocess)
        worst = max((r["flagged"] for r in rows[3:] if r["model"] == "adapted" and r["reals"]), default=0.0)

        caught_old, flagged_old = rates(old, labels, loaded.threshold)
        caught_new, flagged_new = rates(new, labels, adapted.evaluation.threshold)
        print(f"| {size} | {rows[0]['auc']:.3f} / {rows[2]['auc']:.3f} | {roc_auc(labels, old):.3f} / "
              f"{roc_auc(labels, new):.3f} | {caught_old:.1%} / {caught_new:.1%} | {flagged_old:.1%} / "
              f"{flagged_new:.1%} | {worst:.1%} | {time.perf_counter() - started:.0f} |"
              + (f" refused: {'; '.join(adapted.evaluation.failures)}" if adapted.evaluation.failures else ""),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
