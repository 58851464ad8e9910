"""Leave-one-source-out: the default recipe without one data set, then that whole set scored.

    python -m training.probes.leave_one_out --data ../shared/data --leave diffusion_people_multi generated_faces \
        --epochs 8

Each run builds runs/loso-SET/ with the recipe's stages (face boxes, found once for all eleven sets in
runs/loso-face-boxes.json; training, resumable with the same command; the calibrated release default.pt; its check
set, so the run can be the base of `training.probes.adapt_curve`) and prints one Markdown row: the set's AUC against
the other class it is scored with (its own, or for a one-class set that class from the validation images of the
others), and at the release's threshold its false-positive and true-positive rates. Only the epoch budget differs
from the shipped recipe.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from scanner.detector.checkpoint import load_model
from training.data import find_samples
from training.evaluate import score_samples, select_samples
from training.metrics import roc_auc
from training.recipe import (
    ELEVEN_SETS,
    RECIPES,
    find_face_boxes,
    recipe_config,
    recipe_dirs,
    release,
    run_training,
    write_checkset,
)

FACE_BOXES = Path("runs/loso-face-boxes.json")


def say(line: str) -> None:
    """Progress to stderr, so stdout keeps only the table."""
    print(line, file=sys.stderr, flush=True)


def train_without(left_out: str, data: Path, epochs: int) -> Path:
    """The default recipe on every set but `left_out`, `epochs` epochs; returns its calibrated release."""
    shipped = RECIPES["default"]
    recipe = replace(shipped, sets=tuple(s for s in shipped.sets if s != left_out),
                     train={**shipped.train, "epochs": epochs})  # fmt: skip
    out_dir = Path("runs") / f"loso-{left_out}"
    out_dir.mkdir(parents=True, exist_ok=True)
    every_set = recipe_config(shipped, recipe_dirs(shipped, data), out_dir)
    find_face_boxes(replace(every_set, face_boxes=str(FACE_BOXES)), say)
    config = replace(recipe_config(recipe, recipe_dirs(recipe, data), out_dir), face_boxes=str(FACE_BOXES))
    run_training(config, say)
    release(recipe, config, "default", say)
    write_checkset(out_dir / "default.pt", config.data_dirs, say)
    return out_dir / "default.pt"


def held_out_row(model: Path, data: Path, left_out: str) -> str:
    """Score the left-out set (for a one-class set, against the other class of the others' validation images)."""
    loaded = load_model(model, "cpu")
    samples = find_samples(data / left_out)
    classes = {s.label for s in samples}
    if len(classes) < 2:
        others = [str(data / name) for name in ELEVEN_SETS if name != left_out]
        samples += [s for s in select_samples(others, model, "val") if s.label not in classes]
    scores = score_samples(loaded, samples)
    labels = [s.label for s in samples]
    fakes = [sc for sc, y in zip(scores, labels) if y == 1]
    reals = [sc for sc, y in zip(scores, labels) if y == 0]
    fpr = sum(sc >= loaded.threshold for sc in reals) / max(1, len(reals))
    tpr = sum(sc >= loaded.threshold for sc in fakes) / max(1, len(fakes))
    return f"| {left_out} | {len(fakes)} / {len(reals)} | {roc_auc(labels, scores):.3f} | {fpr:.3f} | {tpr:.3f} |"


def main() -> None:
    """Train without each named set and print its row."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--leave", nargs="+", default=list(ELEVEN_SETS), choices=ELEVEN_SETS)
    parser.add_argument("--epochs", type=int, default=8, help="the shipped recipe trains 24")
    args = parser.parse_args()
    print("| left out | fakes / reals scored | AUC | FPR | TPR |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for left_out in args.leave:
        model = train_without(left_out, args.data, args.epochs)
        print(held_out_row(model, args.data, left_out), flush=True)


if __name__ == "__main__":
    main()
