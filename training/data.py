"""Labelled image folders: discovery, group-aware stratified splits, and the torch dataset."""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from training.preprocess import Augment, Preprocess, preprocess_bytes

CLASSES = ("real", "fake")
LAYOUTS = (("real", "fake"), ("training_real", "training_fake"))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
STRATUM_PATTERN = re.compile(r"^(easy|mid|hard)_", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path
    label: int
    dataset: str
    group: str
    stratum: str


def _manifest_groups(root: Path) -> dict[str, str]:
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="") as handle:
        return {row["file"]: row["near_dup_group"] for row in csv.DictReader(handle) if row.get("near_dup_group")}


def stratum_of(path: Path, label: int) -> str:
    """Stratum from the file name (ciplab's easy_/mid_/hard_), else the class name."""
    match = STRATUM_PATTERN.match(path.name)
    return f"fake_{match.group(1).lower()}" if match and label == 1 else CLASSES[label]


def find_samples(root: Path) -> list[Sample]:
    """List the labelled images of a `real/`+`fake/` (or Kaggle `training_*`) folder."""
    for real_dir, fake_dir in LAYOUTS:
        if (root / real_dir).is_dir() and (root / fake_dir).is_dir():
            break
    else:
        raise FileNotFoundError(f"{root} has neither real/ + fake/ nor training_real/ + training_fake/")
    groups = _manifest_groups(root)
    samples = []
    for label, sub in enumerate((real_dir, fake_dir)):
        for path in sorted((root / sub).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            rel = f"{CLASSES[label]}/{path.relative_to(root / sub).as_posix()}"
            group = f"{root.name}:{groups.get(rel, rel)}"
            samples.append(Sample(path, label, root.name, group, stratum_of(path, label)))
    return samples


def split_samples(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Stratified (dataset x label) split that keeps each near-duplicate group on one side."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.group].append(sample)
    strata: dict[tuple[str, int], list[list[Sample]]] = defaultdict(list)
    for members in groups.values():
        labels = [m.label for m in members]
        majority = max(set(labels), key=labels.count)
        strata[(members[0].dataset, majority)].append(members)
    train: list[Sample] = []
    val: list[Sample] = []
    for key in sorted(strata):
        stratum_groups = sorted(strata[key], key=lambda members: members[0].group)
        random.Random(f"{seed}:{key[0]}:{key[1]}").shuffle(stratum_groups)
        target = val_fraction * sum(len(m) for m in stratum_groups)
        taken = 0
        for members in stratum_groups:
            side = val if taken < target else train
            side.extend(members)
            taken += len(members) if side is val else 0
    return train, val


def limit_per_dataset(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    """Keep at most `limit` samples of each dataset, stratified by label, chosen with `seed`."""
    by_key: dict[tuple[str, int], list[Sample]] = defaultdict(list)
    for sample in samples:
        by_key[(sample.dataset, sample.label)].append(sample)
    kept: list[Sample] = []
    for key in sorted(by_key):
        members = by_key[key]
        share = limit * len(members) // sum(len(v) for k, v in by_key.items() if k[0] == key[0])
        rng = random.Random(f"{seed}:{key[0]}:{key[1]}")
        kept.extend(rng.sample(members, min(len(members), share)))
    return kept


class ImageFolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """Samples as (tensor, label) through the shared preprocessing path, bytes cached in memory."""

    def __init__(self, samples: list[Sample], preprocess: Preprocess, augment: Augment | None) -> None:
        self.samples = samples
        self.preprocess = preprocess
        self.augment = augment
        self._bytes: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        data = self._bytes.get(index)
        if data is None:
            data = self.samples[index].path.read_bytes()
            self._bytes[index] = data
        return preprocess_bytes(data, self.preprocess, self.augment), self.samples[index].label


def reseed_worker(worker_id: int) -> None:
    """DataLoader worker init: give each worker its own augmentation stream."""
    info = torch.utils.data.get_worker_info()
    rng = getattr(getattr(info.dataset, "augment", None), "rng", None) if info else None
    if info is not None and rng is not None:
        rng.seed(info.seed)
