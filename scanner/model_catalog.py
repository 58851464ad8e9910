"""What `scanner models` shows: each registered model with its checkpoint's own description."""

from __future__ import annotations

from typing import Any

from scanner.detector.checkpoint import CheckpointError, read_checkpoint
from scanner.detector.preprocess import Preprocess
from scanner.registry import RegisteredModel, registered_models


def _input_policy(preprocess: Preprocess) -> str:
    decoding, search, scoring = preprocess.decoding, preprocess.search, preprocess.scoring
    size = decoding.size
    if not search.uses_faces:
        return f"centre crop of {size} px (shorter side kept up to {decoding.max_side} px)"
    patch = f", a native-pixel centre patch (up to {decoding.max_side} px)" if search.image_views == 2 else ""
    if patch and search.patch_min_side:
        patch = f"{patch[:-1]}; images over {search.patch_min_side} px only)"
    combine = "the highest view, each at its own threshold" if scoring.view_offsets else "the highest"
    if scoring.mirror:
        band = scoring.mirror_band
        near = f" when within {(band[1] - band[0]) / 2:g} logits of the threshold" if band else ""
        combine = f"{' and '.join(scoring.mirror)} also scored mirrored{near}, the logits averaged; {combine}"
    if scoring.precision != "float32":
        combine = f"{combine}; network in {scoring.precision}"
    turns = search.turns
    listed = ", ".join(map(str, turns[:-1])) + " or " if len(turns) > 1 else ""
    notes = [f"also turned {listed}{turns[-1]} degrees"] if turns else []
    if search.half_turn is not None:
        notes.append(f"upside down too where the upright face is weaker than {search.half_turn.below:g}")
    found = f" ({'; '.join(notes)})" if notes else ""
    whole = "photo inside a page, else the whole image" if search.page is not None else "whole image"
    crops = f"up to {search.faces.max_faces} face crops{found}"
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
