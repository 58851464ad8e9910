"""Start-up time of the `scanner` command, whole process, median of 5 runs each.

    .venv/bin/python scripts/bench_cli.py

Scans two generated images into a temporary SQLite database first, so status/jobs/report have a job.
Goals: `--help` <= 0.4 s; `status`, `jobs`, `report` (table, csv, json) <= 0.7 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

SCANNER = str(Path(sys.executable).with_name("scanner"))
COMMANDS = {
    "--help": ["--help"],
    "status 1": ["status", "1"],
    "jobs": ["jobs"],
    "report 1": ["report", "1"],
    "report 1 --format csv": ["report", "1", "--format", "csv"],
    "report 1 --format json": ["report", "1", "--format", "json"],
}
GOALS = {"--help": 0.4}


def median_seconds(args: list[str], env: dict[str, str], runs: int = 5) -> float:
    """Median wall time of `scanner ARGS` as a new process."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([SCANNER, *args], env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Prepare a job, then time each command."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SCANNER_DATABASE_URL": f"sqlite:///{tmp}/cli.db"}
        for index in range(2):
            Image.new("RGB", (64, 64), (index * 90, 40, 40)).save(f"{tmp}/{index}.png")
        subprocess.run([SCANNER, "submit", tmp], env=env, capture_output=True, check=True)
        print(f"{'command':28s} {'median s':>9s}  goal")
        for name, args in COMMANDS.items():
            goal = GOALS.get(name, 0.7)
            seconds = median_seconds(args, env)
            print(f"{name:28s} {seconds:9.2f}  <= {goal} {'met' if seconds <= goal else 'NOT met'}")


if __name__ == "__main__":
    main()
