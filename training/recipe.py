"""Recipes: one command that rebuilds a shipped model from the ImageNet weights, resumable stage by stage.

    scanner train --recipe default ../shared/data --out runs/v10

Stages, each skipped when its file is already complete: face boxes (found once for every training image),
training (resumed from its last epoch), the release copy (faces searched at the scanner's side), calibration
(view offsets and threshold fitted on the validation split with the scoring settings below) and
the check set `scanner adapt` needs (view features of validation images, beside the release).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scanner.detector.checkpoint import read_checkpoint, strip_for_release
from scanner.detector.checkset import checkset_path
from scanner.detector.faces import FaceSettings, save_boxes
from scanner.detector.preprocess import Preprocess
from training.checkset import build_checkset, checkset_samples
from training.data import Sample, find_samples, limit_per_dataset
from training.evaluate import calibrate_checkpoint
from training.face_boxes import boxes_of
from training.train import TrainConfig
from training.train import main as train_main

ELEVEN_SETS = (
    "ciplab_real_and_fake_face", "hardfakevsrealfaces", "lfw_faceswap", "cifake", "ffhq_stylegan_256",
    "sdfd_sd21_ffhq", "real_scenes_people", "diffusion_people_multi", "celebahq_real", "generated_faces",
    "unsplash_people_real",
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """A model's whole build: the sets it trains on, the training settings and the scoring settings it ships with."""

    sets: tuple[str, ...]
    train: dict[str, Any]
    face_detect_side: int | None = None
    calibrate: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "default": Recipe(
        sets=ELEVEN_SETS,
        train={
            "arch": "effnet-lite0",
            "views": "faces+patch",
            "size": 112,
            "max_side": 256,
            "epochs": 24,
            "batch_size": 32,
            "lr": 6e-4,
            "schedule": "cosine",
            "augment": "robust-edits-gray-noise",
            "balance": True,
            "samples_per_epoch": 6000,
            "dataset_weights": {"ffhq_stylegan_256": 2.0},
            "threshold_rule": "source-fpr:0.05",
            "max_per_dataset": 5000,
            "seed": 1,
            "workers": 1,
            "mirror": ["whole", "face"],
            "patch_min_side": 144,
        },
        face_detect_side=128,
        # no view mirrored: calibrated with mirroring, the model caught 0.8 points fewer fakes (docs/MODEL.md)
        calibrate={"mirror": (), "mirror_margin": 0.0, "trim_page": True, "turns": (90, 180, 270), "half_turn": "6,1"},
    ),
}

Say = Callable[[str], None]
CHECKSET_REALS, CHECKSET_FAKES = 100, 30  # per set: 7.7 MB of features for the eleven sets


def recipe_dirs(recipe: Recipe, data_root: Path) -> list[str]:
    """The recipe's data folders under `data_root`; refuses a root missing any of them."""
    missing = [name for name in recipe.sets if not (data_root / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"{data_root} lacks the recipe's data folders: {', '.join(missing)}")
    return [str(data_root / name) for name in recipe.sets]


def recipe_config(recipe: Recipe, data_dirs: list[str], out_dir: Path, device: str = "auto") -> TrainConfig:
    """The training configuration of a recipe, writing into `out_dir`."""
    return TrainConfig(
        data_dirs=data_dirs, out=str(out_dir / "train.pt"), face_boxes=str(out_dir / "face-boxes.json"),
        device=device, **recipe.train,
    )  # fmt: skip


def find_face_boxes(config: TrainConfig, say: Say) -> None:
    """Stage 1: the face boxes of every image the run reads, found once (skipped when the file exists)."""
    path = Path(config.face_boxes)
    if path.exists():
        return
    preprocess = Preprocess().changed(size=config.size, max_side=config.max_side, views=config.views)
    samples: list[Sample] = []
    for directory in config.data_dirs:
        samples += limit_per_dataset(find_samples(Path(directory)), config.max_per_dataset, config.seed)
    started = time.perf_counter()
    boxes = dict(boxes_of(samples, preprocess))
    partial = path.with_suffix(".partial")
    save_boxes(partial, preprocess.search.faces if preprocess.search.faces else FaceSettings(), boxes)
    partial.replace(path)
    say(f"faces: {len(boxes)} images searched in {time.perf_counter() - started:.0f} s -> {path}")


def epochs_done(path: Path) -> int:
    """How many epochs a training checkpoint has finished (0 when there is none)."""
    if not path.exists():
        return 0
    return int(read_checkpoint(path).get("train_state", {}).get("epoch", 0))


def run_training(config: TrainConfig, say: Say, progress_factory: Any = None) -> None:
    """Stage 2: train, resuming from the last finished epoch."""
    path = Path(config.out)
    done = epochs_done(path)
    if done >= config.epochs:
        return
    if done:
        say(f"training: resuming {path} after epoch {done} of {config.epochs}")
    train_main(config, resume=path if done else None, progress_factory=progress_factory)


def release(recipe: Recipe, config: TrainConfig, name: str, say: Say) -> dict[str, Any]:
    """Stages 3 and 4: the release copy, calibrated with the recipe's scoring settings."""
    out_dir = Path(config.out).parent
    stripped, target = out_dir / "release-uncalibrated.pt", out_dir / f"{name}.pt"
    if (
        target.exists()
        and (out_dir / f"{name}.json").exists()
        and target.stat().st_mtime > Path(config.out).stat().st_mtime
    ):
        return dict(json.loads((out_dir / f"{name}.json").read_text()))
    strip_for_release(Path(config.out), stripped, recipe.face_detect_side)
    metrics = calibrate_checkpoint(stripped, target, config.data_dirs, config.device, **recipe.calibrate)
    (out_dir / f"{name}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    say(f"wrote {target} ({metrics['model_version']}), threshold {metrics['threshold']:.4f}")
    return metrics


def write_checkset(model: Path, data_dirs: list[str], say: Say) -> Path:
    """Stage 5: the released model's check set for `scanner adapt`, written beside it."""
    version = str(read_checkpoint(model)["model_version"])
    if (existing := checkset_path(version, model.parent)).exists():
        return existing
    samples = checkset_samples(model, data_dirs, CHECKSET_REALS, CHECKSET_FAKES, seed=0)
    checkset = build_checkset(model, samples)
    target = checkset_path(checkset.model_version, model.parent)
    torch.save(checkset.to_dict(), target)
    say(f"check set: {len(samples)} images -> {target}")
    return target


def run_recipe(
    name: str, data_root: Path, out_dir: Path, device: str = "auto", say: Say | None = None,
    progress_factory: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Every stage of recipe `name` on the sets under `data_root`; returns the calibrated model's metrics."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    tell = say or (lambda line: print(line, file=sys.stderr, flush=True))
    config = recipe_config(recipe, recipe_dirs(recipe, data_root), out_dir, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    find_face_boxes(config, tell)
    run_training(config, tell, progress_factory)
    metrics = release(recipe, config, name, tell)
    write_checkset(out_dir / f"{name}.pt", config.data_dirs, tell)
    tell(f"recipe {name}: {time.perf_counter() - started:.0f} s in this run")
    return metrics
