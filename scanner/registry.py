"""The shipped models, by name: `--model NAME` / `SCANNER_MODEL=NAME`, listed by `scanner models`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights"
REGISTRY_FILE = WEIGHTS_DIR / "registry.json"


@dataclass(frozen=True)
class RegisteredModel:
    """One shipped checkpoint and what was measured about it."""

    name: str
    path: Path
    summary: str
    speed: dict[str, Any]
    default: bool


def registered_models() -> list[RegisteredModel]:
    """Every model in the registry file, the default first."""
    data = json.loads(REGISTRY_FILE.read_text(encoding="utf-8"))
    models = [
        RegisteredModel(
            name=name,
            path=WEIGHTS_DIR / entry["file"],
            summary=entry.get("summary", ""),
            speed=dict(entry.get("speed", {})),
            default=name == data["default"],
        )
        for name, entry in data["models"].items()
    ]
    return sorted(models, key=lambda model: not model.default)


def default_model_path() -> Path:
    """The checkpoint used when no model is named."""
    return next(model.path for model in registered_models() if model.default)


def resolve_model(value: str | Path | None) -> Path:
    """A registered name -> its shipped file; anything else is taken as a path; None -> the default."""
    if value is None or str(value) == "":
        return default_model_path()
    for model in registered_models():
        if str(value) == model.name:
            return model.path
    return Path(value)
