"""One settings object, read from SCANNER_* environment variables and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from scanner.registry import resolve_model

DEVICES = ("auto", "cpu", "cuda")


def default_database_url() -> str:
    """A SQLite file in the user's data directory."""
    return f"sqlite:///{Path(user_data_dir('fauxscan')) / 'fauxscan.db'}"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Runtime configuration; CLI flags override fields with `with_overrides`."""

    database_url: str
    broker_url: str | None
    model_path: Path
    device: str = "auto"
    batch_size: int = 64
    queue: str = "scan"
    visibility_timeout: int = 3 * 3600
    task_time_limit: int = 600
    max_file_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 64_000_000
    allow_private_urls: bool = False
    http_timeout: float = 10.0
    http_max_redirects: int = 5
    http_retries: int = 2
    http_backoff: float = 0.5
    torch_threads: int = 0
    decode_threads: int = 0
    jit: bool = True
    lease_seconds: float = 30.0
    max_deliveries: int = 3
    stall_timeout: float = 600.0
    task_retries: int = 8

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read SCANNER_* variables; unset ones take the embedded defaults."""
        env = os.environ if environ is None else environ
        device = env.get("SCANNER_DEVICE", "auto")
        if device not in DEVICES and not device.startswith("cuda:"):
            raise ValueError(f"SCANNER_DEVICE must be one of {DEVICES} or cuda:N, not {device!r}")
        return cls(
            database_url=env.get("SCANNER_DATABASE_URL") or default_database_url(),
            broker_url=env.get("SCANNER_BROKER_URL") or None,
            model_path=resolve_model(env.get("SCANNER_MODEL")),
            device=device,
            batch_size=int(env.get("SCANNER_BATCH_SIZE", "64")),
            queue=env.get("SCANNER_QUEUE", "scan"),
            visibility_timeout=int(env.get("SCANNER_VISIBILITY_TIMEOUT", str(3 * 3600))),
            task_time_limit=int(env.get("SCANNER_TASK_TIME_LIMIT", "600")),
            max_file_bytes=int(env.get("SCANNER_MAX_FILE_BYTES", str(50 * 1024 * 1024))),
            max_pixels=int(env.get("SCANNER_MAX_PIXELS", "64000000")),
            allow_private_urls=_flag(env.get("SCANNER_ALLOW_PRIVATE_URLS")),
            http_timeout=float(env.get("SCANNER_HTTP_TIMEOUT", "10")),
            http_retries=int(env.get("SCANNER_HTTP_RETRIES", "2")),
            http_backoff=float(env.get("SCANNER_HTTP_BACKOFF", "0.5")),
            torch_threads=int(env.get("SCANNER_TORCH_THREADS", "0")),
            decode_threads=int(env.get("SCANNER_DECODE_THREADS", "0")),
            jit=env.get("SCANNER_JIT", "1") not in ("0", "false", "no", "off"),
            lease_seconds=float(env.get("SCANNER_LEASE_SECONDS", "30")),
            max_deliveries=int(env.get("SCANNER_MAX_DELIVERIES", "3")),
            stall_timeout=float(env.get("SCANNER_STALL_TIMEOUT", "600")),
            task_retries=int(env.get("SCANNER_TASK_RETRIES", "8")),
        )

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None fields replaced (how CLI flags apply); a model may be given by name."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "model_path" in changes:
            changes["model_path"] = resolve_model(changes["model_path"])
        return replace(self, **changes)
