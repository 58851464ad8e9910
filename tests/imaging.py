"""Small generated images for tests: smooth 'real' pictures and noisy 'fake' ones, plus hostile files."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(seed: int, size: int = 48) -> Image.Image:
    """A smooth colour gradient with a soft blob: the 'real' class of the toy task."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 1, 3)
    slope = rng.uniform(-0.5, 0.5, (3, 2))
    channels = [np.clip(base[c] + slope[c, 0] * x + slope[c, 1] * y, 0, 1) for c in range(3)]
    return Image.fromarray((np.stack(channels, -1) * 255).astype(np.uint8), "RGB")


def noisy_image(seed: int, size: int = 48) -> Image.Image:
    """The same kind of gradient with strong high-frequency noise: the 'fake' class."""
    rng = np.random.default_rng(seed + 10_000)
    array = np.asarray(smooth_image(seed, size), dtype=np.int16)
    array = array + rng.integers(-90, 90, array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """Image -> bytes in `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_dataset(root: Path, per_class: int, size: int = 48, seed: int = 0) -> Path:
    """A real/ + fake/ folder of generated PNGs."""
    for label, maker in (("real", smooth_image), ("fake", noisy_image)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            maker(seed + index, size).save(folder / f"{label}_{index:04d}.png")
    return root


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A tiny PNG whose header claims a huge greyscale image (a decompression bomb)."""
    raw = zlib.compress(b"\x00" * (width + 1) * 8)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def variants(seed: int = 0) -> dict[str, bytes]:
    """Valid images in awkward modes that must all scan."""
    rgb = smooth_image(seed, 40)
    frames = [smooth_image(seed + i, 40) for i in range(3)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    sixteen = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype("<u2"))
    return {
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "grey.png": encode(rgb.convert("L")),
        "palette.png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE)),
        "alpha.png": encode(rgb.convert("RGBA")),
        "sixteen.png": encode(sixteen),
        "animated.gif": animated.getvalue(),
        "photo.webp": encode(rgb, "WEBP"),
        "photo.avif": encode(rgb, "AVIF"),
        "exif.jpg": encode(rgb, "JPEG", exif=_rotated_exif()),
    }


def _rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def corruptions(seed: int, count: int) -> list[bytes]:
    """Malformed files: truncations, bit flips and wrong headers of valid JPEG/PNG/GIF bytes."""
    rng = random.Random(seed)
    sources = [encode(noisy_image(i, 32), fmt) for i, fmt in enumerate(["JPEG", "PNG", "GIF", "WEBP", "BMP"])]
    result = []
    for index in range(count):
        data = bytearray(rng.choice(sources))
        kind = index % 3
        if kind == 0:
            data = data[: rng.randint(1, max(1, len(data) - 1))]
        elif kind == 1:
            for _ in range(rng.randint(1, 20)):
                position = rng.randrange(len(data))
                data[position] ^= 1 << rng.randrange(8)
        else:
            data[: rng.randint(2, 12)] = bytes(rng.randrange(256) for _ in range(rng.randint(2, 12)))
        result.append(bytes(data))
    return result


def drawn_face(seed: int, size: int = 160, noisy: bool = False) -> Image.Image:
    """A simple drawn face (skin oval, eyes, brows, nose, mouth) that OpenCV's frontal cascade finds."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    scale = size / 256 * rng.uniform(0.75, 0.95)
    cx, cy = size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-8, 8)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(60, 160, 3)))
    pen = ImageDraw.Draw(image)

    def oval(x0: float, y0: float, x1: float, y1: float, fill: tuple[int, int, int]) -> None:
        pen.ellipse([cx + x0 * scale, cy + y0 * scale, cx + x1 * scale, cy + y1 * scale], fill=fill)

    oval(-60, -80, 60, 85, (225, 185, 160))
    oval(-40, -30, -12, -14, (40, 30, 30))
    oval(12, -30, 40, -14, (40, 30, 30))
    for x0, x1 in ((-45, -8), (8, 45)):
        pen.rectangle([cx + x0 * scale, cy - 45 * scale, cx + x1 * scale, cy - 38 * scale], fill=(60, 40, 30))
    oval(-8, -5, 8, 22, (200, 150, 130))
    oval(-26, 35, 26, 50, (120, 50, 50))
    image = image.filter(ImageFilter.GaussianBlur(2 * size / 256))
    if noisy:
        array = np.asarray(image, dtype=np.int16) + rng.integers(-60, 60, (size, size, 3))
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    return image


def write_face_dataset(root: Path, per_class: int, size: int = 160) -> Path:
    """A real/ + fake/ folder of drawn faces: clean ones are real, noisy ones fake."""
    for label in ("real", "fake"):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            drawn_face(index + (1000 if label == "fake" else 0), size, noisy=label == "fake").save(
                folder / f"{label}_{index:03d}.png"
            )
    return root


def on_page(
    photo: Image.Image, colour: tuple[int, int, int] = (255, 255, 255), margin: int = 16, bar: int = 30
) -> tuple[Image.Image, tuple[int, int]]:
    """`photo` as a screenshot of a post shows it: on a flat page, a line of text above it; and where it lies."""
    from PIL import ImageDraw

    page = Image.new("RGB", (photo.width + 2 * margin, photo.height + 2 * margin + bar), colour)
    page.paste(photo, (margin, margin + bar))
    ink = tuple(255 - value for value in colour)
    ImageDraw.Draw(page).text((margin, margin), "Posted 2h ago . 1.2k likes", fill=ink)
    return page, (margin, margin + bar)
