"""Execution engines: where a job's batches are scanned. The one place that chooses an engine.

An engine is one module with a class that has `mode`, `check()` and `run(...)`; registering it is one line
in ENGINES. Engines are imported only when chosen, so the CLI starts without Celery (or torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from scanner.settings import Settings

ProgressFactory = Callable[[str, int], Callable[[int], None]]

# name -> "module:Class"; `SCANNER_ENGINE=auto` picks celery when a broker URL is set, else embedded.
ENGINES = {
    "embedded": "scanner.engines.embedded:EmbeddedEngine",
    "celery": "scanner.engines.celery:CeleryEngine",
}


class Engine(Protocol):
    """What `scanner submit` and `scanner resume` need from an execution engine."""

    mode: str  # stored on the job row

    def check(self) -> None:
        """Raise SetupError when jobs cannot run here (broker away, no such device), before any job row exists."""

    def run(self, sessions: Any, job_id: int, queued: int, wait: bool, progress: ProgressFactory | None) -> None:
        """Scan (or hand out) the job's queued items; with `wait`, return once the job is finished."""


def engine_name(settings: Settings) -> str:
    """The engine the settings choose: SCANNER_ENGINE, or by whether a broker is configured."""
    if settings.engine != "auto":
        return settings.engine
    return "celery" if settings.broker_url else "embedded"


def open_engine(settings: Settings) -> Engine:
    """An instance of the chosen engine, bound to the settings."""
    module_name, _, class_name = ENGINES[engine_name(settings)].partition(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(settings)  # type: ignore[no-any-return]
