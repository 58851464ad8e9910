"""Leave-one-source-out: train the default recipe without one data set, then score that whole set.

    python -m training.probes.leave_one_out --data ../shared/data --leave diffusion_people_multi ffhq_stylegan_256 \
        --epochs 4 --samples-per-epoch 3000 [--arch effnet-lite0-srm]

Each run writes runs/loso-SET.pt (resumable with the same command) and prints one Markdown row: the set's
AUC against the other class it is scored with (its own, or for a one-class set that class from the
validation images of the others), and at the run's own threshold its false-positive and true-positive rates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scanner.detector.checkpoint import load_model, read_checkpoint
from training.data import find_samples
from training.evaluate import score_samples, select_samples
from training.metrics import roc_auc
from training.train import TrainConfig
from training.train import main as train_main

SETS = ("ciplab_real_and_fake_face", "hardfakevsrealfaces", "lfw_faceswap", "cifake", "ffhq_stylegan_256",
        "sdfd_sd21_ffhq", "real_scenes_people", "diffusion_people_multi")  # fmt: skip


def recipe(data_dirs: list[str], out: Path, epochs: int, samples: int, arch: str = "effnet-lite0") -> TrainConfig:
    """The shipped model's recipe (docs/history/models-v1-to-v9.md) with a smaller budget."""
    return TrainConfig(
        data_dirs=data_dirs, out=str(out), arch=arch, views="faces", balance=True,
        samples_per_epoch=samples, size=112, max_side=256, epochs=epochs, lr=6e-4, batch_size=32,
        threshold_rule="source-fpr:0.05", augment="robust-faces", max_per_dataset=5000, seed=1, workers=1,
    )  # fmt: skip


def held_out_row(model: Path, data: Path, left_out: str) -> str:
    """Score the left-out set (for a one-class set, against the other class of the others' validation images)."""
    loaded = load_model(model, "cpu")
    samples = find_samples(data / left_out)
    classes = {s.label for s in samples}
    if len(classes) < 2:  # a one-class set: the other class from the other sets' validation images
        others = [str(data / name) for name in SETS if name != left_out]
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
    parser.add_argument("--leave", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples-per-epoch", type=int, default=3000)
    parser.add_argument("--arch", default="effnet-lite0", help="effnet-lite0 or effnet-lite0-srm")
    args = parser.parse_args()
    print("| left out | fakes / reals scored | AUC | FPR | TPR |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for left_out in args.leave:
        suffix = "" if args.arch == "effnet-lite0" else f"-{args.arch}"
        out = Path("runs") / f"loso-{left_out}{suffix}.pt"
        dirs = [str(args.data / name) for name in SETS if name != left_out]
        config = recipe(dirs, out, args.epochs, args.samples_per_epoch, args.arch)
        done = out.is_file() and read_checkpoint(out)["train_state"]["epoch"] >= args.epochs
        if not done:
            train_main(config, resume=out if out.is_file() else None)
        print(held_out_row(out, args.data, left_out), flush=True)


if __name__ == "__main__":
    main()
