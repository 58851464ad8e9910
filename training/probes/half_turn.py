"""How often a half-turn check would search twice and turn an image over, as stored and upside down.

    .venv/bin/python -m training.probes.half_turn effnet-faces [--data ../shared/data] [--checks 3,1 6,1 6,0]

For every validation image of the eight shared sets (the checkpoint's split), as stored and turned upside down, the
Haar cascade's surest upright face and its confidence are found, and the confidence of the surest face in the image
turned over. A check BELOW,MARGIN searches twice where an upright face is found with a confidence under BELOW, and
turns the image over where the turned search is surer by more than MARGIN: printed per check, the share searched
twice (stored), the stored images turned over (a cost) and the upside-down images with a false upright find turned
back (the gain). Images are decoded as stored (EXIF orientation applied), without the page search.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

from PIL import Image, ImageOps

from scanner.detector.checkpoint import load_model
from scanner.detector.faces import FaceFinder
from scanner.registry import resolve_model
from training.evaluate import select_samples
from training.probes.report import SETS


def confidences(finder: FaceFinder, image: Image.Image) -> tuple[bool, float, float]:
    """Whether an upright face is found, its confidence, and the surest face's confidence upside down."""
    boxes, upright = finder.find_sure(image)
    return bool(boxes), upright, finder.find_sure(image, 180)[1] if boxes else -math.inf


def main() -> None:
    """Search every validation image twice, then print the table per check."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--checks", nargs="+", default=["3,1", "4.5,1", "6,1", "8,1", "1000,1", "6,0"])
    args = parser.parse_args()
    model = resolve_model(args.model)
    finder = FaceFinder(load_model(model, "cpu").preprocess.search.faces)
    samples = select_samples([str(args.data / name) for name in SETS], model, "val")
    rows: dict[str, list[tuple[str, int, bool, float, float]]] = {"stored": [], "upside down": []}
    for sample in samples:
        image = ImageOps.exif_transpose(Image.open(sample.path)).convert("RGB")
        for edit, copy in (("stored", image), ("upside down", image.transpose(Image.Transpose.ROTATE_180))):
            rows[edit].append((sample.dataset, sample.label, *confidences(finder, copy)))
    found = [row for row in rows["upside down"] if row[2]]
    print(f"{len(samples)} images; upside down, {len(found)} have a (false) upright find")
    print("| check | searched twice, stored | stored images turned over | upside-down finds turned back |")
    print("| --- | ---: | ---: | ---: |")
    for check in args.checks:
        below, margin = (float(v) for v in check.split(","))
        weak = [row for row in rows["stored"] if row[2] and row[3] < below]
        turned = [row for row in weak if row[4] > row[3] + margin]
        back = [row for row in found if row[3] < below and row[4] > row[3] + margin]
        print(f"| {check} | {len(weak) / len(samples):.1%} | {len(turned)} | {len(back)} |")
        print("    stored turned over:", dict(Counter(f"{row[0]}:{'fake' if row[1] else 'real'}" for row in turned)))


if __name__ == "__main__":
    main()
