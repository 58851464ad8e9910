"""Embedded scan throughput on a shared CPU: thread settings measured alone and beside one busy process.

    .venv/bin/python scripts/bench_shared_cpu.py [--images 600] [--data ../shared/data]

Each row runs scripts/bench_embedded.py in a fresh process (its own SQLite database) with the environment shown,
first on an otherwise idle host, then while one other process keeps a core busy (as a second job on the host,
or a container's neighbour, does). OpenMP threads spin for a core they do not have: the figure to watch is the
busy column of the defaults. Then two scans run at once on the host (as two `scanner worker` processes do), with
the default share of the cores (each process takes cores / processes scoring) and with every core each.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "bench_embedded.py"
CONFIGS = {
    "defaults": {},
    "SCANNER_TORCH_THREADS=<cores>, OMP_WAIT_POLICY=ACTIVE": {"SCANNER_TORCH_THREADS": str(os.cpu_count() or 1),
                                                             "OMP_WAIT_POLICY": "ACTIVE"},
    "SCANNER_TORCH_THREADS=<cores>, OMP_WAIT_POLICY=PASSIVE": {"SCANNER_TORCH_THREADS": str(os.cpu_count() or 1),
                                                              "OMP_WAIT_POLICY": "PASSIVE"},
    "SCANNER_TORCH_THREADS=1": {"SCANNER_TORCH_THREADS": "1"},
}  # fmt: skip


def embedded_rate(images: int, data: Path, env: dict[str, str]) -> float:
    """Images/s of one embedded scan in a fresh process."""
    command = [sys.executable, str(SCRIPT), "--images", str(images), "--data", str(data)]
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    found = re.search(r"embedded scan:\s+([\d.]+)", done.stdout)
    if found is None:
        raise RuntimeError(done.stdout + done.stderr)
    return float(found.group(1))


def pair_rate(images: int, data: Path, env: dict[str, str]) -> float:
    """Images/s of two embedded scans started together in fresh processes (each its own database), summed."""
    command = [sys.executable, str(SCRIPT), "--images", str(images), "--data", str(data)]
    scans = [subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    rates = []
    for scan in scans:
        out, _ = scan.communicate()
        found = re.search(r"embedded scan:\s+([\d.]+)", out)
        if scan.returncode or found is None:
            raise RuntimeError(out)
        rates.append(float(found.group(1)))
    return sum(rates)


def main() -> None:
    """Print one row per configuration: idle and busy images/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--parts", nargs="+", choices=("alone", "pairs"), default=["alone", "pairs"])
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; images: {args.images}")
    if "alone" in args.parts:
        alone_and_beside_a_busy_process(args.images, args.data)
    if "pairs" in args.parts:
        two_at_once(args.images, args.data)


def alone_and_beside_a_busy_process(images: int, data: Path) -> None:
    """One row per configuration: one scan on the idle host, then beside a process that keeps a core busy."""
    print("| settings | idle host, images/s | one busy process beside, images/s |")
    print("| --- | ---: | ---: |")
    for name, env in CONFIGS.items():
        idle = embedded_rate(images, data, env)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = embedded_rate(images, data, env)
        finally:
            hog.kill()
            hog.wait()
        print(f"| {name} | {idle:.1f} | {busy:.1f} |", flush=True)


def two_at_once(images: int, data: Path) -> None:
    """Two scans together: the default share of the cores against every core each."""
    print("\n| two scans at once | images/s, both together |")
    print("| --- | ---: |")
    every_core = {"SCANNER_TORCH_THREADS": str(os.cpu_count() or 1)}
    for name, env in {"defaults (cores shared)": {}, "SCANNER_TORCH_THREADS=<cores> each": every_core}.items():
        print(f"| {name} | {pair_rate(images, data, env):.1f} |", flush=True)


if __name__ == "__main__":
    main()
