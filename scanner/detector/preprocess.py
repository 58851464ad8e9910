"""The one preprocessing path (decode, orient, RGB, resize, normalise) for training and inference."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from scanner.detector.faces import FaceSettings, HalfTurnCheck
from scanner.detector.pages import PageSettings

DEFAULT_MAX_PIXELS = 64_000_000
# A progressive JPEG is decoded scan by scan, each scan a pass over every block of the image: a 0.6 MB file of
# 2,000 tiny scans at 64 Mpx took 76 s to decode. Encoders write about 10 (up to a few dozen with custom scripts).
MAX_JPEG_SCANS = 100
# A TIFF of one-pixel rows, each its own strip (6.2 million of them in 47 MB), took 33 s and 2.8 GB: Pillow reads every
# strip's offset and size into Python objects before decoding. Ordinary files have one strip per 8-64 rows or tiles.
MAX_TIFF_CHUNKS = 65_536
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker after entropy-coded data (not stuffing, RSTn, fill)
# The one list of image file name suffixes: the scanner's directory walk and `scanner train` both use it.
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".ico", ".jp2", ".jfif", ".avif",
})  # fmt: skip
FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif",
                 "PPM": ".ppm", "ICO": ".ico", "JPEG2000": ".jp2", "AVIF": ".avif"}  # fmt: skip
# The formats decoded (Pillow's names; JPEG opens MPO too); anything else Pillow opens is an unsupported_format row.
DECODED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP", "PPM", "ICO", "JPEG2000")
HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
MAGIC_PREFIXES = (
    b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
    b"\x00\x00\x01\x00", b"\x00\x00\x00\x0cjP  ", b"P1", b"P2", b"P3", b"P4", b"P5", b"P6",
)  # fmt: skip


def has_image_magic(head: bytes) -> bool:
    """True when the first bytes carry the signature of an image format."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:12] in (b"ftypavif", b"ftypavis"):  # AVIF: an ISO media file of the AVIF brands
        return True
    return any(head.startswith(prefix) for prefix in MAGIC_PREFIXES)


class ImageRejected(Exception):
    """An input that cannot be turned into a model tensor; `code` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# center: one centre crop (v1); faces: the whole image scaled + face crops; faces+patch: also a centre patch
# at native pixels (up to max_side), where generator traces that scaling blurs survive.
VIEW_POLICIES = ("center", "faces", "faces+patch")


# The kinds of view a model scores, with the words pages use for them, in the order an image's views come and the
# order a checkpoint stores their offsets in.
VIEW_WORDS = {"whole": "whole image", "patch": "native patch", "face": "face"}
VIEW_KINDS = tuple(VIEW_WORDS)
# The number format the network runs in at inference (bfloat16: faster where the device has bf16 kernels).
PRECISIONS = ("float32", "bfloat16")
# Turns (degrees counter-clockwise) an image with no upright face may be searched at for faces; `--turn-faces` alone
# means the two quarter turns.
TURN_CHOICES = (90, 180, 270)
QUARTER_TURNS = (90, 270)


def check_turns(turns: Any) -> tuple[int, ...]:
    """A list of turns -> the sorted tuple, or ValueError unless each is one of TURN_CHOICES, once."""
    if not isinstance(turns, list | tuple) or not turns or len(set(turns)) != len(turns):
        raise ValueError(f"turns must list one or more of {TURN_CHOICES} once each, not {turns!r}")
    if any(isinstance(t, bool) or t not in TURN_CHOICES for t in turns):
        raise ValueError(f"turns must be among {TURN_CHOICES} (degrees counter-clockwise), not {turns!r}")
    return tuple(sorted(int(t) for t in turns))


def check_half_turn(views: str, turns: Any, half_turn: HalfTurnCheck | None) -> None:
    """ValueError where a half-turn check is set on a model that does not search faces at the half turn."""
    if half_turn is not None and (views not in ("faces", "faces+patch") or 180 not in turns):
        raise ValueError("a half-turn check needs a face-aware model that searches the half turn (--turn 180)")


def _changed_settings(part: Any) -> dict[str, Any]:
    """A settings dataclass's fields that differ from their defaults, as plain types."""
    data = {}
    for item in fields(part):
        value = getattr(part, item.name)
        default = item.default if item.default is not MISSING else item.default_factory()  # type: ignore[misc,operator]
        if value != default:
            data[item.name] = _WRITERS.get(item.name, _plain)(value)
    return data


