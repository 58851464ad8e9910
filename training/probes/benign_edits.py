"""Do everyday edits of a photo move the verdicts? Per source, at the model's own threshold, on its validation split.

    .venv/bin/python -m training.probes.benign_edits effnet-faces --edits stored,sharpen,half --data ../shared/data

Real photos reach a moderator re-saved, resized (thumbnails, avatars), sharpened or cropped, and none of that makes
them fake: each edit is applied to every validation image of the eight shared sets, real and fake alike, and the share
flagged is printed per source (FPR on reals, TPR on fakes) with the GAN-vs-HQ-real AUC. A real source whose FPR rises
well past the stored one under an edit is a false-positive trap users will meet.
Writes the scores to --out (JSON; default: runs/NAME_benign_edits.json).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from scanner.detector.checkpoint import load_model
from scanner.registry import resolve_model
from training.augment import add_noise, downscale, reencode
from training.evaluate import score_samples, select_samples
from training.probes.report import RUNS, goals, sets_of


def cropped(image: Image.Image, keep: float) -> Image.Image:
    """The centre `keep` share of each side."""
    dx, dy = round(image.width * (1 - keep) / 2), round(image.height * (1 - keep) / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def thumbnail(image: Image.Image, side: int) -> Image.Image:
    """Shrunk (Lanczos) so that the shorter side is `side` px, as an avatar or a thumbnail; never enlarged."""
    return downscale(image, side / min(image.size), Image.Resampling.LANCZOS) if min(image.size) > side else image


def screenshot(image: Image.Image) -> Image.Image:
    """The photo as a screenshot of a post shows it: on a white page with a text bar above, never re-compressed."""
    margin, bar = max(8, image.width // 12), max(16, image.height // 6)
    page = Image.new("RGB", (image.width + 2 * margin, image.height + 2 * margin + bar), "white")
    page.paste(image.convert("RGB"), (margin, margin + bar))
    draw = ImageDraw.Draw(page)
    draw.text((margin, margin), "Posted 2h ago . 1.2k likes", fill=(20, 20, 20))
    draw.rectangle((margin, margin + bar // 2, page.width - margin, margin + bar // 2 + 2), fill=(200, 200, 200))
    return page


def meme(image: Image.Image) -> Image.Image:
    """The photo under a white caption bar (a fifth of its height) with a line of black text, as memes are made."""
    bar = max(16, image.height // 5)
    page = Image.new("RGB", (image.width, image.height + bar), "white")
    page.paste(image.convert("RGB"), (0, bar))
    ImageDraw.Draw(page).text((4, bar // 3), "when the photo is too real", fill=(0, 0, 0))
    return page


EDITS: dict[str, Callable[[Image.Image], Image.Image] | None] = {
    "stored": None,
    "jpeg95": lambda im: reencode(im, 95),
    "jpeg60": lambda im: reencode(im, 60),
    "webp80": lambda im: reencode(im, 80, "WEBP"),
    "half": lambda im: downscale(im, 0.5, Image.Resampling.LANCZOS),
    "three-quarters": lambda im: downscale(im, 0.75, Image.Resampling.LANCZOS),
    "thumb-112": lambda im: thumbnail(im, 112),
    "thumb-90": lambda im: thumbnail(im, 90),
    "upscaled": lambda im: im.resize((round(im.width * 1.5), round(im.height * 1.5)), Image.Resampling.BICUBIC),
    "sharpen": lambda im: im.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2)),
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(0.8)),
    "brighter": lambda im: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.1)).enhance(1.15),
    "crop80": lambda im: cropped(im, 0.8),
    "jpeg40": lambda im: reencode(im, 40),
    "gray": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "noise": lambda im: add_noise(im.convert("RGB"), 6.0, seed=im.width * 7919 + im.height),  # seeded by the size
    "smooth": lambda im: im.filter(ImageFilter.MedianFilter(3)),
    "screenshot": screenshot,
    # a phone's screenshot: the photo drawn at twice its pixels (device pixel ratio 2), then sent on as JPEG q90
    "screenshot-phone": lambda im: reencode(
        screenshot(im.resize((2 * im.width, 2 * im.height), Image.Resampling.LANCZOS)), 90
    ),
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rot180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "meme": meme,
}


def row(name: str, result: dict[str, Any], seconds: float, sets: tuple[str, ...]) -> str:
    """One markdown row: FPR per real source, TPR per fake source, GAN AUC."""
    cells = [f"{result[s + ':fpr']:.3f}" if result[s + ":fpr"] is not None else "-" for s in sets]
    cells += [f"{result[s + ':tpr']:.3f}" if result[s + ":tpr"] is not None else "-" for s in sets]
    return f"| {name} | " + " | ".join(cells) + f" | {result['gan_vs_hq_real_auc']:.3f} | {seconds:.0f} s |"


def main() -> None:
    """Score the validation split once per edit and print one row each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint or registered name (its validation split is used)")
    parser.add_argument("--edits", default=",".join(EDITS), help=f"comma-separated, from: {', '.join(EDITS)}")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    edits = args.edits.split(",")
    if unknown := [e for e in edits if e not in EDITS]:
        parser.error(f"unknown edit(s): {', '.join(unknown)}")
    model = resolve_model(args.model)
    loaded = load_model(model, "cpu")
    sets = sets_of(model)
    samples = select_samples([str(args.data / name) for name in sets], model, "val")
    short = [s.split("_")[0] for s in sets]
    print(f"{loaded.version}, threshold {loaded.threshold:.4f}; FPR on each source's reals, then TPR on its fakes")
    print("| edit | " + " | ".join(f"FPR {s}" for s in short) + " | " + " | ".join(f"TPR {s}" for s in short)
          + " | GAN vs HQ AUC | time |")  # fmt: skip
    print("| --- |" + " ---: |" * (2 * len(sets) + 2))
    results = {}
    for name in edits:
        start = time.perf_counter()
        scores = score_samples(loaded, samples, EDITS[name], 64, 1)
        measured = goals(samples, scores, loaded.threshold, sets)
        results[name] = {"scores": scores, "goals": measured}
        print(row(name, measured, time.perf_counter() - start, sets), flush=True)
    out = args.out or RUNS / f"{model.stem}_benign_edits.json"  # runs/ is ignored by git, unlike the weights
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model_version": loaded.version, "edits": results}) + "\n")
    print(f"\nscores: {out}")


if __name__ == "__main__":
    main()
