"""Evaluate a checkpoint on labelled folders (one class may be missing), optionally on degraded copies."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scanner.detector.checkpoint import (
    LoadedModel,
    load_model,
    read_checkpoint,
    renew_version,
    save_checkpoint,
)
from scanner.detector.faces import HalfTurnCheck
from scanner.detector.pages import PageSettings
from scanner.detector.preprocess import QUARTER_TURNS, Augment, Preprocess, check_half_turn, check_turns
from scanner.detector.rates import without_nan
from scanner.detector.schema import check_mirror, check_precision
from scanner.detector.views import band_around
from training.augment import downscale, reencode
from training.data import Sample, find_samples
from training.metrics import choose_threshold, summarize
from training.train import (
    TrainConfig,
    evaluate,
    image_scores,
    load_splits,
    make_eval_loader,
    metrics_at,
    per_dataset_metrics,
    score_views,
    validation_metrics,
)


def select_samples(data_dirs: list[str], model_path: Path, split: str) -> list[Sample]:
    """All samples of the folders, or only the validation split the checkpoint was trained with."""
    if split == "all":
        return [s for d in data_dirs for s in find_samples(Path(d))]
    train_config = read_checkpoint(model_path).get("train_config")
    if not train_config:
        raise ValueError(f"{model_path} records no training split; use --split all")
    config = TrainConfig(**{**train_config, "data_dirs": data_dirs})
    return load_splits(config)[1]


def degrader(jpeg_quality: int | None, scale: float | None) -> Augment | None:
    """A deterministic degradation for robustness evaluation: downscale, then JPEG re-encode."""
    if jpeg_quality is None and scale is None:
        return None

    def apply(image: Any) -> Any:
        if scale is not None:
            image = downscale(image, scale)
        if jpeg_quality is not None:
            image = reencode(image, jpeg_quality)
        return image

    return apply


def score_samples(
    loaded: LoadedModel, samples: list[Sample], degrade: Augment | None = None, batch_size: int = 64, workers: int = 1
) -> list[float]:
    """Image scores exactly as the scanner computes them (whole image and faces, the highest view)."""
    loader = make_eval_loader(samples, loaded.preprocess, degrade, batch_size, workers)
    return evaluate(loaded.model, loader, loaded.device, preprocess=loaded.preprocess)[1]


def run_evaluation(
    data_dirs: list[str], model_path: Path, split: str = "all", device: str = "auto", batch_size: int = 64,
    jpeg_quality: int | None = None, scale: float | None = None, workers: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Score every selected image; one row per folder plus pooled figures, at the stored threshold."""
    loaded = load_model(model_path, device)
    samples = select_samples(data_dirs, model_path, split)
    if not samples:
        raise ValueError("no labelled images found")
    scores = score_samples(loaded, samples, degrader(jpeg_quality, scale), batch_size, workers)
    labels = [s.label for s in samples]
    metrics = summarize(labels, scores, loaded.threshold, [s.stratum for s in samples])
    metrics["per_dataset"] = per_dataset_metrics(samples, scores, loaded.threshold)
    metrics["model_version"] = loaded.version
    metrics["split"] = split
    metrics["degradation"] = {"jpeg_quality": jpeg_quality, "scale": scale}
    return without_nan(metrics)