@dataclass(frozen=True)
class Decoding:
    """How an image becomes model inputs: the input side, the native-pixel cap, resampling and normalisation."""

    size: int = 128
    max_side: int = 0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: str = "bilinear"

    @property
    def decode_side(self) -> int:
        """The shorter side the image is brought to before the centre crop (at most)."""
        return max(self.size, self.max_side)


@dataclass(frozen=True)
class ViewSearch:
    """What the model looks at: its view policy, where faces are searched, the page cut and the turns."""

    views: str = "center"
    faces: FaceSettings = field(default_factory=FaceSettings)
    patch_min_side: int = 0  # faces+patch: the native patch is scored only on images whose shorter side exceeds this
    page: PageSettings | None = None  # score the photo inside a flat page (screenshots, letterboxes), not the page
    turns: tuple[int, ...] = ()  # with no upright face found, look for faces at these turns (TURN_CHOICES)
    half_turn: HalfTurnCheck | None = None  # with a weak upright face found, look upside down too (needs turn 180)

    @property
    def uses_faces(self) -> bool:
        """True when the model scores face crops besides the whole image."""
        return self.views in ("faces", "faces+patch")

    @property
    def image_views(self) -> int:
        """How many views of the whole image come before the faces: the scaled image, and a native-pixel patch."""
        return 2 if self.views == "faces+patch" else 1


@dataclass(frozen=True)
class Scoring:
    """How view scores become the image's score: offsets per view kind, mirroring and its band, the precision."""

    view_offsets: dict[str, float] = field(default_factory=dict)  # logit offset per view kind; {} = raw scores
    mirror: tuple[str, ...] = ()  # view kinds also scored as their mirror image, the two logits averaged
    precision: str = "float32"  # the number format the offsets and threshold were fitted in (PRECISIONS)
    # (low, high) in calibrated logits: only views of a mirrored kind whose plain score lies inside are scored mirrored
    # too (the others are far from the threshold, where the average changes no verdict); () = every such view
    mirror_band: tuple[float, ...] = ()

    def offset(self, kind: str) -> float:
        """The logit offset of a view kind (0 where the model has none)."""
        return self.view_offsets.get(kind, 0.0)


def offsets_by_kind(stored: Any) -> dict[str, float]:
    """Stored view offsets (a list in VIEW_KINDS order, or a mapping) -> {kind: offset}."""
    pairs = stored.items() if isinstance(stored, dict) else zip(VIEW_KINDS, stored)
    return {str(kind): float(value) for kind, value in pairs}


def stored_offsets(offsets: dict[str, float]) -> list[float]:
    """{kind: offset} -> the stored list in VIEW_KINDS order, as far as the last kind given (the version hash reads
    this list, so a kind registered later leaves older models' versions unchanged)."""
    given = [number for number, kind in enumerate(VIEW_KINDS) if kind in offsets]
    return [offsets.get(kind, 0.0) for kind in VIEW_KINDS[: given[-1] + 1]] if given else []


# Each stored setting's reader (checkpoints hold lists and mappings), by the part that holds it.
_READERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "decoding": {"size": int, "max_side": int, "mean": tuple, "std": tuple, "resample": str},
    "search": {
        "views": str, "faces": lambda faces: FaceSettings(**faces), "patch_min_side": int,
        "page": PageSettings.from_dict, "turns": check_turns, "half_turn": HalfTurnCheck.from_dict,
    },
    "scoring": {
        "view_offsets": offsets_by_kind,
        "mirror": lambda kinds: tuple(str(kind) for kind in kinds), "precision": str,
        "mirror_band": lambda band: tuple(float(v) for v in band),
    },
}  # fmt: skip
SETTING_NAMES = frozenset(name for readers in _READERS.values() for name in readers)
# Settings stored in another shape than their plain form (the rest: `_plain`).
_WRITERS: dict[str, Callable[[Any], Any]] = {"view_offsets": stored_offsets}


