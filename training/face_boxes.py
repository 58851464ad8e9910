"""Find the faces of every training image once and write them to a file `scanner train --face-boxes` reads.

Face finding is deterministic, so a training run can take the boxes from this file instead of running the
cascade in every DataLoader worker (and on a machine whose OpenCV lacks the Haar cascades, at all).

    python -m training.face_boxes ../shared/data/* --out runs/face-boxes.json --max-per-dataset 5000
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from scanner.detector.faces import Box, FaceFinder, save_boxes
from scanner.detector.preprocess import Preprocess, decode_image
from scanner.detector.views import find_faces
from training.data import Sample, find_samples, limit_per_dataset


def boxes_of(samples: list[Sample], preprocess: Preprocess) -> list[tuple[str, list[Box]]]:
    """(key, boxes) for each sample, found exactly as the training datasets find them."""
    finder = FaceFinder(preprocess.search.faces)
    found = []
    for sample in samples:
        image = decode_image(sample.path.read_bytes(), preprocess.decoding.decode_side).image
        found.append((sample.key, find_faces(image, preprocess.search, finder)))
    return found


def main() -> None:
    """Parse arguments, find faces on every core, write the file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--views", default="faces+patch")
    parser.add_argument("--max-per-dataset", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    preprocess = Preprocess().changed(size=args.size, max_side=args.max_side, views=args.views)
    samples: list[Sample] = []
    for directory in args.data_dirs:
        samples += limit_per_dataset(find_samples(directory), args.max_per_dataset, args.seed)
    chunks = [samples[i :: args.jobs * 8] for i in range(args.jobs * 8)]
    with ProcessPoolExecutor(args.jobs) as pool:
        boxes = dict(pair for part in pool.map(boxes_of, chunks, [preprocess] * len(chunks)) for pair in part)
    save_boxes(args.out, preprocess.search.faces, boxes)
    with_faces = sum(1 for found in boxes.values() if found)
    print(f"{args.out}: {len(boxes)} images, {with_faces} with at least one face")


if __name__ == "__main__":
    main()
