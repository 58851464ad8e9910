"""Load/decode stage: read each item's bytes (file or URL), hash them, decode and preprocess."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from scanner.detector.faces import FaceFinder, scale_box, upright_size
from scanner.detector.preprocess import ImageRejected, Preprocess, decode_image
from scanner.detector.views import ImageViews, make_views
from scanner.pipeline.errors import ItemError
from scanner.pipeline.fetch import FetchPolicy, fetch_url
from scanner.pipeline.sources import local_path
from scanner.safe_text import decodable, mask_passwords
from scanner.settings import Settings


@dataclass
class LoadedItem:
    """What the load stage learnt about one item; `views` is set when the model must score it."""

    item_id: int
    sha256: str | None = None
    size_bytes: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    final_url: str | None = None
    http_status: int | None = None
    views: ImageViews | None = None
    error_code: str | None = None
    error_message: str | None = None

    def fail(self, code: str, message: str) -> LoadedItem:
        """Mark as an error item and drop any model input."""
        self.error_code, self.error_message, self.views = code, mask_passwords(message), None
        return self


# Reads wait on disks and servers, not the CPU: 16 at once keep a batch of 64 slow URLs (each bounded by its
# deadline) well inside the task time limit.
READ_THREADS = 16


class ByteBudget:
    """The raw bytes a process holds between reading and decoding, bounded: a reservation waits while others hold
    the budget, and one larger than the whole budget waits until nothing else is held (so it never waits for ever)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._changed = threading.Condition()

    def _fits(self, size: int) -> bool:
        return self.held == 0 or self.held + size <= self.limit

    def try_reserve(self, size: int) -> bool:
        """Reserve `size` bytes if they fit now; False (nothing reserved) otherwise."""
        with self._changed:
            if not self._fits(size):
                return False
            self.held += size
            return True

    def reserve(self, size: int) -> None:
        """Reserve `size` bytes, waiting until they fit."""
        with self._changed:
            self._changed.wait_for(lambda: self._fits(size))
            self.held += size

    def adjust(self, change: int) -> None:
        """Correct a reservation by `change` bytes once the real size is known (never waits)."""
        with self._changed:
            self.held = max(0, self.held + change)
            self._changed.notify_all()

    def release(self, size: int) -> None:
        """Give back `size` reserved bytes."""
        self.adjust(-size)


@dataclass
class ReadItem:
    """One item after reading: what was learnt, its bytes until they are decoded, and the bytes reserved for them."""

    loaded: LoadedItem
    data: bytes | None
    reserved: int = 0

    def drop(self, budget: ByteBudget) -> None:
        """Forget the bytes and give their reservation back."""
        self.data = None
        budget.release(self.reserved)
        self.reserved = 0


def expected_size(uri: str, kind: str, settings: Settings) -> int:
    """The bytes to reserve before reading an item: a file's size (within the limit), for a URL, whose size is known
    only once it arrives, a share of the budget that lets every read thread fetch at once."""
    if kind == "url":
        return min(settings.max_file_bytes, settings.max_bytes_in_flight // READ_THREADS)
    try:
        return min(os.stat(local_path(uri, kind)).st_size, settings.max_file_bytes)
    except (OSError, ValueError):
        return 0  # the read says what is wrong


def fetch_policy(settings: Settings) -> FetchPolicy:
    """The URL fetch limits from settings."""
    return FetchPolicy(
        timeout=settings.http_timeout,
        max_bytes=settings.max_file_bytes,
        max_redirects=settings.http_max_redirects,
        retries=settings.http_retries,
        backoff=settings.http_backoff,
        allow_private=settings.allow_private_urls,
    )


def read_file(path: Path, max_bytes: int) -> bytes:
    """Read a local file within the size limit; failures become ItemError codes."""
    shown = decodable(str(path))
    try:
        # Opened without waiting (a FIFO put there after the walk has no writer and would block for ever), then the
        # open file itself is checked, so nothing can be swapped in between the check and the read.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ItemError("not_a_file", f"{shown} is not a regular file")
            if info.st_size > max_bytes:
                raise ItemError("too_large", f"{info.st_size} bytes exceeds the limit of {max_bytes}")
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ItemError("not_found", f"{shown} does not exist (or vanished after submit)") from None
    except PermissionError:
        raise ItemError("permission_denied", f"permission denied reading {shown}") from None
    except IsADirectoryError:
        raise ItemError("not_a_file", f"{shown} is a directory") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a device with nothing behind it
            raise ItemError("not_a_file", f"{shown} is not a regular file") from None
        raise ItemError("permission_denied", f"cannot read {shown}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ItemError("too_large", f"{shown} grew past the limit of {max_bytes} bytes")
    return data


def read_item(item_id: int, uri: str, kind: str, settings: Settings) -> tuple[LoadedItem, bytes | None]:
    """Read and hash one item's bytes."""
    loaded = LoadedItem(item_id)
    try:
        if kind == "url":
            result = fetch_url(uri, fetch_policy(settings))
            data, loaded.final_url, loaded.http_status = result.data, result.final_url, result.status
        else:
            data = read_file(local_path(uri, kind), settings.max_file_bytes)
    except ItemError as exc:
        loaded.http_status = exc.http_status
        return loaded.fail(exc.code, exc.message), None
    loaded.sha256 = hashlib.sha256(data).hexdigest()
    loaded.size_bytes = len(data)
    return loaded, data


def probe_header(loaded: LoadedItem, data: bytes) -> LoadedItem:
    """Fill format and dimensions from the header only (for content that already has a verdict)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            loaded.format, (loaded.width, loaded.height) = image.format, image.size
    except Exception:  # noqa: BLE001 - the verdict exists, so the content decoded before
        pass
    return loaded


def decode_item(
    loaded: LoadedItem, data: bytes, preprocess: Preprocess, max_pixels: int, finder: FaceFinder | None = None
) -> LoadedItem:
    """Decode, find faces and build the model's views with the training package's path; a bad image fails alone."""
    try:
        decoded = decode_image(data, preprocess.decoding.decode_side, max_pixels)
        loaded.format, loaded.width, loaded.height = decoded.format, decoded.width, decoded.height
        loaded.views = make_views(decoded.image, preprocess, finder)
        full_size = upright_size(decoded.image.size, decoded.width, decoded.height)  # boxes in the file's pixels
        loaded.views.boxes = [scale_box(box, decoded.image.size, full_size) for box in loaded.views.boxes]
    except ImageRejected as exc:
        return loaded.fail(exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001 - Pillow plugins raise many types on hostile input
        return loaded.fail("decode_error", f"the image could not be decoded: {type(exc).__name__}: {exc}")
    return loaded
