"""What `scanner models` shows: each registered model with its checkpoint's own description."""

from __future__ import annotations

from typing import Any

from scanner.detector.checkpoint import CheckpointError, read_checkpoint
from scanner.detector.preprocess import Preprocess
from scanner.registry import RegisteredModel, registered_models


def _input_policy(preprocess: Preprocess) -> str:
    size = preprocess.size
    if not preprocess.uses_faces:
        return f"centre crop of {size} px (shorter side kept up to {preprocess.max_side} px)"
    patch = f", a native-pixel centre patch (up to {preprocess.max_side} px)" if preprocess.image_views == 2 else ""
    if patch and preprocess.patch_min_side:
        patch = f"{patch[:-1]}; images over {preprocess.patch_min_side} px only)"
    combine = "the highest view, each at its own threshold" if preprocess.view_offsets else "the highest"
    if preprocess.mirror:
        band = preprocess.mirror_band
        near = f" when within {(band[1] - band[0]) / 2:g} logits of the threshold" if band else ""
        combine = f"{' and '.join(preprocess.mirror)} also scored mirrored{near}, the logits averaged; {combine}"
    if preprocess.precision != "float32":
        combine = f"{combine}; network in {preprocess.precision}"
    turns = preprocess.turns
    listed = ", ".join(map(str, turns[:-1])) + " or " if len(turns) > 1 else ""
    notes = [f"also turned {listed}{turns[-1]} degrees"] if turns else []
    if preprocess.half_turn is not None:
        notes.append(f"upside down too where the upright face is weaker than {preprocess.half_turn.below:g}")
    found = f" ({'; '.join(notes)})" if notes else ""
    whole = "photo inside a page, else the whole image" if preprocess.trim_page else "whole image"
    crops = f"up to {preprocess.faces.max_faces} face crops{found}"
    return f"{whole}{patch} + {crops} at {size} px (score: {combine})"


def _metrics_text(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "not recorded"
    fpr = metrics.get("false_positive_rate", float("nan"))
    return f"AUC {metrics.get('roc_auc', float('nan')):.3f}, FPR {fpr:.3f} at the stored threshold"


def _speed_text(speed: dict[str, Any]) -> str:
    if not speed:
        return "not measured"
    return ", ".join(f"{key} {value}" for key, value in speed.items())


def describe(model: RegisteredModel) -> dict[str, Any]:
    """One row of `scanner models`."""
    try:
        checkpoint = read_checkpoint(model.path)
    except CheckpointError as exc:
        return {"name": model.name, "default": model.default, "version": f"unusable: {exc}", "summary": model.summary,
                "input": "", "speed": model.speed, "speed_text": _speed_text(model.speed), "metrics": {},
                "metrics_text": ""}  # fmt: skip
    metrics = {k: v for k, v in checkpoint.get("metrics", {}).items() if not isinstance(v, dict | list)}
    return {
        "name": model.name,
        "default": model.default,
        "version": str(checkpoint["model_version"]),
        "summary": model.summary,
        "path": str(model.path),
        "input": _input_policy(Preprocess.from_dict(checkpoint["preprocess"])),
        "threshold": float(checkpoint["threshold"]),
        "speed": model.speed,
        "speed_text": _speed_text(model.speed),
        "metrics": metrics,
        "metrics_text": _metrics_text(metrics),
    }


def describe_models() -> list[dict[str, Any]]:
    """Every registered model, the default first."""
    return [describe(model) for model in registered_models()]
