"""Evaluate a checkpoint on labelled folders, optionally on degraded copies of the images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.checkpoint import load_model, read_checkpoint
from training.data import Sample, find_samples
from training.metrics import summarize
from training.train import TrainConfig, degrader, evaluate, load_splits, make_loader, per_dataset_metrics


def select_samples(data_dirs: list[str], model_path: Path, split: str) -> list[Sample]:
    """All samples of the folders, or only the validation split the checkpoint was trained with."""
    if split == "all":
        return [s for d in data_dirs for s in find_samples(Path(d))]
    train_config = read_checkpoint(model_path).get("train_config")
    if not train_config:
        raise ValueError(f"{model_path} records no training split; use --split all")
    config = TrainConfig(**{**train_config, "data_dirs": data_dirs})
    return load_splits(config)[1]


def run_evaluation(
    data_dirs: list[str], model_path: Path, split: str = "all", device: str = "auto", batch_size: int = 64,
    jpeg_quality: int | None = None, scale: float | None = None, workers: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Score every selected image and summarise at the checkpoint's stored threshold."""
    loaded = load_model(model_path, device)
    samples = select_samples(data_dirs, model_path, split)
    if not samples:
        raise ValueError("no labelled images found")
    config = TrainConfig(data_dirs=data_dirs, out="", batch_size=batch_size, workers=workers)
    loader = make_loader(samples, loaded.preprocess, degrader(jpeg_quality, scale), config, shuffle=False)
    _, scores, labels = evaluate(loaded.model, loader, loaded.device)
    metrics = summarize(labels, scores, loaded.threshold, [s.stratum for s in samples])
    metrics["per_dataset"] = per_dataset_metrics(samples, scores, loaded.threshold)
    metrics["model_version"] = loaded.version
    metrics["split"] = split
    metrics["degradation"] = {"jpeg_quality": jpeg_quality, "scale": scale}
    return metrics
