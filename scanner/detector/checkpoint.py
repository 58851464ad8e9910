"""Self-describing checkpoints, loaded with weights_only=True so a tampered file cannot run code."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scanner.detector.networks import build_model
from scanner.detector.preprocess import Preprocess
from scanner.detector.schema import CURRENT_FORMAT, CheckpointError, upgrade

CODE_VERSION = "0.1.0"


@dataclass
class LoadedModel:
    """A model ready for inference, with everything its checkpoint said about it."""

    model: nn.Module
    preprocess: Preprocess
    threshold: float
    version: str
    meta: dict[str, Any]
    device: torch.device


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
        "format": CURRENT_FORMAT,
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
    """Load a checkpoint dictionary at the current schema version; refuses pickled code and foreign files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "Detected pickle protocol 4": the error says more
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"model file not found: {path}") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(f"refusing to load {path}: {load_failure(exc)}") from None
    return upgrade(checkpoint, path)


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
    """Set the model version from the architecture, input size, weights and the settings that differ from their
    defaults (recomputed after the preprocessing changed, so verdicts of the two are never mixed)."""
    preprocess = Preprocess.from_dict(checkpoint["preprocess"])
    digest = weights_digest(checkpoint["state_dict"], preprocess.to_dict())
    checkpoint["model_version"] = f"{checkpoint['arch']}-{preprocess.decoding.size}-{digest}"
    return str(checkpoint["model_version"])
