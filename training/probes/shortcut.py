"""How much of each data set can be told apart by compression alone (no pixels looked at)?

    .venv/bin/python -m training.probes.shortcut ../shared/data/*/

Prints the ROC AUC of "bytes per pixel" as a fake score, as stored and after re-encoding every image at
JPEG quality 90. A high stored AUC that collapses after re-encoding is a compression shortcut a CNN can
learn instead of the face (lfw_faceswap's reals are q~90, its fakes q~95).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

from training.data import find_samples
from training.metrics import roc_auc


def bytes_per_pixel(data: bytes, reencode: bool) -> float:
    """File size over pixel count, optionally after a uniform JPEG q90 re-encode."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if reencode:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=90)
            data = buffer.getvalue()
    return len(data) / (width * height)


def main(folders: list[str]) -> None:
    """One line per folder."""
    for folder in folders:
        samples = find_samples(Path(folder))[:4000]
        labels = [s.label for s in samples]
        raw = [s.path.read_bytes() for s in samples]
        stored = roc_auc(labels, [bytes_per_pixel(d, False) for d in raw])
        uniform = roc_auc(labels, [bytes_per_pixel(d, True) for d in raw])
        name = Path(folder).name
        print(f"{name:28s} n={len(samples):5d}  AUC(bytes/pixel) stored {stored:.3f}  q90 re-encoded {uniform:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
