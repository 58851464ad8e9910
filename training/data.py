"""Labelled image folders: discovery, group-aware stratified splits, and the torch dataset."""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from scanner.detector.faces import Box, FaceFinder
from scanner.detector.preprocess import IMAGE_SUFFIXES, Augment, Preprocess, decode_image
from scanner.detector.views import Placement, make_views, scored_part
from training.draws import blended_training_view, training_view
from training.selfblend import self_blend

KnownBoxes = Mapping[str, list[Box]]

CLASSES = ("real", "fake")
LAYOUTS = (("real", "fake"), ("training_real", "training_fake"))
STRATUM_PATTERN = re.compile(r"^(easy|mid|hard)_", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path
    label: int
    dataset: str
    group: str
    stratum: str
    key: str = ""  # "<set folder>/<path inside it>": names the file in a face-box file


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
    """List the labelled images of a `real/`+`fake/` (or Kaggle `training_*`) folder; one class may be absent."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder (one with real/ and/or fake/ inside is expected)")
    for real_dir, fake_dir in LAYOUTS:
        if (root / real_dir).is_dir() or (root / fake_dir).is_dir():
            break
    else:
        raise FileNotFoundError(f"{root} has neither real/ nor fake/ (nor training_real/, training_fake/)")
    groups = _manifest_groups(root)
    samples = []
    for label, sub in enumerate((real_dir, fake_dir)):
        if not (root / sub).is_dir():
            continue
        for path in sorted((root / sub).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            rel = f"{CLASSES[label]}/{path.relative_to(root / sub).as_posix()}"
            group = f"{root.name}:{groups.get(rel, rel)}"
            key = f"{root.name}/{path.relative_to(root).as_posix()}"
            samples.append(Sample(path, label, root.name, group, stratum_of(path, label), key))
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
    """Keep at most `limit` samples of each dataset (0: all), stratified by label, chosen with `seed`."""
    if limit <= 0:
        return samples
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


def balanced_weights(samples: list[Sample], boost: Mapping[str, float] | None = None) -> list[float]:
    """Sampling weights that give every dataset the same share (times its `boost`), and each class half of it."""
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for sample in samples:
        counts[(sample.dataset, sample.label)] += 1
    classes_of: dict[str, int] = defaultdict(int)
    for dataset, _ in counts:
        classes_of[dataset] += 1
    boost = boost or {}
    return [boost.get(s.dataset, 1.0) / (classes_of[s.dataset] * counts[(s.dataset, s.label)]) for s in samples]


def boxes_for(samples: list[Sample], known: KnownBoxes | None, preprocess: Preprocess) -> dict[int, list[Box]]:
    """The face boxes found earlier for these samples (by key), indexed like `samples`; none for whole-image models."""
    if not known or not preprocess.search.uses_faces:
        return {}
    return {index: list(known[s.key]) for index, s in enumerate(samples) if s.key in known}


class ImageFolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """Training samples as (one view tensor, label); bytes and face boxes cached per process."""

    def __init__(
        self, samples: list[Sample], preprocess: Preprocess, augment: Augment | None, known: KnownBoxes | None = None,
        blend_share: float = 0.0,
    ) -> None:  # fmt: skip
        self.samples = samples
        self.preprocess = preprocess
        self.augment = augment
        self.blend_share = blend_share  # the share of real draws with a face turned into a self-blended fake
        self.rng = random.Random(0)
        self.finder = FaceFinder(preprocess.search.faces)
        self._bytes: dict[int, bytes] = {}
        self._boxes: dict[int, list[Box]] = boxes_for(samples, known, preprocess)
        self._placements: dict[int, Placement] = {}  # how each sample's scored part is cut (its boxes: _boxes)

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> tuple[Image.Image, list[Box]]:
        """The part of sample `index` the model scores (see `scored_part`) and its face boxes, cut once per process."""
        data = self._bytes.get(index)
        if data is None:
            data = self.samples[index].path.read_bytes()
            self._bytes[index] = data
        image = decode_image(data, self.preprocess.decoding.decode_side).image
        if index in self._placements:
            return self._placements[index].apply(image), self._boxes[index]
        part, self._boxes[index], self._placements[index] = scored_part(
            image, self.preprocess.search, self.finder, self._boxes.get(index)
        )
        return part, self._boxes[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, boxes = self.image(index)
        label = self.samples[index].label
        if label == 0 and boxes and self.blend_share and self.rng.random() < self.blend_share:
            box = self.rng.choice(boxes)
            blended = self_blend(image, box, self.rng)
            return blended_training_view(blended, box, self.preprocess, self.augment, self.rng), 1
        return training_view(image, boxes, self.preprocess, self.augment, self.rng), label


class ViewsDataset(Dataset[tuple[torch.Tensor, int]]):
    """Evaluation samples as (all views of the image, label), after an optional degradation."""

    def __init__(
        self, samples: list[Sample], preprocess: Preprocess, degrade: Augment | None, known: KnownBoxes | None = None
    ) -> None:
        self.samples = samples
        self.preprocess = preprocess
        self.degrade = degrade
        self.finder = FaceFinder(preprocess.search.faces)
        self._boxes = boxes_for(samples, known, preprocess) if degrade is None else {}  # degraded: search again

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = decode_image(self.samples[index].path.read_bytes(), self.preprocess.decoding.decode_side).image
        if self.degrade is not None:
            image = self.degrade(image)
        views = make_views(image, self.preprocess, self.finder, self._boxes.get(index))
        return views.tensors, self.samples[index].label


def collate_views(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """Concatenate every image's views; `counts` says how many rows belong to each image."""
    return (
        torch.cat([views for views, _ in batch]),
        [len(views) for views, _ in batch],
        torch.tensor([label for _, label in batch]),
    )


def reseed_worker(worker_id: int) -> None:
    """DataLoader worker init: give each worker its own augmentation stream."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    augment_rng = getattr(getattr(info.dataset, "augment", None), "rng", None)
    view_rng = getattr(info.dataset, "rng", None)
    if augment_rng is not None:
        augment_rng.seed(info.seed)
    if view_rng is not None:
        view_rng.seed(info.seed + 1)
