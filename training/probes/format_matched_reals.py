"""Copies of sdfd_sd21_ffhq's FFHQ reals stored as ffhq_stylegan_256 stores its own (256 px, JPEG q75, 4:2:0).

    python -m training.probes.format_matched_reals OUT [--data ../shared/data] [--seed 1] [--max-per-dataset 5000]

The two sets' reals are different FFHQ faces (00000-00599 and 00600-00999) in different formats (q95 after a q75 pass
at 1024 px, against q75 once). Written: OUT/ffhq_q75_sdfd_train/real/ (the reals of sdfd_sd21_ffhq's training split,
for `scanner train`) and OUT/ffhq_q75_sdfd_val/real/ (its validation reals, to score, never to train on), split as
`scanner train --seed S --max-per-dataset N` splits that set. OUT must lie outside the repository: these are copies of
the shared images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from training.data import find_samples, limit_per_dataset, split_samples

SOURCE = "sdfd_sd21_ffhq"


def main() -> None:
    """Write both folders and print their counts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-per-dataset", type=int, default=5000)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    args = parser.parse_args()
    samples = limit_per_dataset(find_samples(args.data / SOURCE), args.max_per_dataset, args.seed)
    train, val = split_samples(samples, args.val_fraction, args.seed)
    for name, part in (("ffhq_q75_sdfd_train", train), ("ffhq_q75_sdfd_val", val)):
        folder = args.out / name / "real"
        folder.mkdir(parents=True, exist_ok=True)
        reals = [sample for sample in part if sample.label == 0]
        for sample in reals:
            with Image.open(sample.path) as image:
                image.convert("RGB").save(folder / sample.path.name, "JPEG", quality=75, subsampling=2)
        print(f"{folder}: {len(reals)} images")


if __name__ == "__main__":
    main()
