"""Training and evaluation loops, in the shape of pytorch/examples' mnist: train_one_epoch, evaluate, main."""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from scanner.detector.checkpoint import (
    build_checkpoint,
    read_checkpoint,
    resolve_device,
    save_checkpoint,
)
from scanner.detector.faces import load_boxes
from scanner.detector.networks import (
    DEFAULT_ARGS,
    EXTENDS,
    build_model,
    inference_forward,
    model_batch_size,
)
from scanner.detector.preprocess import Augment, Preprocess
from scanner.detector.schema import check_mirror, check_precision
from scanner.detector.views import chunk_views, combine_views, score_flat_views
from training.augment import PRESETS, Augmenter
from training.data import (
    ImageFolderDataset,
    KnownBoxes,
    Sample,
    ViewsDataset,
    balanced_weights,
    collate_views,
    find_samples,
    limit_per_dataset,
    reseed_worker,
    split_samples,
)
from training.metrics import choose_threshold, fit_view_offsets, summarize
from training.plots import plot_confusion, plot_curves, plot_roc

Progress = Callable[[int], None]


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in the checkpoint for resuming and provenance."""

    data_dirs: list[str]
    out: str
    arch: str = "fauxnet"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    size: int = 128
    max_side: int = 256
    seed: int = 1
    val_fraction: float = 0.2
    augment: str = "robust"
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    threshold_rule: str = "fpr:0.05"
    max_per_dataset: int = 0
    workers: int = 1
    device: str = "auto"
    arch_args: dict[str, Any] = field(default_factory=dict)
    views: str = "center"
    balance: bool = False
    samples_per_epoch: int = 0
    pretrained: bool = True
    init: str = ""  # start from this checkpoint's weights (same architecture): fine-tuning a released model
    dataset_weights: dict[str, float] = field(default_factory=dict)  # with balance: a set's share times this
    face_boxes: str = ""  # face boxes found earlier (python -m training.face_boxes); files not in it are searched
    calibrate_views: bool = True  # multi-view models: put each view kind at its own threshold before the max
    mirror: list[str] = field(default_factory=list)  # view kinds also scored mirrored (validation and after)
    precision: str = "float32"  # the number format validation (and so the threshold) and the scanner use
    self_blend: float = 0.0  # share of real draws with a face made a self-blended fake (training/selfblend.py)
    patch_min_side: int = 0  # faces+patch: the native patch is drawn and scored only on images larger than this


def paper_config(data_dirs: list[str], out: str) -> TrainConfig:
    """Luo's settings: Adam, lr 1e-3 decayed by lr/epochs, 30 epochs, batch 32, rotation+flips, 8:2."""
    return TrainConfig(
        data_dirs=data_dirs, out=out, arch="paper-cnn", epochs=30, batch_size=32, lr=1e-3,
        augment="paper", schedule="keras-decay", weight_decay=0.0, max_side=0,
    )  # fmt: skip


