"""Embedded path throughput against a decode-only baseline measured in the same run.

    .venv/bin/python scripts/bench_embedded.py [--data ../shared/data] [--images 1500]

Decode-only = read + sha256 + decode (draft mode) + face finding + preprocess on the same thread pool.
Choose the model with SCANNER_MODEL=NAME (see `scanner models`).
Embedded = `scanner submit` end to end on a fresh SQLite database: job records, decode, model, SQL writes.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scanner.detector.checkpoint import load_model
from scanner.detector.faces import FaceFinder
from scanner.pipeline.loader import decode_item, read_item
from scanner.pipeline.submit import submit
from scanner.settings import Settings

FACE_SETS = ("ciplab_real_and_fake_face", "hardfakevsrealfaces", "lfw_faceswap", "ffhq_stylegan_256",
             "sdfd_sd21_ffhq", "diffusion_people_multi")  # fmt: skip


def pick_images(data: Path, count: int, seed: int = 0) -> list[Path]:
    """A seeded sample of real and fake face images from the shared data sets."""
    files = sorted(p for name in FACE_SETS for p in (data / name).glob("*/*.jpg"))
    return random.Random(seed).sample(files, min(count, len(files)))


def decode_only(paths: list[Path], settings: Settings, threads: int) -> float:
    """Images/s of read + hash + decode + face finding + preprocess, the work a scan cannot avoid."""
    preprocess = load_model(settings.model_path, "cpu").preprocess
    finder = FaceFinder(preprocess.search.faces) if preprocess.search.uses_faces else None

    def work(path: Path) -> None:
        loaded, data = read_item(0, str(path), "file", settings)
        assert data is not None
        decode_item(loaded, data, preprocess, settings.max_pixels, finder)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, paths))
    return len(paths) / (time.perf_counter() - started)


def parse_args(description: str | None) -> tuple[argparse.Namespace, list[Path]]:
    """The options both benchmarks share, and the sampled image paths."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    return args, pick_images(args.data, args.images)


def main() -> None:
    """Print both rates and their ratio."""
    args, paths = parse_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env().with_overrides(
            database_url=f"sqlite:///{tmp}/bench.db", broker_url=None, batch_size=args.batch_size
        )
        threads = settings.decode_threads or 3
        baseline = decode_only(paths, settings, threads)
        started = time.perf_counter()
        summary = submit(settings, [str(p) for p in paths], wait=True).summary
        embedded = summary["done"] / (time.perf_counter() - started)
    print(f"images: {len(paths)} ({summary['done']} scanned, {summary['errors']} errors)")
    print(f"decode-only baseline: {baseline:8.1f} images/s")
    print(f"embedded scan:        {embedded:8.1f} images/s (model {summary['model_version']})")
    print(f"ratio embedded / decode-only: {embedded / baseline:.2f}x (goal >= 0.7x)")


if __name__ == "__main__":
    main()