@dataclass(frozen=True)
class Preprocess:
    """Every setting a checkpoint stores beside its weights, in three parts: decoding, view search, scoring."""

    decoding: Decoding = field(default_factory=Decoding)
    search: ViewSearch = field(default_factory=ViewSearch)
    scoring: Scoring = field(default_factory=Scoring)

    def to_dict(self) -> dict[str, Any]:
        """Plain types for the checkpoint, one flat mapping: the settings that differ from their defaults (the
        schema holds those)."""
        return {**_changed_settings(self.decoding), **_changed_settings(self.search), **_changed_settings(self.scoring)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        """Rebuild from a current-schema checkpoint's flat mapping (missing settings take their defaults)."""
        readers = {name: reader for part in _READERS.values() for name, reader in part.items()}
        return cls().changed(**{name: readers[name](value) for name, value in data.items() if name in readers})

    def changed(self, **settings: Any) -> Preprocess:
        """A copy with the named settings (of any part) replaced."""
        if unknown := sorted(set(settings) - SETTING_NAMES):
            raise TypeError(f"unknown preprocessing setting(s): {', '.join(unknown)}")
        parts = {
            part: replace(getattr(self, part), **{k: v for k, v in settings.items() if k in readers})
            for part, readers in _READERS.items()
        }  # fmt: skip
        return Preprocess(**parts)


def _plain(value: Any) -> Any:
    """A setting as JSON-like plain types: dataclasses as mappings, tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class DecodedImage:
    """A decoded RGB image plus what was learnt about the file."""

    image: Image.Image
    format: str
    width: int
    height: int


def _high_bit_to_8bit(image: Image.Image, target_size: int) -> Image.Image:
    """16/32-bit greyscale to 8 bits within a bounded memory: subsample towards 2x the target size first
    (a strided view, no copy), then scale only the small array in float32."""
    step = max(1, min(image.size) // max(1, 2 * target_size))
    small = np.asarray(image)[::step, ::step]
    peak = float(small.max()) if small.size else 0.0
    scale = np.float32(255.0 / peak if peak > 255 else 1.0)
    return Image.fromarray(np.clip(small.astype(np.float32) * scale, 0, 255).astype(np.uint8))


def _over_white(image: Image.Image) -> Image.Image:
    """An image with transparency flattened onto white, in 8-bit RGB; about 5 bytes per pixel besides the input
    (the same blend as pasting it onto a white canvas, which took 12)."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    clear = rgba.getchannel("A").point(lambda alpha: 255 - alpha)
    flat = rgba.convert("RGB")
    del rgba
    flat.paste((255, 255, 255), mask=clear)  # white where transparent, blended by coverage
    return flat


def _to_rgb(image: Image.Image, target_size: int = 1 << 30) -> Image.Image:
    """Convert any mode (palette, alpha, CMYK, 16-bit, greyscale) to 8-bit RGB; high-bit images are reduced
    towards `target_size` so their conversion stays within a few times the 8-bit result's memory."""
    if image.mode in HIGH_BIT_MODES:
        image = _high_bit_to_8bit(image, target_size)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _over_white(image)
    return image.convert("RGB") if image.mode != "RGB" else image


def _load_reduced(image: Image.Image, data: bytes, fmt: str, target_size: int) -> Image.Image:
    """Decode the pixels, reduced towards `target_size` while decoding where the format allows it: JPEG by DCT
    scaling, JPEG 2000 by skipping wavelet levels (a 64 Mpx file: 9.1 s whole, 0.11 s at 500 px)."""
    if fmt == "JPEG":
        image.draft("RGB", (target_size, target_size))
    levels = jpeg2000_reduction(data, image.size, target_size) if fmt == "JPEG2000" else 0
    if not levels:
        image.load()
        return image
    image.reduce = levels  # type: ignore[method-assign,assignment]  # Pillow's JPEG 2000 setter
    try:
        image.load()
    except OSError:  # a tile or component with fewer levels than the main header says: decode it whole
        image = Image.open(io.BytesIO(data))
        image.load()
    return image


def jpeg2000_reduction(data: bytes, size: tuple[int, int], target_size: int) -> int:
    """How many wavelet levels a JPEG 2000 image can skip and keep its shorter side at `target_size` or more: at
    most the decomposition levels in its main header's COD segment (0 when there is none)."""
    wanted = max(0, (min(size) // max(1, target_size)).bit_length() - 1)  # floor(log2(shorter side / target))
    position = data.find(b"\xff\x4f\xff\x51")  # SOC then SIZ: the codestream, raw (.j2k) or in a .jp2 box
    for _ in range(64 if wanted and position >= 0 else 0):
        position += 2 if data[position + 1] == 0x4F else 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if position + 10 > len(data) or data[position] != 0xFF or data[position + 1] == 0x90:  # SOT: header over
            return 0
        if data[position + 1] == 0x52:  # COD: Lcod, Scod, SGcod (4 bytes), then the number of levels
            return min(wanted, data[position + 9])
    return 0


def jpeg_scans(data: bytes, limit: int = MAX_JPEG_SCANS) -> int:
    """The scans (SOS segments) of the JPEG image that `data` starts with, counted along its marker structure up
    to its end of image (so embedded thumbnails and data appended after it, e.g. a motion photo's video, are not
    counted); counting stops once past `limit`."""
    scans, position = 0, 2
    while scans <= limit and position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xD9:  # end of image
            break
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte or a marker without a length
            position += 1 if marker == 0xFF else 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:
            scans += 1
            found = _NEXT_MARKER.search(data, position)
            position = found.start() if found else len(data)
    return scans


def tiff_chunks(data: bytes) -> int:
    """How many strips (or tiles) the first image of a TIFF (classic or BigTIFF) is stored in, read from its first
    directory's entry counts without reading the offsets themselves; 0 when `data` is not a TIFF or ends early."""
    order = {b"II*\x00": "little", b"II+\x00": "little", b"MM\x00*": "big", b"MM\x00+": "big"}.get(data[:4])
    if order is None or len(data) < 16:
        return 0

    def number(start: int, size: int) -> int:
        return int.from_bytes(data[start : start + size], order)  # type: ignore[arg-type]

    big = data[2:4] in (b"+\x00", b"\x00+")
    offset, count_size, entry_size, field = (number(8, 8), 8, 20, 8) if big else (number(4, 4), 2, 12, 4)
    entries = number(offset, count_size) if offset + count_size <= len(data) else 0
    most = 0
    for index in range(min(entries, 4096)):
        entry = offset + count_size + index * entry_size
        if entry + entry_size > len(data):
            break
        if number(entry, 2) in (273, 324):  # StripOffsets, TileOffsets
            most = max(most, number(entry + 4, field))
    return most


def decode_image(data: bytes, target_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode bytes to an oriented RGB image, reduced towards `target_size` while decoding."""
    if not data:
        raise ImageRejected("empty_file", "the file is empty (0 bytes)")
    if (chunks := tiff_chunks(data)) > MAX_TIFF_CHUNKS:
        message = f"the TIFF is stored in {chunks} strips or tiles (at most {MAX_TIFF_CHUNKS})"
        raise ImageRejected("too_many_strips", message)
    try:
        with warnings.catch_warnings():
            # Pillow warns over its own limit (89 Mpx); `max_pixels` is the limit here, checked once the header is read
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's remarks on odd files; the row says what failed
            Image.init()  # every plugin registered (once), or open() with formats refuses those not yet loaded
            image = Image.open(io.BytesIO(data), formats=DECODED_FORMATS)
            width, height = image.size
            fmt = image.format or "unknown"
            for inner_width, inner_height in [(width, height), *(_icon_sizes(data) if fmt == "ICO" else [])]:
                if inner_width * inner_height > max_pixels:
                    raise ImageRejected(
                        "too_many_pixels",
                        f"{inner_width}x{inner_height} = {inner_width * inner_height} pixels exceeds the limit of "
                        f"{max_pixels}",
                    )
            image.seek(0)
            # MPO: a JPEG with more pictures after it, decoded by the same library
            if fmt in ("JPEG", "MPO") and (scans := jpeg_scans(data)) > MAX_JPEG_SCANS:
                raise ImageRejected(
                    "too_many_scans", f"the JPEG has more than {MAX_JPEG_SCANS} scans ({scans} counted so far)"
                )
            pixels = _load_reduced(image, data, fmt, target_size)
            ImageOps.exif_transpose(pixels, in_place=True)  # in place: a copy would double the peak memory
            return DecodedImage(_to_rgb(pixels, target_size), fmt, width, height)
    except ImageRejected:
        raise
    except UnidentifiedImageError as exc:
        if other := _format_of(data):
            message = f"{other} images are not scanned (only {', '.join(DECODED_FORMATS)})"
            raise ImageRejected("unsupported_format", message) from exc
        if has_image_magic(data[:16]):
            raise ImageRejected("decode_error", "the image header is corrupt") from exc
        raise ImageRejected("not_an_image", "the content is not a recognised image format") from exc
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit (179 Mpx): Pillow will not open it
        message = f"decompression bomb refused (the limit is {max_pixels}): {exc}"
        raise ImageRejected("too_many_pixels", message) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        code = "truncated" if "truncated" in str(exc).lower() else "decode_error"
        raise ImageRejected(code, f"the image could not be decoded: {exc}") from exc
    except MemoryError as exc:
        raise ImageRejected("too_many_pixels", f"the image is too large to decode: {exc}") from exc


def _icon_sizes(data: bytes) -> list[tuple[int, int]]:
    """The real sizes of an ICO's images, read from each one's own header: the ICO header says at most 256 px,
    and Pillow decodes the PNG or bitmap inside whole, whatever its size."""
    sizes = []
    count = int.from_bytes(data[4:6], "little")
    for index in range(count):
        entry = data[6 + 16 * index : 22 + 16 * index]
        offset = int.from_bytes(entry[12:16], "little") if len(entry) == 16 else len(data)
        head = data[offset : offset + 24]
        if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 24:
            sizes.append((int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")))
        elif len(head) >= 12:  # a bitmap: its height counts the image and its mask
            width, height = (abs(int.from_bytes(head[i : i + 4], "little", signed=True)) for i in (4, 8))
            sizes.append((width, height // 2))
    return sizes


def _format_of(data: bytes) -> str | None:
    """The name of a format Pillow knows but the scanner does not decode (header only), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as other:
                return other.format or None
    except Exception:  # noqa: BLE001 - any plugin's refusal means the same: not a known format
        return None


RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# An image is enlarged whole (so its views are exactly those the shipped thresholds were fitted on) unless that
# would take more pixels than this: a 1x60000 PNG of a few hundred bytes would become 112x6.7M pixels (2 GB).
MAX_ENLARGED_PIXELS = 1 << 20


def resize_center_crop(image: Image.Image, size: int, max_side: int = 0, resample: str = "bilinear") -> Image.Image:
    """Bring the shorter side into [size, max_side] (keeping native pixels when it already is), crop the centre.

    With max_side <= size this is the classic "resize shorter side to size, centre crop". With a larger
    max_side, mid-sized images keep their native resolution, so local traces (splice seams, resampling,
    generator noise) are not averaged away by downscaling.
    """
    width, height = image.size
    shorter = min(width, height)
    target = min(max(shorter, size), max(size, max_side))
    scale = target / shorter
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if new_w * new_h > MAX_ENLARGED_PIXELS:  # only a thin strip gets here: enlarge just the region the crop keeps
        fx, fy = width / new_w, height / new_h
        box = (left * fx, top * fy, (left + size) * fx, (top + size) * fy)
        return image.resize((size, size), RESAMPLE[resample], box=box)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), RESAMPLE[resample], reducing_gap=3.0)
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image, config: Decoding) -> torch.Tensor:
    """Turn a size x size RGB image into a normalised CHW float tensor."""
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


Augment = Callable[[Image.Image], Image.Image]


def preprocess_image(image: Image.Image, config: Decoding, augment: Augment | None = None) -> torch.Tensor:
    """Decoded RGB image -> model tensor; training passes an augmentation, inference none."""
    if augment is not None:
        image = augment(image)
    return to_tensor(resize_center_crop(image, config.size, config.max_side, config.resample), config)


def preprocess_bytes(
    data: bytes,
    config: Decoding,
    augment: Augment | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Bytes -> model tensor: the single path used by training, evaluation and the worker."""
    decoded = decode_image(data, config.decode_side, max_pixels)
    return preprocess_image(decoded.image, config, augment)
