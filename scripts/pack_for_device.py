"""Pack the training images a run would select into tar parts small enough to carry to a GPU machine.

The device tool carries at most 64 MiB (working tree included) per call, so the data goes in parts, one per
call, in the order given (most needed first). Each part keeps paths relative to the data root, with every
set's manifest.csv, so `load_splits` on the unpacked copy selects and splits exactly as on the original.

    python scripts/pack_for_device.py --data ../shared/data --out .gpudata --part-mb 34 --max-per-dataset 5000
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

from training.data import find_samples, limit_per_dataset

ORDER = (
    "ffhq_stylegan_256",
    "sdfd_sd21_ffhq",
    "hardfakevsrealfaces",
    "diffusion_people_multi",
    "real_scenes_people",
    "lfw_faceswap",
    "ciplab_real_and_fake_face",
    "cifake",
)


def selected_files(data: Path, max_per_dataset: int, seed: int) -> list[Path]:
    """Every file a training run with these caps reads, set by set in ORDER, manifests first."""
    files: list[Path] = []
    names = [name for name in ORDER if (data / name).is_dir()]
    names += sorted(p.name for p in data.iterdir() if p.is_dir() and p.name not in ORDER)
    for name in names:
        samples = limit_per_dataset(find_samples(data / name), max_per_dataset, seed)
        manifest = data / name / "manifest.csv"
        files += ([manifest] if manifest.is_file() else []) + sorted(s.path for s in samples)
    return files


# Bytes a member may add beyond its content: a pax header (the float mtime), its own header, block padding.
MEMBER_OVERHEAD = 3 * tarfile.BLOCKSIZE
# Bytes close() adds: two end-of-archive blocks, then padding to a whole record.
CLOSING = 2 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE


def write_parts(files: list[Path], data: Path, out: Path, part_bytes: int, first_bytes: int) -> list[Path]:
    """Write tar parts of at most `part_bytes` each (the first `first_bytes`); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    archive: tarfile.TarFile | None = None
    for path in files:
        limit = first_bytes if len(parts) <= 1 else part_bytes
        needed = path.stat().st_size + MEMBER_OVERHEAD + CLOSING
        if archive is None or archive.offset + needed > limit:
            if archive is not None:
                archive.close()
            parts.append(out / f"part-{len(parts) + 1:02d}.tar")
            archive = tarfile.open(parts[-1], "w")
        archive.add(path, arcname=path.relative_to(data).as_posix())
    if archive is not None:
        archive.close()
    return parts


def main() -> None:
    """Parse arguments, pack, print each part's size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(".gpudata"))
    parser.add_argument("--part-mb", type=float, default=34.0)
    parser.add_argument("--first-mb", type=float, default=28.0, help="Smaller first part: room for wheels.")
    parser.add_argument("--max-per-dataset", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    files = selected_files(args.data.resolve(), args.max_per_dataset, args.seed)
    parts = write_parts(
        files, args.data.resolve(), args.out, int(args.part_mb * 1_000_000), int(args.first_mb * 1_000_000)
    )
    for part in parts:
        print(f"{part}  {part.stat().st_size / 1e6:.1f} MB")
    print(f"{len(files)} files in {len(parts)} parts")


if __name__ == "__main__":
    main()
