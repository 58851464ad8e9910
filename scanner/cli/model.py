"""`scanner train` and `scanner evaluate`: parse options and call the training package."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scanner.cli.console import echo, fail, progress_bar, say_error
from scanner.registry import resolve_model
from scanner.settings import Settings

if TYPE_CHECKING:
    from training.train import TrainConfig

DataDirs = Annotated[
    list[Path], typer.Argument(help="Folders with real/ and fake/ (or training_real/, training_fake/).")
]


def train(
    data_dirs: DataDirs,
    out: Annotated[Path, typer.Option(help="Checkpoint to write (metrics .json and _plots/ beside it).")],
    arch: Annotated[
        str,
        typer.Option(
            help="paper-cnn (Luo's model and settings), fauxnet, effnet-lite0 (ImageNet-initialised) or "
            "effnet-lite0-srm (+ fixed SRM noise residuals; --init can take an effnet-lite0)."
        ),
    ] = "fauxnet",
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (paper-cnn default 30).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    size: Annotated[int, typer.Option(help="Input size in pixels.")] = 128,
    max_side: Annotated[
        int | None, typer.Option(help="Keep native pixels up to this shorter side, then centre-crop.")
    ] = None,
    seed: Annotated[int, typer.Option()] = 1,
    augment: Annotated[
        str | None,
        typer.Option(
            help="paper, robust, robust-light, robust-faces, robust-faces-still, robust-edits, robust-edits-mixed, "
            "robust-edits-gray (+ black-and-white copies), robust-edits-gray-noise (+ noisy copies), "
            "robust-reposted or none."
        ),
    ] = None,
    threshold_rule: Annotated[
        str, typer.Option(help="fpr:0.05, source-fpr:0.05 (at most 5% on every source's reals) or youden.")
    ] = "fpr:0.05",
    views: Annotated[
        str,
        typer.Option(
            help="center (centre crop), faces (whole image + face crops), faces+patch (+ native-pixel patch)."
        ),
    ] = "center",
    balance: Annotated[bool, typer.Option(help="Sample every dataset, and every class in it, equally.")] = False,
    samples_per_epoch: Annotated[int, typer.Option(help="Images drawn per epoch when balancing (0: all).")] = 0,
    max_per_dataset: Annotated[int, typer.Option(help="Cap images per folder (0: all).")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 1,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue from this checkpoint's state.")] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="Start from this model's weights (a name or checkpoint; same architecture, or one it extends)."
        ),
    ] = None,
    weight: Annotated[
        list[str] | None, typer.Option(help="SET=FACTOR: with --balance, draw that set FACTOR times as often.")
    ] = None,
    face_boxes: Annotated[
        Path | None, typer.Option(help="Face boxes found earlier (python -m training.face_boxes); others are searched.")
    ] = None,
    calibrate_views: Annotated[
        bool, typer.Option(help="Multi-view models: bring each view kind to its own threshold before the maximum.")
    ] = True,
    mirror: Annotated[
        list[str] | None,
        typer.Option(help="View kind (whole, patch, face) also scored as its mirror image, the logits averaged."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="float32 or bfloat16: the number format validation, the threshold and the scanner use."),
    ] = None,
    self_blend: Annotated[
        float | None,
        typer.Option(help="Share (0-1) of real draws with a face turned into a self-blended fake (face-aware models)."),
    ] = None,
    patch_min_side: Annotated[
        int | None,
        typer.Option(
            help="faces+patch: draw and score the native patch only on images whose shorter side exceeds this many "
            "pixels (0: on every image)."
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Build a shipped model whole (default: the shipped default) from the sets under the one data folder "
            "given, into the folder --out; resumable; the other options are the recipe's."
        ),
    ] = None,
) -> None:
    """Train a detector on labelled image folders."""
    from scanner.detector.checkpoint import CheckpointError
    from scanner.detector.preprocess import VIEW_POLICIES
    from training.augment import PRESETS
    from training.train import main as train_main

    if recipe is not None:
        _train_recipe(recipe, data_dirs, out, device or Settings.from_env().device)
        return

    config = _train_config(data_dirs, out, arch, resume)
    overrides: dict[str, Any] = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "augment": augment, "max_side": max_side,
        "device": device or Settings.from_env().device, "face_boxes": str(face_boxes) if face_boxes else None,
    }  # fmt: skip
    if resume is None:
        overrides.update(
            size=size, seed=seed, threshold_rule=threshold_rule, max_per_dataset=max_per_dataset,
            workers=workers, views=views, balance=balance, samples_per_epoch=samples_per_epoch,
            init=str(resolve_model(init)) if init else None, dataset_weights=_set_weights(weight or []),
            calibrate_views=calibrate_views, mirror=mirror, precision=precision, self_blend=self_blend,
            patch_min_side=patch_min_side,
        )  # fmt: skip
    if views not in VIEW_POLICIES:
        fail(f"--views must be one of {', '.join(VIEW_POLICIES)}, not {views!r}", code=2)
    if augment is not None and augment not in PRESETS:
        fail(f"--augment must be one of {', '.join(PRESETS)}, not {augment!r}", code=2)
    if self_blend is not None and not 0 <= self_blend <= 1:
        fail(f"--self-blend must be between 0 and 1, not {self_blend}", code=2)
    if patch_min_side is not None and (patch_min_side < 0 or views != "faces+patch"):
        fail(f"--patch-min-side needs --views faces+patch and a side of 0 or more, not {patch_min_side}", code=2)
    config = replace(config, **{key: value for key, value in overrides.items() if value is not None})
    try:
        with progress_bar() as new_task:
            metrics = train_main(config, resume=resume, progress_factory=new_task)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        fail(str(exc))
    summary = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "threshold")}
    say_error(f"wrote {out}: validation {json.dumps(summary)}")


def _train_recipe(name: str, data_dirs: list[Path], out_dir: Path, device: str) -> None:
    """Run every stage of a recipe on the sets under one data folder."""
    from scanner.detector.checkpoint import CheckpointError
    from training.recipe import run_recipe

    if len(data_dirs) != 1:
        fail(f"--recipe takes one data folder holding the recipe's sets, not {len(data_dirs)} folders", code=2)
    if out_dir.suffix == ".pt":
        fail(f"--recipe writes a folder of files; give --out a folder, not {out_dir}", code=2)
    try:
        with progress_bar() as new_task:
            metrics = run_recipe(name, data_dirs[0], out_dir, device, say_error, new_task)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        fail(str(exc))
    summary = {k: metrics[k] for k in ("roc_auc", "threshold", "model_version")}
    say_error(f"wrote {out_dir / (name + '.pt')}: validation {json.dumps(summary)}")


def _set_weights(pairs: list[str]) -> dict[str, float]:
    """Parse repeated --weight SET=FACTOR options."""
    weights: dict[str, float] = {}
    for pair in pairs:
        name, _, factor = pair.partition("=")
        try:
            weights[name] = float(factor)
        except ValueError:
            fail(f"--weight must be SET=FACTOR (a number), not {pair!r}", code=2)
        if not name or weights[name] <= 0:
            fail(f"--weight must name a set and a factor above 0, not {pair!r}", code=2)
    return weights


def _train_config(data_dirs: list[Path], out: Path, arch: str, resume: Path | None) -> TrainConfig:
    from scanner.detector.checkpoint import CheckpointError, read_checkpoint
    from scanner.detector.networks import ARCHITECTURES
    from training.train import TrainConfig, paper_config

    dirs = [str(d) for d in data_dirs]
    if resume is not None:
        try:
            stored = read_checkpoint(resume)["train_config"]
        except (CheckpointError, KeyError) as exc:
            fail(f"cannot resume from {resume}: {exc}")
        return TrainConfig(**{**stored, "data_dirs": dirs, "out": str(out)})
    if arch == "paper-cnn":
        return paper_config(dirs, str(out))
    if arch not in ARCHITECTURES:
        fail(f"unknown architecture {arch!r}: choose one of {', '.join(sorted(ARCHITECTURES))}")
    return TrainConfig(data_dirs=dirs, out=str(out), arch=arch)


def evaluate(
    data_dirs: DataDirs,
    model: Annotated[str | None, typer.Option(help="Model name or checkpoint (default: the shipped default).")] = None,
    split: Annotated[str, typer.Option(help="all, or val: the checkpoint's own validation split.")] = "all",
    jpeg_quality: Annotated[
        int | None, typer.Option(min=1, max=100, help="Re-encode each image at this JPEG quality.")
    ] = None,
    scale: Annotated[float | None, typer.Option(help="Downscale each image by this factor (0-1) first.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    workers: Annotated[int, typer.Option(min=0)] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Evaluate a checkpoint on labelled image folders."""
    from scanner.detector.checkpoint import CheckpointError
    from training.evaluate import run_evaluation

    settings = Settings.from_env()
    model_path = resolve_model(model) if model else settings.model_path
    if split not in ("all", "val"):
        fail("--split must be 'all' or 'val'")
    if scale is not None and not 0 < scale <= 1:  # also refuses nan
        fail(f"--scale must be over 0 and at most 1 (a downscale), not {scale}")
    try:
        metrics = run_evaluation(
            [str(d) for d in data_dirs],
            model_path,
            split,
            settings.device,
            batch_size,
            jpeg_quality,
            scale,
            workers,
        )
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    _print_metrics(metrics)


def _print_metrics(metrics: dict) -> None:
    echo(f"model {metrics['model_version']}  threshold {metrics['threshold']:.4f}  split {metrics['split']}")
    echo(f"{'folder':32s} {'n':>6} {'real':>6} {'fake':>6} {'AUC':>6} {'acc':>6} {'FPR':>6} {'TPR':>6}")
    rows = {**metrics["per_dataset"], "pooled": metrics}
    for name, row in rows.items():
        counts = row["confusion"]
        reals, fakes = counts["tn"] + counts["fp"], counts["tp"] + counts["fn"]
        fpr = row["false_positive_rate"] if reals else None
        tpr = row["true_positive_rate"] if fakes else None
        echo(
            f"{name:32s} {row['n']:6d} {reals:6d} {fakes:6d} {_num(row['roc_auc'])} {_num(row['accuracy'])} "
            f"{_num(fpr)} {_num(tpr)}"
        )
    for name, row in metrics.get("per_stratum", {}).items():
        echo(f"  stratum {name:22s} n={row['n']:6d} acc={row['accuracy']:.4f}")


def _num(value: float | None) -> str:
    return f"{value:6.3f}" if value is not None else f"{'-':>6}"
