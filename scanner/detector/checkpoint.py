"""Self-describing checkpoints, loaded with weights_only=True so a tampered file cannot run code."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scanner.detector.faces import HalfTurnCheck
from scanner.detector.networks import build_model
from scanner.detector.pages import PageSettings
from scanner.detector.preprocess import PRECISIONS, VIEW_KINDS, Preprocess, check_half_turn, check_turns

FORMAT = "fauxscan-checkpoint/2"  # 2: face-aware preprocessing ("views", "faces"); older code must refuse it
# 3: calibrated views ("view_offsets"); older code would compare raw view scores with a calibrated threshold
CALIBRATED_FORMAT = "fauxscan-checkpoint/3"
# 4: mirror averaging ("mirror"); older code would score one pass against a threshold set for two
MIRROR_FORMAT = "fauxscan-checkpoint/4"
# 5: a reduced inference precision ("precision"); older code would score in float32 against a bfloat16 threshold
PRECISION_FORMAT = "fauxscan-checkpoint/5"
# 6: "patch_min_side"; older code would score the native patch of small images against offsets fitted without it
PATCH_FORMAT = "fauxscan-checkpoint/6"
# 7: "mirror_band"; older code would mirror every view, and score views far from the threshold differently
BAND_FORMAT = "fauxscan-checkpoint/7"
# 8: "trim_page", "turn_faces"; older code would score a screenshot's page and a sideways face's image whole, against
# offsets fitted on the photo inside the page and the face set upright
PAGE_FORMAT = "fauxscan-checkpoint/8"
# 9: "page" (the page search's settings) and "turns" where they are not format 8's; older code would cut pages and
# search turns as its own constants say, not as the model was calibrated
PAGE_SETTINGS_FORMAT = "fauxscan-checkpoint/9"
# 10: "half_turn" (a weak upright face is checked against the image upside down); older code would not turn them
HALF_TURN_FORMAT = "fauxscan-checkpoint/10"
READABLE_FORMATS = (
    "fauxscan-checkpoint/1", FORMAT, CALIBRATED_FORMAT, MIRROR_FORMAT, PRECISION_FORMAT, PATCH_FORMAT, BAND_FORMAT,
    PAGE_FORMAT, PAGE_SETTINGS_FORMAT, HALF_TURN_FORMAT,
)  # fmt: skip
CODE_VERSION = "0.1.0"


class CheckpointError(Exception):
    """The file is not a usable fauxscan checkpoint."""


@dataclass
class LoadedModel:
    """A model ready for inference, with everything its checkpoint said about it."""

    model: nn.Module
    preprocess: Preprocess
    threshold: float
    version: str
    meta: dict[str, Any]
    device: torch.device


def format_for(preprocess: Preprocess) -> str:
    """The oldest checkpoint format that can describe this preprocessing, so older fauxscan refuses only what
    it would score wrongly."""
    if preprocess.half_turn is not None:
        return HALF_TURN_FORMAT
    if {"page", "turns"} & preprocess.to_dict().keys():
        return PAGE_SETTINGS_FORMAT
    if preprocess.trim_page or preprocess.turn_faces:
        return PAGE_FORMAT
    if preprocess.mirror_band:
        return BAND_FORMAT
    if preprocess.patch_min_side:
        return PATCH_FORMAT
    if preprocess.precision != "float32":
        return PRECISION_FORMAT
    if preprocess.mirror:
        return MIRROR_FORMAT
    return CALIBRATED_FORMAT if preprocess.view_offsets else FORMAT


def weights_digest(state_dict: dict[str, torch.Tensor], preprocess: dict[str, Any] | None = None) -> str:
    """A short sha256 over the weights (and the preprocessing, when given), used in the model version string."""
    digest = hashlib.sha256()
    if preprocess is not None:
        digest.update(json.dumps(preprocess, sort_keys=True).encode())
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def build_checkpoint(
    model: nn.Module,
    arch: str,
    arch_args: dict[str, Any],
    preprocess: Preprocess,
    threshold: float,
    **meta: Any,
) -> dict[str, Any]:
    """Assemble the checkpoint dictionary (plain types and tensors only)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint = {
        "format": format_for(preprocess),
        "code_version": CODE_VERSION,
        "arch": arch,
        "arch_args": arch_args,
        "preprocess": preprocess.to_dict(),
        "classes": ["real", "fake"],
        "threshold": float(threshold),
        "state_dict": state,
        **meta,
    }
    renew_version(checkpoint)
    return checkpoint


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write atomically so an interrupted save never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint dictionary; refuses pickled code and foreign files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "Detected pickle protocol 4": the error says more
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"model file not found: {path}") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(f"refusing to load {path}: {load_failure(exc)}") from None
    if not isinstance(checkpoint, dict) or not str(checkpoint.get("format", "")).startswith("fauxscan-checkpoint/"):
        raise CheckpointError(f"{path} is not a fauxscan checkpoint")
    if checkpoint["format"] not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} is a {checkpoint['format']} file; this fauxscan reads {' and '.join(READABLE_FORMATS)}: "
            "upgrade fauxscan to use it"
        )
    _check_view_offsets(path, checkpoint.get("preprocess", {}).get("view_offsets"))
    _check_mirror_band(path, checkpoint.get("preprocess", {}).get("mirror_band"))
    patch_min_side = checkpoint.get("preprocess", {}).get("patch_min_side", 0)
    if not isinstance(patch_min_side, int) or isinstance(patch_min_side, bool) or patch_min_side < 0:
        raise CheckpointError(f"{path} has an unusable patch_min_side {patch_min_side!r}: expected a whole number >= 0")
    _check_page_and_turns(path, checkpoint.get("preprocess", {}))
    try:
        check_mirror(checkpoint.get("preprocess", {}).get("mirror", []))
        check_precision(checkpoint.get("preprocess", {}).get("precision", "float32"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return checkpoint


def load_failure(exc: Exception) -> str:
    """One line on why `torch.load(weights_only=True)` refused a file, without torch's advice to load it unsafely."""
    if isinstance(exc, pickle.UnpicklingError):
        code = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if code:
            found = code.group(1)
            return f"it holds pickled objects ({found}) that no fauxscan checkpoint has, and loading them can run code"
        return "not a fauxscan checkpoint (not a weights-only PyTorch file)"
    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line.split('. ')[0]}"


def _check_page_and_turns(path: Path, preprocess: dict[str, Any]) -> None:
    """Format 8's flags are true or false; format 9's page settings and turns and format 10's half-turn check are
    usable; never a flag and its settings both."""
    for flag in ("trim_page", "turn_faces"):
        if not isinstance(preprocess.get(flag, False), bool):
            raise CheckpointError(f"{path} has an unusable {flag}: expected true or false")
    for flag, settings in (("trim_page", "page"), ("turn_faces", "turns")):
        if flag in preprocess and settings in preprocess:
            raise CheckpointError(f"{path} has both {flag} and {settings}: expected one")
    try:
        if "page" in preprocess:
            PageSettings.from_dict(preprocess["page"])
        if "turns" in preprocess:
            check_turns(preprocess["turns"])
        if "half_turn" in preprocess:
            check = HalfTurnCheck.from_dict(preprocess["half_turn"])
            check_half_turn(preprocess.get("views", "center"), preprocess.get("turns", ()), check)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has unusable settings: {exc}") from None


def _check_view_offsets(path: Path, offsets: Any) -> None:
    """View offsets, where present, are one finite number per view kind (whole, patch, face)."""
    if offsets is None:
        return
    numbers = isinstance(offsets, list) and all(isinstance(v, int | float) for v in offsets)
    if not numbers or len(offsets) != len(VIEW_KINDS) or not all(math.isfinite(v) for v in offsets):
        raise CheckpointError(
            f"{path} has unusable view_offsets {offsets!r}: expected {len(VIEW_KINDS)} finite numbers"
        )


def _check_mirror_band(path: Path, band: Any) -> None:
    """A mirror band, where present, is two finite numbers, low <= high."""
    if band is None:
        return
    numbers = isinstance(band, list) and len(band) == 2 and all(isinstance(v, int | float) for v in band)
    if not numbers or not all(math.isfinite(v) for v in band) or band[0] > band[1]:
        raise CheckpointError(f"{path} has an unusable mirror_band {band!r}: expected [low, high], finite numbers")


def check_mirror(kinds: Any) -> None:
    """Mirrored view kinds, where given, are distinct names from VIEW_KINDS; raises ValueError otherwise."""
    names = isinstance(kinds, list | tuple) and all(isinstance(kind, str) for kind in kinds)
    if not names or len(set(kinds)) != len(kinds) or not set(kinds) <= set(VIEW_KINDS):
        raise ValueError(f"unusable mirror view kinds {kinds!r}: choose among {', '.join(VIEW_KINDS)}")


def check_precision(precision: Any) -> None:
    """The inference precision is one of PRECISIONS; raises ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"unusable precision {precision!r}: choose among {', '.join(PRECISIONS)}")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; call only in the process that runs the model."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(path: Path, device: str = "auto") -> LoadedModel:
    """Rebuild the model from the checkpoint file alone, in eval mode on `device`."""
    checkpoint = read_checkpoint(path)
    model = build_model(checkpoint["arch"], checkpoint["arch_args"])
    model.load_state_dict(checkpoint["state_dict"])
    target = resolve_device(device)
    model.to(target).eval()
    meta = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "train_state")}
    return LoadedModel(
        model=model,
        preprocess=Preprocess.from_dict(checkpoint["preprocess"]),
        threshold=float(checkpoint["threshold"]),
        version=str(checkpoint["model_version"]),
        meta=meta,
        device=target,
    )


def strip_for_release(source: Path, target: Path, face_detect_side: int | None = None) -> str:
    """Drop the optimizer state from a checkpoint so the shipped file stays small; returns its model version.

    `face_detect_side` changes the side at which faces are searched (a speed/recall trade-off); the model
    version then changes too, so verdicts of the two settings are never mixed.
    """
    checkpoint = read_checkpoint(source)
    checkpoint.pop("train_state", None)
    if face_detect_side is not None:
        checkpoint["preprocess"].setdefault("faces", {})["detect_side"] = int(face_detect_side)
        renew_version(checkpoint)
    save_checkpoint(checkpoint, target)
    return str(checkpoint["model_version"])


def renew_version(checkpoint: dict[str, Any]) -> str:
    """Set the model version from the architecture, input size, weights and preprocessing (recomputed after the
    preprocessing changed, so verdicts of the two are never mixed)."""
    digest = weights_digest(checkpoint["state_dict"], checkpoint["preprocess"])
    checkpoint["model_version"] = f"{checkpoint['arch']}-{checkpoint['preprocess']['size']}-{digest}"
    return str(checkpoint["model_version"])
