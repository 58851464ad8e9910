"""Build the check set a shipped model carries for `scanner adapt` (scanner/detector/checkset.py).

    python -m training.checkset effnet-faces ../shared/data/* --out scanner/weights/

Per set: images of the model's own validation split (every image of a set it never trained on), up to
`--reals` real and `--fakes` fake ones, half replayed while adapting and half kept to check.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from scanner.detector.checkpoint import load_model, read_checkpoint
from scanner.detector.checkset import CheckSet, checkset_path
from scanner.detector.faces import FaceFinder
from scanner.detector.features import image_features
from scanner.detector.preprocess import decode_image
from scanner.registry import resolve_model
from training.data import Sample, find_samples
from training.train import TrainConfig, load_splits


def checkset_samples(model_path: Path, data_dirs: list[str], reals: int, fakes: int, seed: int) -> list[Sample]:
    """Up to `reals` real and `fakes` fake images per set, from the model's validation split where it trained on
    the set and from all its images where it did not."""
    stored = read_checkpoint(model_path).get("train_config") or {}
    trained = {Path(d).name for d in stored.get("data_dirs", [])}
    seen = [d for d in data_dirs if Path(d).name in trained]
    validation = load_splits(TrainConfig(**{**stored, "data_dirs": seen}))[1] if seen else []
    chosen: list[Sample] = []
    rng = random.Random(seed)
    for directory in data_dirs:
        name = Path(directory).name
        pool = [s for s in validation if s.dataset == name] if name in trained else find_samples(Path(directory))
        for label, limit in ((0, reals), (1, fakes)):
            of_class = sorted((s for s in pool if s.label == label), key=lambda s: str(s.path))
            chosen += rng.sample(of_class, min(limit, len(of_class)))
    return chosen


def build_checkset(model_path: Path, samples: list[Sample], seed: int = 0) -> CheckSet:
    """View features (mirror-averaged where the model mirrors) of every sample, half of each set and class marked
    for replay."""
    loaded = load_model(model_path, "cpu")
    finder = FaceFinder(loaded.preprocess.search.faces) if loaded.preprocess.search.uses_faces else None
    sources = sorted({s.dataset for s in samples})
    features, counts = [], []
    for sample in samples:
        image = decode_image(sample.path.read_bytes(), loaded.preprocess.decoding.decode_side).image
        features.append(image_features(loaded.model, image, loaded.preprocess, finder).mean(dim=-1))
        counts.append(len(features[-1]))
    replay = torch.zeros(len(samples), dtype=torch.bool)
    rng = random.Random(seed)
    for source in sources:
        for label in (0, 1):
            rows = [i for i, s in enumerate(samples) if s.dataset == source and s.label == label]
            rng.shuffle(rows)
            replay[rows[: len(rows) // 2]] = True
    return CheckSet(
        model_version=loaded.version, sources=sources,
        source=torch.tensor([sources.index(s.dataset) for s in samples]),
        label=torch.tensor([s.label for s in samples]), counts=torch.tensor(counts), replay=replay,
        features=torch.cat(features),
    )  # fmt: skip


def main() -> None:
    """Parse arguments, build the check set, write it beside the shipped weights."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data_dirs", nargs="+")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write checkset-VERSION.pt into")
    parser.add_argument("--reals", type=int, default=50)
    parser.add_argument("--fakes", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model_path = resolve_model(args.model)
    samples = checkset_samples(model_path, args.data_dirs, args.reals, args.fakes, args.seed)
    checkset = build_checkset(model_path, samples, args.seed)
    target = checkset_path(checkset.model_version, args.out)
    torch.save(checkset.to_dict(), target)
    size = target.stat().st_size / 1e6
    print(f"{target}: {len(samples)} images, {len(checkset.features)} views, {size:.1f} MB")


if __name__ == "__main__":
    main()
