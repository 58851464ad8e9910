"""Does the model read the background instead of the face? Two probes on the portrait sets.

    python -m training.probes.background effnet-faces --data ../shared/data --split val

`generated_faces` (GAN portraits) are almost all on plain studio backgrounds; the real portrait sets are not. A model
that learnt "plain background = fake" would (1) still rank the fakes above the reals with every face masked out,
and (2) flag real portraits once their background is made plain. Both are measured at the model's own threshold:
faces masked (each face's widened box filled with the image's median colour) and plain background (everything
outside an ellipse around the faces filled with the mean colour of the image's border).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageStat

from scanner.detector.checkpoint import load_model
from scanner.detector.faces import Box, FaceFinder
from scanner.detector.rates import roc_auc, share_at_or_above
from scanner.registry import resolve_model
from training.evaluate import score_samples, select_samples

FAKES, REALS = ("generated_faces",), ("celebahq_real", "unsplash_people_real")


def widened(box: Box, factor: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box grown `factor` times about its centre, inside the image."""
    cx, cy, half = box.x + box.w / 2, box.y + box.h / 2, max(box.w, box.h) * factor / 2
    return (
        max(0, round(cx - half)),
        max(0, round(cy - half)),
        min(size[0], round(cx + half)),
        min(size[1], round(cy + half)),
    )


def border_colour(image: Image.Image) -> tuple[int, ...]:
    """The mean colour of the image's outer tenth."""
    w, h = image.size
    edge = max(1, min(w, h) // 10)
    mask = Image.new("L", image.size, 255)
    ImageDraw.Draw(mask).rectangle((edge, edge, w - edge - 1, h - edge - 1), fill=0)
    return tuple(round(v) for v in ImageStat.Stat(image, mask).mean)


class Edits:
    """The two probe edits, finding faces with the model's own settings."""

    def __init__(self, finder: FaceFinder) -> None:
        self.finder = finder
        self.without_face = 0

    def boxes(self, image: Image.Image) -> list[Box]:
        """The faces the model would find."""
        found = self.finder.find(image)
        self.without_face += not found
        return found

    def mask_faces(self, image: Image.Image) -> Image.Image:
        """Every face's 1.6x box filled with the image's median colour."""
        out = image.convert("RGB")
        fill = tuple(round(v) for v in ImageStat.Stat(out).median)
        draw = ImageDraw.Draw(out)
        for box in self.boxes(out):
            draw.rectangle(widened(box, 1.6, out.size), fill=fill)
        return out

    def plain_background(self, image: Image.Image) -> Image.Image:
        """Everything outside an ellipse around each face filled with the border's mean colour."""
        image = image.convert("RGB")
        keep = Image.new("L", image.size, 0)
        for box in self.boxes(image):
            ImageDraw.Draw(keep).ellipse(widened(box, 2.0, image.size), fill=255)
        return Image.composite(image, Image.new("RGB", image.size, border_colour(image)), keep)


def main() -> None:
    """Score the portrait sets stored, faces masked and on a plain background; print AUC and shares flagged."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", default="val", help="val (the model's validation split) or all")
    args = parser.parse_args()
    path = resolve_model(args.model)
    loaded = load_model(path, "cpu")
    edits = Edits(FaceFinder(loaded.preprocess.search.faces))
    samples = select_samples([str(args.data / name) for name in FAKES + REALS], path, args.split)
    labels = [s.label for s in samples]
    print(f"{args.model} ({loaded.version}), threshold {loaded.threshold:.4f}; {len(samples)} images ({args.split})")
    print(
        "| images | AUC GAN portraits vs real portraits | GAN caught | "
        + " | ".join(f"{r} flagged" for r in REALS)
        + " |"
    )
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in REALS) + " |")
    for name, edit in (
        ("stored", None),
        ("faces masked", edits.mask_faces),
        ("plain background", edits.plain_background),
    ):
        scores = score_samples(loaded, samples, edit, workers=0)
        caught = share_at_or_above([s for s, y in zip(scores, labels) if y == 1], loaded.threshold)
        flagged = [
            share_at_or_above([s for s, x in zip(scores, samples) if x.dataset == real], loaded.threshold)
            for real in REALS
        ]
        shares = " | ".join(f"{f:.1%}" for f in flagged)
        print(f"| {name} | {roc_auc(labels, scores):.3f} | {caught:.1%} | {shares} |", flush=True)
    print(f"images without a face found (per edit pass): {edits.without_face}")


if __name__ == "__main__":
    main()
