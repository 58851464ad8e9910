"""Generate the demo images in samples/ with our own code (no third-party images).

    .venv/bin/python scripts/make_samples.py samples

Drawn faces stand in for photos ("real"); "edited" copies have a region spliced in from another face, the
kind of local manipulation the ciplab set contains. One truncated file and one text file show how bad
input is reported. These are for trying the pipeline, not for judging the model.
"""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter


def draw_face(seed: int, size: int = 256) -> Image.Image:
    """A simple synthetic portrait: background gradient, skin-toned face, eyes, nose and mouth."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    top, bottom = [tuple(rng.randint(40, 220) for _ in range(3)) for _ in range(2)]
    for y in range(size):
        mix = y / size
        draw.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * mix) for a, b in zip(top, bottom)))
    skin = (rng.randint(150, 235), rng.randint(110, 190), rng.randint(90, 160))
    draw.ellipse([48, 28, 208, 232], fill=skin)
    eye_y = rng.randint(95, 115)
    for eye_x in (96, 160):
        draw.ellipse([eye_x - 14, eye_y - 8, eye_x + 14, eye_y + 8], fill=(250, 250, 250))
        draw.ellipse([eye_x - 6, eye_y - 6, eye_x + 6, eye_y + 6], fill=tuple(rng.randint(20, 120) for _ in range(3)))
    draw.line([(128, eye_y + 15), (122, eye_y + 50), (134, eye_y + 52)], fill=(120, 80, 70), width=3)
    draw.arc([100, 160, 156, 200], 10, 170, fill=(150, 50, 60), width=5)
    noise = Image.effect_noise((size, size), rng.uniform(6, 14)).convert("RGB")
    return Image.blend(image, noise, 0.08).filter(ImageFilter.GaussianBlur(0.6))


def splice(base: Image.Image, donor: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """Paste a region of `donor` into `base`, as a face edit would."""
    edited = base.copy()
    edited.paste(donor.crop(box).filter(ImageFilter.SHARPEN), box[:2])
    return edited


def main(out: Path) -> None:
    """Write real_*.jpg, edited_*.jpg, a truncated JPEG and a text file."""
    out.mkdir(parents=True, exist_ok=True)
    faces = [draw_face(seed) for seed in range(8)]
    for index, face in enumerate(faces[:5]):
        face.save(out / f"real_{index}.jpg", quality=90)
    for index in range(4):
        edited = splice(faces[index], faces[index + 4], (76, 80, 180, 130))
        edited.save(out / f"edited_{index}.jpg", quality=90)
    buffer = io.BytesIO()
    faces[7].save(buffer, format="JPEG", quality=90)
    (out / "truncated.jpg").write_bytes(buffer.getvalue()[:2000])
    (out / "README.txt").write_text("Demo images drawn by scripts/make_samples.py; not photos of people.\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "samples"))