def calibrate_checkpoint(
    source: Path, target: Path, data_dirs: list[str], device: str = "auto", batch_size: int = 64, workers: int = 1,
    mirror: tuple[str, ...] | None = None, precision: str | None = None, patch_min_side: int | None = None,
    mirror_margin: float | None = None, trim_page: bool | None = None, turn_faces: bool | None = None,
    page_settings: dict[str, Any] | None = None, turns: tuple[int, ...] | None = None, half_turn: str | None = None,
    keep_threshold: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Fit a multi-view checkpoint's view offsets and threshold on its own validation split; write a copy.
    `mirror` first sets the view kinds scored with their mirror image too, `precision` the number format the
    network runs in, `patch_min_side` the shorter side an image needs for its native patch to be scored (None
    keeps the source's). With `mirror_margin` (logits; None keeps the source's, 0 mirrors every view), the
    offsets and threshold are fitted with every view mirrored, and then only views that score within that
    margin of the threshold are mirrored, in the metrics stored and wherever the model runs. `trim_page` sets
    whether the model scores the photo inside a flat page (screenshots, letterboxes) instead of the page, and
    `turn_faces` whether it looks for faces on their side in images with no upright face; `page_settings` changes
    some of the page search's settings (`PageSettings` names; implies `trim_page`), `turns` the turns searched
    (implies `turn_faces`), `half_turn` the half-turn check ("BELOW[,MARGIN]" or "none"; see `half_turn_check`).
    `keep_threshold` keeps the source's view offsets and threshold (a search setting changed without moving the
    operating point), refused where the threshold rule no longer holds."""
    if mirror is not None:
        check_mirror(mirror)  # before any model or image is loaded
    if precision is not None:
        check_precision(precision)
    if patch_min_side is not None and patch_min_side < 0:
        raise ValueError(f"the patch's minimum side must be 0 or more, not {patch_min_side}")
    checkpoint = read_checkpoint(source)
    stored = Preprocess.from_dict(checkpoint["preprocess"])
    page, chosen_turns = page_and_turns(stored, trim_page, page_settings, turn_faces, turns)  # before any model
    check = stored.search.half_turn if half_turn is None else half_turn_check(half_turn)
    check_half_turn(stored.search.views, chosen_turns, check)
    loaded = load_model(source, device)
    if loaded.preprocess.search.views == "center":
        raise ValueError(f"{source} scores one view per image: there is nothing to calibrate")
    if patch_min_side and loaded.preprocess.search.views != "faces+patch":
        raise ValueError(f"{source} has no native patch view ({loaded.preprocess.search.views}): nothing to limit")
    samples = select_samples(data_dirs, source, "val")
    raw = loaded.preprocess.changed(
        view_offsets={}, mirror=loaded.preprocess.scoring.mirror if mirror is None else mirror,
        precision=precision or loaded.preprocess.scoring.precision,
        patch_min_side=loaded.preprocess.search.patch_min_side if patch_min_side is None else patch_min_side,
        mirror_band=(), page=page, turns=chosen_turns, half_turn=check,
    )  # fmt: skip
    band = loaded.preprocess.scoring.mirror_band
    margin = (band[1] - band[0]) / 2 if band and mirror_margin is None else mirror_margin or 0.0
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"the mirror margin must be 0 or more logits, not {margin}")
    if margin and not raw.scoring.mirror:
        raise ValueError(f"{source} mirrors no view: a mirror margin needs --mirror")
    if keep_threshold and not loaded.preprocess.scoring.view_offsets:
        raise ValueError(f"{source} has no view offsets to keep: calibrate it without --keep-threshold first")
    loader = make_eval_loader(samples, raw, None, batch_size, workers)
    config = TrainConfig(**{**checkpoint["train_config"], "data_dirs": data_dirs, "calibrate_views": True})
    if keep_threshold:
        metrics, preprocess = kept_operating_point(loaded, raw, samples, loader, config.threshold_rule, margin)
    else:
        per_image, labels = score_views(loaded.model, loader, loaded.device, preprocess=raw)
        metrics, preprocess, _ = validation_metrics(config, [], samples, per_image, labels, raw)
        metrics.pop("history")
        if margin:
            preprocess = preprocess.changed(mirror_band=band_around(metrics["threshold"], margin))
            per_image, labels = score_views(loaded.model, loader, loaded.device, preprocess=preprocess)
            scores = image_scores(per_image, preprocess)
            metrics = {**metrics, **metrics_at(samples, scores, labels, metrics["threshold"], preprocess)}
    previous = str(checkpoint["model_version"])
    checkpoint.update(preprocess=preprocess.to_dict(), threshold=metrics["threshold"],
                      metrics=metrics, calibrated_from=previous)  # fmt: skip
    checkpoint.pop("train_state", None)
    metrics["model_version"] = renew_version(checkpoint)
    metrics["calibrated_from"] = previous
    save_checkpoint(checkpoint, target)
    return without_nan(metrics)


def kept_operating_point(
    loaded: LoadedModel, raw: Preprocess, samples: list[Sample], loader: Any, rule: str, margin: float
) -> tuple[dict[str, Any], Preprocess]:
    """The source's view offsets and threshold kept under new settings, with the metrics measured there; refused
    where the threshold rule (e.g. every source's reals at most 5% flagged) no longer holds on the validation split."""
    threshold = loaded.threshold
    band = band_around(threshold, margin) if margin else ()
    preprocess = raw.changed(view_offsets=loaded.preprocess.scoring.view_offsets, mirror_band=band)
    per_image, labels = score_views(loaded.model, loader, loaded.device, preprocess=preprocess)
    scores = image_scores(per_image, preprocess)
    lowest = choose_threshold(labels, scores, rule, [s.dataset for s in samples])
    if rule != "youden" and threshold < lowest:
        raise ValueError(
            f"the kept threshold {threshold:.4f} is under {lowest:.4f}, the lowest at which {rule} holds on the "
            "validation split with the new settings: calibrate without --keep-threshold"
        )
    return {**metrics_at(samples, scores, labels, threshold, preprocess), "threshold_rule": rule}, preprocess


def page_and_turns(
    source: Preprocess, trim_page: bool | None, page_settings: dict[str, Any] | None, turn_faces: bool | None,
    turns: tuple[int, ...] | None,
) -> tuple[PageSettings | None, tuple[int, ...]]:  # fmt: skip
    """The page settings and turns a calibrated copy of a model with `source` preprocessing gets (None: keep)."""
    if page_settings and trim_page is False:
        raise ValueError("page settings were given for a model that does not trim pages (--no-trim-page)")
    trims = bool(page_settings) or (source.search.page is not None if trim_page is None else trim_page)
    page = None
    if trims:
        page = PageSettings.from_dict({**asdict(source.search.page or PageSettings()), **(page_settings or {})})
    if turns is not None and turn_faces is False:
        raise ValueError("turns were given for a model that does not turn faces (--no-turn-faces)")
    if turns is not None:
        return page, check_turns(turns)
    turned = bool(source.search.turns) if turn_faces is None else turn_faces
    return page, (source.search.turns or QUARTER_TURNS) if turned else ()


def half_turn_check(text: str) -> HalfTurnCheck | None:
    """The check that "BELOW" or "BELOW,MARGIN" names (cascade confidences, see HalfTurnCheck); None for "none"."""
    if text.strip().lower() == "none":
        return None
    parts = text.split(",")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or len(parts) != len(numbers):
        raise ValueError(f"a half-turn check is BELOW or BELOW,MARGIN (numbers) or none, not {text!r}")
    return HalfTurnCheck.from_dict(dict(zip(("below", "margin"), numbers)))
