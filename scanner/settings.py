"""One settings object, read from SCANNER_* environment variables and passed down."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir, user_data_dir

from scanner.engines import ENGINES
from scanner.registry import resolve_model

DEVICES = ("auto", "cpu", "cuda")
POSITIVE = ("batch_size", "visibility_timeout", "task_time_limit", "max_file_bytes", "max_pixels", "http_timeout",
            "lease_seconds", "max_deliveries", "stall_timeout", "max_bytes_in_flight")  # fmt: skip
NOT_NEGATIVE = ("http_max_redirects", "http_retries", "http_backoff", "torch_threads", "decode_threads", "task_retries",
                "model_batch")  # fmt: skip


class SettingsError(ValueError):
    """A setting with a value it cannot have; the message names the variable (or flag) and what is allowed."""


def _label(name: str) -> str:
    flag = {"batch_size": "--batch-size", "device": "--device"}.get(name)
    return f"{ENV_NAMES.get(name, name)}" + (f" ({flag})" if flag else "")


def _parse(variable: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise SettingsError(f"{variable} must be 1/0, true/false, yes/no or on/off, not {raw!r}")
        return _flag(raw)
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{variable} must be {'an integer' if kind is int else 'a number'}, not {raw!r}") from None


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
    max_bytes_in_flight: int = 256 * 1024 * 1024  # raw bytes a process holds between reading and decoding
    allow_private_urls: bool = False
    http_timeout: float = 10.0
    http_max_redirects: int = 5
    http_retries: int = 2
    http_backoff: float = 0.5
    torch_threads: int = 0
    decode_threads: int = 0
    jit: bool = True
    model_batch: int = 0  # network inputs (views, mirror images) per call; 0: the device's default
    lease_seconds: float = 30.0
    max_deliveries: int = 3
    stall_timeout: float = 600.0
    task_retries: int = 8
    engine: str = "auto"
    cache_dir: Path = Path(user_cache_dir("fauxscan"))
    serve_token: str = field(default="", repr=False)
    serve_reviewers: str = ""
    serve_origin: str = ""  # the review app's public origin behind a proxy, e.g. https://review.example.org

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):  # nan passes every comparison below
                raise SettingsError(f"{_label(item.name)} must be a finite number, not {value!r}")
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_label(name)} must be greater than 0, not {getattr(self, name)!r}")
        for name in NOT_NEGATIVE:
            if getattr(self, name) < 0:
                raise SettingsError(f"{_label(name)} must be 0 or more, not {getattr(self, name)!r}")
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", self.device):
            raise SettingsError(f"SCANNER_DEVICE (--device) must be one of {', '.join(DEVICES)} or cuda:N, "
                                f"not {self.device!r}")  # fmt: skip
        if self.engine != "auto" and self.engine not in ENGINES:
            raise SettingsError(f"SCANNER_ENGINE must be auto, {' or '.join(ENGINES)}, not {self.engine!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read SCANNER_* variables (see ENV_NAMES); unset ones keep the defaults written on the fields above."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "database_url": env.get("SCANNER_DATABASE_URL") or default_database_url(),
            "broker_url": env.get("SCANNER_BROKER_URL") or None,
            "model_path": resolve_model(env.get("SCANNER_MODEL")),
        }
        defaults = {f.name: f.default for f in fields(cls)}
        for name, variable in ENV_NAMES.items():
            raw = env.get(variable)
            if name in values or raw is None or raw == "":
                continue
            values[name] = _parse(variable, raw, type(defaults[name]))
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The SCANNER_* variables that reproduce these settings in another process (unset: empty or None)."""
        env = {}
        for name, variable in ENV_NAMES.items():
            value = getattr(self, name)
            if value is None or value == "":
                continue
            env[variable] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    @property
    def decodes_at_once(self) -> int:
        """How many images may be decoded at the same time in one process (SCANNER_DECODE_THREADS; 0: cores + 1, at
        most 8): the scan's decode threads and the review app's thumbnails alike, so memory is bounded by it."""
        return self.decode_threads or min(8, (os.cpu_count() or 1) + 1)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None fields replaced (how CLI flags apply); a model may be given by name."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "model_path" in changes:
            changes["model_path"] = resolve_model(changes["model_path"])
        return replace(self, **changes)


def cgroup_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a container's quota allows (cgroup v2 cpu.max, else v1's CFS quota); None without a quota."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or float(period) <= 0:
        return None
    return float(quota) / float(period)


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by a container's CPU quota (whole cores, >= 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpus(cgroup)
    return max(1, min(cores, int(quota)) if quota is not None else cores)


# The environment variable of each field (the README's configuration table lists the same names).
ENV_NAMES = {
    "database_url": "SCANNER_DATABASE_URL", "broker_url": "SCANNER_BROKER_URL", "model_path": "SCANNER_MODEL",
    "device": "SCANNER_DEVICE", "batch_size": "SCANNER_BATCH_SIZE", "queue": "SCANNER_QUEUE",
    "visibility_timeout": "SCANNER_VISIBILITY_TIMEOUT", "task_time_limit": "SCANNER_TASK_TIME_LIMIT",
    "max_file_bytes": "SCANNER_MAX_FILE_BYTES", "max_pixels": "SCANNER_MAX_PIXELS",
    "max_bytes_in_flight": "SCANNER_MAX_BYTES_IN_FLIGHT",
    "allow_private_urls": "SCANNER_ALLOW_PRIVATE_URLS", "http_timeout": "SCANNER_HTTP_TIMEOUT",
    "http_retries": "SCANNER_HTTP_RETRIES", "http_backoff": "SCANNER_HTTP_BACKOFF",
    "torch_threads": "SCANNER_TORCH_THREADS", "decode_threads": "SCANNER_DECODE_THREADS", "jit": "SCANNER_JIT",
    "model_batch": "SCANNER_MODEL_BATCH",
    "lease_seconds": "SCANNER_LEASE_SECONDS", "max_deliveries": "SCANNER_MAX_DELIVERIES",
    "stall_timeout": "SCANNER_STALL_TIMEOUT", "task_retries": "SCANNER_TASK_RETRIES", "engine": "SCANNER_ENGINE",
    "cache_dir": "SCANNER_CACHE_DIR",
    "serve_token": "SCANNER_SERVE_TOKEN", "serve_reviewers": "SCANNER_SERVE_REVIEWERS",
    "serve_origin": "SCANNER_SERVE_ORIGIN",
}  # fmt: skip
