"""Models made here (`scanner adapt`), kept in SQL: registered by name, loaded by any process of the fleet.

A name that is neither a shipped model nor a file is looked up in the `models` table; its checkpoint is
written once into the cache folder under its sha256 (checked on every use) and loaded from there.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from scanner.db import StoredModel, make_engine, session_factory
from scanner.detector.checkpoint import CheckpointError
from scanner.registry import registered_models
from scanner.settings import Settings

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ModelNameError(ValueError):
    """A name an adapted model cannot have (taken, shipped, or not a plain name)."""


def check_new_name(session: Session, name: str) -> None:
    """Refuse a name that is not a plain name, is a shipped model's, or is already registered."""
    if not MODEL_NAME.fullmatch(name) or name.endswith(".pt"):
        raise ModelNameError(f"a model name is 1-64 letters, digits, '.', '_' or '-' (not ending in .pt), not {name!r}")
    if name in {model.name for model in registered_models()}:
        raise ModelNameError(f"{name} is a shipped model's name: choose another")
    if session.scalar(select(StoredModel.id).where(StoredModel.name == name)) is not None:
        raise ModelNameError(
            f"a model named {name} is already registered: choose another name (models are never replaced)"
        )


def checkpoint_bytes(checkpoint: dict[str, Any]) -> bytes:
    """A checkpoint dictionary as the bytes `torch.save` writes."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def register(
    session: Session, name: str, checkpoint: dict[str, Any], created_by: str, details: dict[str, Any]
) -> StoredModel:
    """Store a new model under `name` (refused if the name is taken); the caller commits."""
    check_new_name(session, name)
    version = str(checkpoint["model_version"])
    if (same := session.scalar(select(StoredModel.name).where(StoredModel.model_version == version))) is not None:
        raise ModelNameError(f"the same model ({version}: the same decisions and base) is registered as {same}")
    data = checkpoint_bytes(checkpoint)
    row = StoredModel(
        name=name, model_version=version, base_version=str(checkpoint["adapted"]["base"]),
        created_by=created_by, sha256=hashlib.sha256(data).hexdigest(), checkpoint=data, details=details,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def stored_models(settings: Settings) -> list[dict[str, Any]]:
    """Every registered model's name, version, base, author, date and details (no checkpoint bytes); [] without
    a database or its table."""
    columns = (StoredModel.name, StoredModel.model_version, StoredModel.base_version, StoredModel.created_by,
               StoredModel.created_at, StoredModel.details)  # fmt: skip
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            rows = session.execute(select(*columns).order_by(StoredModel.id)).all()
    except (OperationalError, ProgrammingError):
        return []
    finally:
        engine.dispose()
    return [
        {
            "name": name,
            "version": version,
            "base": base,
            "created_by": who,
            "created_at": _iso(when),
            "details": details,
        }
        for name, version, base, who, when, details in rows
    ]


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def checkpoint_path(settings: Settings) -> Path:
    """The file to load `settings.model_path` from: the path itself, or a registered model's cached checkpoint."""
    path, name = settings.model_path, str(settings.model_path)
    if path.exists() or not MODEL_NAME.fullmatch(name) or name.endswith(".pt"):
        return path
    unknown = (f"no model named {name}: not a shipped model (scanner models), not a file, and not registered by "
               "scanner adapt in this database")  # fmt: skip
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            sha256 = session.scalar(select(StoredModel.sha256).where(StoredModel.name == name))
            if sha256 is None:
                raise CheckpointError(unknown)
            cached = settings.cache_dir / "models" / f"{sha256}.pt"
            if not (cached.exists() and _sha256_of(cached) == sha256):
                data = bytes(session.scalar(select(StoredModel.checkpoint).where(StoredModel.name == name)) or b"")
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise CheckpointError(f"the stored checkpoint of model {name} does not match its sha256")
                _write_atomically(cached, data)
    except (OperationalError, ProgrammingError) as exc:
        raise CheckpointError(f"{unknown} ({type(exc).__name__} reading its models table)") from None
    finally:
        engine.dispose()
    return cached


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(target)