def load_splits(config: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """Find the samples of every data folder and split them the same way on every run."""
    samples: list[Sample] = []
    for directory in config.data_dirs:
        samples += limit_per_dataset(find_samples(Path(directory)), config.max_per_dataset, config.seed)
    return split_samples(samples, config.val_fraction, config.seed)


def check_both_classes(train: list[Sample], val: list[Sample]) -> None:
    """Refuse splits without real and fake images on both sides: such a model, or its threshold, would mean nothing."""
    parts = (("training", train), ("validation", val))
    if all({sample.label for sample in part} == {0, 1} for _, part in parts):
        return
    counts = "; ".join(f"{name}: {sum(s.label == 0 for s in part)} real, {sum(s.label == 1 for s in part)} fake"
                       for name, part in parts)  # fmt: skip
    raise ValueError(f"need real and fake images in both the training and the validation split ({counts})")


def stream_seed(seed: int, first_epoch: int) -> int:
    """Seed of the draws and augmentations from `first_epoch` on: a resumed run must not replay epoch 1's."""
    return seed if first_epoch == 1 else seed * 1_000_003 + first_epoch


def make_loader(
    samples: list[Sample], preprocess: Preprocess, augment: Augment | None, config: TrainConfig, shuffle: bool,
    known: KnownBoxes | None = None, first_epoch: int = 1,
) -> DataLoader[Any]:  # fmt: skip
    """Training: one random view per image, balanced by dataset and class when asked."""
    generator = torch.Generator().manual_seed(stream_seed(config.seed, first_epoch))
    sampler = None
    if config.balance and shuffle:
        count = config.samples_per_epoch or len(samples)
        weights = balanced_weights(samples, config.dataset_weights)
        sampler = WeightedRandomSampler(weights, count, replacement=True, generator=generator)
    return DataLoader(
        ImageFolderDataset(samples, preprocess, augment, known, config.self_blend),
        batch_size=config.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=config.workers,
        worker_init_fn=reseed_worker,
        generator=generator,
        persistent_workers=config.workers > 0,
    )


def make_eval_loader(
    samples: list[Sample], preprocess: Preprocess, degrade: Augment | None, batch_size: int, workers: int,
    known: KnownBoxes | None = None,
) -> DataLoader[Any]:  # fmt: skip
    """Evaluation: every view of every image (the scanner's views), in order."""
    return DataLoader(
        ViewsDataset(samples, preprocess, degrade, known),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_views,
    )


def keras_decay(lr: float, epochs: int) -> Callable[[int], float]:
    """Keras' time-based decay with decay = lr / epochs, applied per optimizer step (the paper's)."""
    decay = lr / epochs
    return lambda step: 1.0 / (1.0 + decay * step)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero."""
    total, warmup = max(1, total_steps), max(1, warmup_steps)
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def make_optimizer(model: nn.Module, config: TrainConfig, steps_per_epoch: int) -> tuple[Any, Any]:
    """Adam with the paper's Keras-style decay, or AdamW with warm-up and cosine decay."""
    if config.schedule == "keras-decay":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        factor = keras_decay(config.lr, config.epochs)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        total = config.epochs * steps_per_epoch
        factor = warmup_cosine(total, min(steps_per_epoch, total // 10))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(
    model: nn.Module, loader: DataLoader[Any], optimizer: Any, scheduler: Any, device: torch.device,
    progress: Progress | None = None,
) -> tuple[float, float]:  # fmt: skip
    """One pass over the training data; returns mean loss and accuracy."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        if progress:
            progress(len(labels))
    return total_loss / max(1, seen), correct / max(1, seen)


@torch.inference_mode()
def score_views(
    model: nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    preprocess: Preprocess,
    progress: Progress | None = None,
) -> tuple[list[list[float]], list[int]]:
    """Every view's raw score (mirror-averaged and in the precision `preprocess` says, through the scanner's
    `inference_forward`), one list per image in the loader's order, and the labels."""
    model.eval()
    forward = inference_forward(model, preprocess.decoding.size, device, preprocess.scoring.precision)
    per_image: list[list[float]] = []
    labels: list[int] = []
    step = model_batch_size(device)
    for views, counts, batch_labels in loader:
        per_image.extend(chunk_views(score_flat_views(forward, views, counts, preprocess, step, device), counts))
        labels.extend(batch_labels.tolist())
        if progress:
            progress(len(batch_labels))
    return per_image, labels


def image_scores(per_image: list[list[float]], preprocess: Preprocess | None = None) -> list[float]:
    """Each image's score as the scanner combines its views (calibrated by the model's view offsets, if any)."""
    image_views = preprocess.search.image_views if preprocess else 1
    offsets = preprocess.scoring.view_offsets if preprocess else None
    return [combine_views(views, image_views, offsets).score for views in per_image]


def image_loss(scores: list[float], labels: list[int]) -> float:
    """Binary cross-entropy of image scores against labels."""
    if not labels:
        return 0.0
    probs = torch.tensor(scores, dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
    return float(nn.functional.binary_cross_entropy(probs, torch.tensor(labels, dtype=torch.float64)))


def evaluate(
    model: nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    preprocess: Preprocess,
    progress: Progress | None = None,
) -> tuple[float, list[float], list[int]]:
    """Mean loss, image scores (the highest view score, as the scanner computes it) and labels."""
    per_image, labels = score_views(model, loader, device, preprocess, progress)
    scores = image_scores(per_image, preprocess)
    return image_loss(scores, labels), scores, labels


def seed_everything(seed: int) -> None:
    """Seed Python and torch."""
    random.seed(seed)
    torch.manual_seed(seed)


def data_summary(train: list[Sample], val: list[Sample]) -> dict[str, Any]:
    """Counts per dataset and class for the checkpoint."""
    summary: dict[str, Any] = {}
    for side, samples in (("train", train), ("val", val)):
        for sample in samples:
            entry = summary.setdefault(sample.dataset, {}).setdefault(side, {"real": 0, "fake": 0})
            entry["real" if sample.label == 0 else "fake"] += 1
    return summary


def main(config: TrainConfig, resume: Path | None = None, progress_factory: Any = None) -> dict[str, Any]:
    """Train, choose the threshold on validation, write checkpoint, metrics JSON and plots."""
    check_mirror(config.mirror)
    check_precision(config.precision)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    train, val = load_splits(config)
    check_both_classes(train, val)
    preprocess = Preprocess().changed(
        size=config.size, max_side=config.max_side, views=config.views, mirror=tuple(config.mirror),
        precision=config.precision, patch_min_side=config.patch_min_side,
    )  # fmt: skip
    arch_args = config.arch_args or dict(DEFAULT_ARGS[config.arch])
    if config.arch == "paper-cnn":
        arch_args["input_size"] = config.size
    fresh = resume is None and not config.init
    model = build_model(config.arch, arch_args, pretrained=config.pretrained and fresh).to(device)
    if config.init and resume is None:
        source = read_checkpoint(Path(config.init))
        check_init_split(source, config)
        init_weights(model, source, config.arch, arch_args)
    state = read_checkpoint(resume) if resume is not None else None
    start_epoch = int(state["train_state"]["epoch"]) + 1 if state else 1
    augment = Augmenter(PRESETS[config.augment], stream_seed(config.seed, start_epoch))
    known = load_boxes(Path(config.face_boxes), preprocess.search.faces) if config.face_boxes else None
    train_loader = make_loader(train, preprocess, augment, config, shuffle=True, known=known, first_epoch=start_epoch)
    val_loader = make_eval_loader(val, preprocess, None, config.batch_size, config.workers, known)
    optimizer, scheduler = make_optimizer(model, config, len(train_loader))
    history: list[dict[str, float]] = []
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["train_state"]["optimizer"])
        scheduler.load_state_dict(state["train_state"]["scheduler"])
        history = list(state["train_state"]["history"])
    run = TrainingRun(model, config, arch_args, preprocess, train, val, optimizer, scheduler, history)
    val_views: list[list[float]] = []
    val_labels: list[int] = []
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        total = len(train_loader.sampler) + len(val)  # type: ignore[arg-type]
        tick = progress_factory(f"epoch {epoch}/{config.epochs}", total) if progress_factory else None
        train_loss, train_acc = train_one_epoch(model, train_loader, optimizer, scheduler, device, tick)
        val_views, val_labels = score_views(model, val_loader, device, preprocess, tick)
        raw_scores = image_scores(val_views)
        val_loss = image_loss(raw_scores, val_labels)
        val_acc = summarize(val_labels, raw_scores, 0.5)["accuracy"]
        history.append({
            "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
            "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - started,
        })  # fmt: skip
        print(_epoch_line(history[-1]), file=sys.stderr, flush=True)
        _write_outputs(run, epoch, val_views, val_labels)
    if not val_views:
        val_views, val_labels = score_views(model, val_loader, device, preprocess=preprocess)
    return validation_metrics(config, history, val, val_views, val_labels, preprocess)[0]


SPLIT_KEYS = {"seed": "--seed", "max_per_dataset": "--max-per-dataset", "val_fraction": "validation share"}  # the split


def check_init_split(source: dict[str, Any], config: TrainConfig) -> None:
    """Refuse weights trained on another split of the same sets: validation would score images they learnt."""
    earlier = source.get("train_config") or {}
    shared = sorted({Path(d).name for d in earlier.get("data_dirs", [])} & {Path(d).name for d in config.data_dirs})
    differ = [
        f"{option} {earlier[key]}"
        for key, option in SPLIT_KEYS.items()
        if key in earlier and earlier[key] != getattr(config, key)
    ]
    if shared and differ:
        raise ValueError(
            f"--init {config.init} was trained on {', '.join(shared)} with {', '.join(differ)}: with other values the "
            "validation split would hold images those weights trained on. Train with the same values."
        )


def init_weights(model: nn.Module, source: dict[str, Any], arch: str, arch_args: dict[str, Any]) -> None:
    """Load a read checkpoint's weights into the model: the same architecture and arguments, or one it extends."""
    base, added = EXTENDS.get(arch, (arch, ""))
    if source["arch"] not in (arch, base) or source["arch_args"] != arch_args:
        raise ValueError(f"the --init checkpoint is {source['arch']} {source['arch_args']}, not {arch} {arch_args}")
    missing, unexpected = model.load_state_dict(source["state_dict"], strict=source["arch"] == arch)
    left_out = [key for key in missing if not key.startswith(added)]
    if unexpected or left_out:
        raise ValueError(f"the --init checkpoint does not fit {arch}: missing {left_out}, unexpected {unexpected}")


def _epoch_line(row: dict[str, float]) -> str:
    return (
        f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f} | "
        f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} | {row['seconds']:.0f} s"
    )


