"""Text that came from users, files or URLs, made safe to print on a terminal."""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def decodable(name: str) -> str:
    """A name that may hold undecodable bytes (surrogate escapes), as text that can be stored: the bytes as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def printable(text: object, keep_newlines: bool = True) -> str:
    """Control characters shown as \\xNN escapes (never sent to the terminal), undecodable bytes as \\xNN."""
    pattern = CONTROL if keep_newlines else CONTROL_OR_NEWLINE
    return pattern.sub(lambda match: f"\\x{ord(match.group()):02x}", decodable(str(text)))


URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#\s@]*(?:@[^/?#\s@]*)*)@")


def _masked_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match.group(2).partition(":")
    return f"{match.group(1)}{user}:***@" if colon else match.group(0)


def mask_passwords(text: str | None) -> str | None:
    """Every URL password in `text` (a URL or a message quoting URLs) replaced by ***; anything else unchanged."""
    if not text or "@" not in text:
        return text
    return URL_USERINFO.sub(_masked_userinfo, text)
