"""Sources: turn command-line arguments (paths, directories, URLs, URL lists) into item specs."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from scanner.detector.preprocess import IMAGE_SUFFIXES, has_image_magic
from scanner.safe_text import decodable


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
    """Everything found under the submitted arguments (held whole: `iter_sources` streams the same)."""

    items: list[ItemSpec]
    skipped: list[SkippedFile]

    def __iter__(self) -> Iterator[ItemSpec | SkippedFile]:
        yield from self.items
        yield from self.skipped


# A job's source that stands for the lines of a URL/path list kept on disk (`scanner submit --from-file`), one
# canonical source a line: jobs record the list's file, not each of its lines.
LIST_PREFIX = "list:"


def looks_like_image(path: Path) -> bool:
    """True when the (regular) file's first bytes or its extension say image."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return True  # unreadable: let the scan stage record why
    return has_image_magic(head)


def special_file_reason(path: Path) -> str | None:
    """'fifo', 'socket' or 'device' for files that must never be opened (reading a FIFO blocks forever)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # missing or unreadable: the scan stage records why
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return None


def path_uri(path: Path) -> tuple[str, str]:
    """(uri, kind) for a local path: the absolute path, or for names that are not valid UTF-8 their bytes
    percent-escaped (kind 'rawpath'), so every name is stored losslessly and shown readably."""
    text = str(path.absolute())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return quote_from_bytes(os.fsencode(text), safe="/"), "rawpath"
    return text, "file"


def local_path(uri: str, kind: str) -> Path:
    """The filesystem path behind a file item's uri (inverse of `path_uri`)."""
    return Path(os.fsdecode(unquote_to_bytes(uri))) if kind == "rawpath" else Path(uri)


RAW_PREFIX = "rawpath:"  # a recorded source whose path is not valid UTF-8, its bytes percent-escaped
URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(argument: str) -> bool:
    """True for anything with a URL scheme (http, https, ftp, file, ...)."""
    return bool(URL_PATTERN.match(argument)) and not argument.startswith(RAW_PREFIX)


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

    A symlinked file is followed only when its target lies inside `root`; a dangling or looping link is
    'broken_symlink'. Directories that cannot be listed and files that are not regular (FIFOs, sockets,
    devices) come back as SkippedFile with a reason.
    """
    resolved_root = root.resolve()
    unreadable: list[OSError] = []
    for directory, subdirs, files in os.walk(root, followlinks=False, onerror=unreadable.append):
        yield from (_unlistable(error) for error in unreadable)
        unreadable.clear()
        subdirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if path.is_symlink() and (reason := _symlink_reason(path, resolved_root)):
                yield SkippedFile(path_uri(path)[0], reason)
                continue
            reason = special_file_reason(path)
            yield SkippedFile(path_uri(path)[0], reason) if reason else path
    yield from (_unlistable(error) for error in unreadable)


def _symlink_reason(link: Path, resolved_root: Path) -> str | None:
    """Why a symlinked file is not followed ('broken_symlink' for a dangling or looping link), or None."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on Python < 3.13
        return "broken_symlink"
    return None if target.is_relative_to(resolved_root) else "symlink_outside"  # a FIFO target: special_file_reason


def _unlistable(error: OSError) -> SkippedFile:
    reason = "permission_denied" if isinstance(error, PermissionError) else "unreadable_directory"
    return SkippedFile(path_uri(Path(error.filename or "?"))[0], reason)


def iter_sources(arguments: Iterable[str]) -> Iterator[ItemSpec | SkippedFile]:
    """Expand arguments in order, streamed (a list entry line by line, a directory file by file); a path named
    explicitly always becomes an item. The same URI may come twice: whoever records them keeps the first."""
    for argument in arguments:
        if argument.startswith(LIST_PREFIX):
            yield from iter_sources(listed_lines(Path(argument[len(LIST_PREFIX) :])))
        elif is_url(argument):
            yield url_spec(argument)
        else:
            yield from _path_sources(argument)


def _path_sources(argument: str) -> Iterator[ItemSpec | SkippedFile]:
    path = local_path(argument[len(RAW_PREFIX) :], "rawpath") if argument.startswith(RAW_PREFIX) else Path(argument)
    path = path.expanduser()
    if path.is_dir():
        for found in walk_directory(path):
            if isinstance(found, SkippedFile):
                yield found
            elif looks_like_image(found):
                yield ItemSpec(*path_uri(found))
            else:
                yield SkippedFile(path_uri(found)[0], "not_an_image")
        return
    uri, kind = path_uri(path)
    if reason := special_file_reason(path):
        yield SkippedFile(uri, reason)
    elif not path.exists():
        yield ItemSpec(uri, kind, "not_found", f"no such file: {decodable(argument)}")
    else:
        yield ItemSpec(uri, kind)


def expand_sources(arguments: Iterable[str]) -> Expansion:
    """Everything `iter_sources` finds, held whole, each URI once (the first), skipped files that are not items."""
    items: dict[str, ItemSpec] = {}
    skipped: list[SkippedFile] = []
    for found in iter_sources(arguments):
        if isinstance(found, SkippedFile):
            skipped.append(found)
        else:
            items.setdefault(found.uri, found)
    return Expansion(list(items.values()), [s for s in skipped if s.path not in items])


def listed_lines(path: Path) -> Iterator[str]:
    """The sources of a list file a job refers to, one per line (written by `scanner.pipeline.jobs.spool_list`)."""
    with path.open("rb") as handle:
        for line in handle:
            yield line.rstrip(b"\n").decode("utf-8", "surrogateescape")


def listed_sources(sources: Iterable[str]) -> Iterator[str]:
    """A job's sources with each list entry replaced by its lines: what identifies the submission."""
    for source in sources:
        if source.startswith(LIST_PREFIX):
            yield from listed_lines(Path(source[len(LIST_PREFIX) :]))
        else:
            yield source


def iter_source_list(handle: BinaryIO, block: int = 1 << 20) -> Iterator[str]:
    """Lines of a --from-file list, read a block at a time: blank lines and # comments ignored. Bytes that are not
    UTF-8 are kept as the shell keeps them in arguments (a path from `find` with a Latin-1 name still names its
    file); a file with NUL bytes is not a list and is refused with ValueError."""
    rest = b""
    while True:
        data = handle.read(block)
        if b"\0" in data:
            raise ValueError("it holds NUL bytes, so it is not a text list of paths and URLs (one per line)")
        text, rest = (rest + data, b"") if not data else _whole_lines(rest + data)
        for line in text.decode("utf-8", "surrogateescape").splitlines():
            if (stripped := line.strip()) and not stripped.startswith("#"):
                yield stripped
        if not data:
            return


def _whole_lines(data: bytes) -> tuple[bytes, bytes]:
    """`data` cut after its last newline: the complete lines, and the start of the next (no UTF-8 sequence holds
    a newline byte, and a CR LF pair stays together)."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]