def calibrate(
    preprocess: Preprocess, per_image: list[list[float]], labels: list[int], sources: list[str], rule: str
) -> Preprocess:
    """The preprocessing with view offsets fitted on these validation images (only multi-view models have any)."""
    if preprocess.search.views == "center":
        return preprocess
    offsets = fit_view_offsets(per_image, labels, sources, preprocess.search.image_views, rule)
    return preprocess.changed(view_offsets=offsets)


def validation_metrics(
    config: TrainConfig,
    history: list[dict[str, float]],
    val: list[Sample],
    per_image: list[list[float]],
    labels: list[int],
    preprocess: Preprocess,
) -> tuple[dict[str, Any], Preprocess, list[float]]:
    """Metrics at the chosen threshold, the preprocessing (view offsets fitted here) and the image scores."""
    sources = [s.dataset for s in val]
    if config.calibrate_views:
        preprocess = calibrate(preprocess, per_image, labels, sources, config.threshold_rule)
    scores = image_scores(per_image, preprocess)
    threshold = choose_threshold(labels, scores, config.threshold_rule, sources)
    metrics = metrics_at(val, scores, labels, threshold, preprocess)
    metrics["threshold_rule"] = config.threshold_rule
    metrics["history"] = history
    return metrics, preprocess, scores


