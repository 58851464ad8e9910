"""Model throughput (images/s, forward pass only) of the default model and paper-cnn at several input sizes.

.venv/bin/python scripts/bench_model.py [--device cpu|cuda] [--batch 64 256] [--sizes 96 128 160]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from scanner.detector.checkpoint import load_model, resolve_device
from scanner.detector.networks import DEFAULT_ARGS, build_model, inference_forward
from scanner.registry import default_model_path


def images_per_second(
    model: Callable[[torch.Tensor], torch.Tensor], size: int, batch: int, device: torch.device, seconds: float
) -> float:
    """Forward passes of random batches for about `seconds`, after a warm-up."""
    images = torch.randn(batch, 3, size, size, device=device)
    if isinstance(model, torch.nn.Module):
        model.eval().to(device)
    with torch.inference_mode():
        for _ in range(3):
            model(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            model(images)
            count += batch
        if device.type == "cuda":
            torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def main() -> None:
    """Print one line per (model, size, batch)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    shipped = load_model(default_model_path(), "cpu")
    print(f"shipped model {shipped.version}: input {shipped.preprocess.decoding.size} px")
    for batch in args.batch:
        rate = images_per_second(shipped.model, shipped.preprocess.decoding.size, batch, device, args.seconds)
        print(f"  shipped  size {shipped.preprocess.decoding.size:4d} batch {batch:4d}: {rate:9.1f} images/s (eager)")
        if device.type == "cpu":
            preprocess = shipped.preprocess
            frozen = inference_forward(shipped.model, preprocess.decoding.size, device, preprocess.scoring.precision)
            rate = images_per_second(frozen, shipped.preprocess.decoding.size, batch, device, args.seconds)
            size = shipped.preprocess.decoding.size
            how = f"frozen, {preprocess.scoring.precision}, as scanned"
            print(f"  shipped  size {size:4d} batch {batch:4d}: {rate:9.1f} images/s ({how})")
        for size in args.sizes:
            default = build_model("fauxnet", DEFAULT_ARGS["fauxnet"])
            paper = build_model("paper-cnn", {**DEFAULT_ARGS["paper-cnn"], "input_size": size})
            fast = images_per_second(default, size, batch, device, args.seconds)
            slow = images_per_second(paper, size, batch, device, args.seconds)
            print(
                f"  fauxnet  size {size:4d} batch {batch:4d}: {fast:9.1f} images/s | "
                f"paper-cnn {slow:9.1f} images/s | ratio {fast / slow:5.2f}x"
            )


if __name__ == "__main__":
    main()
