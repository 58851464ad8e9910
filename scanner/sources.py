"""Sources: turn command-line arguments (paths, directories, URLs, URL lists) into item specs."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from training.preprocess import has_image_magic

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".ico", ".jp2", ".jfif",
}  # fmt: skip


@dataclass(frozen=True)
class ItemSpec:
    """One input to scan; `error` set when it is already known to be bad at submit time."""

    uri: str
    kind: str
    error: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class SkippedFile:
    """A file met while walking a directory that is not an image."""

    path: str
    reason: str


@dataclass
class Expansion:
    """Everything found under the submitted arguments."""

    items: list[ItemSpec]
    skipped: list[SkippedFile]


def looks_like_image(path: Path) -> bool:
    """True when the file's first bytes or its extension say image."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return True  # unreadable: let the scan stage record why
    return has_image_magic(head)


URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(argument: str) -> bool:
    """True for anything with a URL scheme (http, https, ftp, file, ...)."""
    return bool(URL_PATTERN.match(argument))


def url_spec(argument: str) -> ItemSpec:
    """An item for a URL; malformed URLs and schemes other than http(s) are recorded as errors."""
    try:
        scheme = urlsplit(argument).scheme.lower()
    except ValueError as exc:
        return ItemSpec(argument, "url", "invalid_url", f"malformed URL: {exc}")
    if scheme not in ("http", "https"):
        return ItemSpec(argument, "url", "unsupported_scheme", f"scheme {scheme!r} is not http or https")
    return ItemSpec(argument, "url")


def walk_directory(root: Path) -> Iterator[Path | SkippedFile]:
    """Files under `root`, depth first, sorted; symlinked directories are never entered.

    A symlinked file is followed only when its target lies inside `root`.
    """
    resolved_root = root.resolve()
    for directory, subdirs, files in os.walk(root, followlinks=False, onerror=None):
        subdirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(resolved_root) or not target.is_file():
                    yield SkippedFile(str(path.absolute()), "symlink_outside")
                    continue
            yield path


def expand_sources(arguments: Iterable[str]) -> Expansion:
    """Expand arguments in order; a path named explicitly always becomes an item."""
    items: dict[str, ItemSpec] = {}
    skipped: list[SkippedFile] = []
    for argument in arguments:
        if is_url(argument):
            spec = url_spec(argument)
            items.setdefault(spec.uri, spec)
            continue
        path = Path(argument).expanduser()
        if path.is_dir():
            for found in walk_directory(path):
                if isinstance(found, SkippedFile):
                    skipped.append(found)
                elif looks_like_image(found):
                    uri = str(found.absolute())
                    items.setdefault(uri, ItemSpec(uri, "file"))
                else:
                    skipped.append(SkippedFile(str(found.absolute()), "not_an_image"))
            continue
        uri = str(path.absolute())
        if not path.exists():
            items.setdefault(uri, ItemSpec(uri, "file", "not_found", f"no such file: {argument}"))
        else:
            items.setdefault(uri, ItemSpec(uri, "file"))
    return Expansion(list(items.values()), [s for s in skipped if s.path not in items])


def read_source_list(handle: TextIO) -> list[str]:
    """Lines of a --from-file list: blank lines and # comments ignored."""
    return [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
