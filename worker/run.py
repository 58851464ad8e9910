"""Command-line arguments for starting a worker with sensible defaults per device."""

from __future__ import annotations

from scanner.settings import Settings


def worker_argv(settings: Settings, concurrency: int, queues: str | None, pool: str | None, loglevel: str) -> list[str]:
    """Arguments for `app.worker_main`: GPU workers run one solo process, CPU workers prefork."""
    gpu = settings.device.startswith("cuda")
    chosen_pool = pool or ("solo" if gpu else "prefork")
    processes = 1 if chosen_pool == "solo" else max(1, concurrency)
    return [
        "worker",
        f"--loglevel={loglevel}",
        f"--pool={chosen_pool}",
        f"--concurrency={processes}",
        f"--queues={queues or settings.queue}",
        "--without-gossip",
        "--without-mingle",
    ]