def metrics_at(
    val: list[Sample], scores: list[float], labels: list[int], threshold: float, preprocess: Preprocess
) -> dict[str, Any]:
    """Pooled and per-dataset metrics of these image scores at `threshold`."""
    metrics = summarize(labels, scores, threshold, [s.stratum for s in val])
    metrics["per_dataset"] = per_dataset_metrics(val, scores, threshold)
    metrics["view_offsets"] = dict(preprocess.scoring.view_offsets)
    return metrics


def per_dataset_metrics(samples: list[Sample], scores: list[float], threshold: float) -> dict[str, Any]:
    """Metrics for each dataset at the shared threshold."""
    result = {}
    for name in sorted({s.dataset for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.dataset == name]
        labels = [samples[i].label for i in idx]
        result[name] = summarize(labels, [scores[i] for i in idx], threshold, [samples[i].stratum for i in idx])
    return result


@dataclass
class TrainingRun:
    """What one training run holds between epochs: the model, its recipe, data and optimiser state."""

    model: nn.Module
    config: TrainConfig
    arch_args: dict[str, Any]
    preprocess: Preprocess
    train: list[Sample]
    val: list[Sample]
    optimizer: Any
    scheduler: Any
    history: list[dict[str, float]]


def _write_outputs(run: TrainingRun, epoch: int, per_image: list[list[float]], labels: list[int]) -> None:
    """Checkpoint (resumable), metrics JSON and plots after an epoch."""
    config, history = run.config, run.history
    metrics, preprocess, scores = validation_metrics(config, history, run.val, per_image, labels, run.preprocess)
    out = Path(config.out)
    checkpoint = build_checkpoint(
        run.model, config.arch, run.arch_args, preprocess, metrics["threshold"],
        threshold_rule=config.threshold_rule,
        metrics={k: v for k, v in metrics.items() if k != "history"},
        data=data_summary(run.train, run.val),
        train_config=asdict(config),
        train_state={"epoch": epoch, "optimizer": run.optimizer.state_dict(),
                     "scheduler": run.scheduler.state_dict(), "history": history},
    )  # fmt: skip
    save_checkpoint(checkpoint, out)
    metrics["model_version"] = checkpoint["model_version"]
    out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_dir = out.with_name(out.stem + "_plots")
    plot_curves(history, plot_dir)
    plot_confusion(metrics["confusion"], plot_dir)
    plot_roc(labels, scores, metrics["roc_auc"], plot_dir)
