"""The closed set of per-item error codes, each with a human message."""

from __future__ import annotations

from scanner.safe_text import mask_passwords

ERROR_CODES: dict[str, str] = {
    "not_found": "the file or path does not exist",
    "permission_denied": "the file cannot be read (permission denied)",
    "not_a_file": "the path is not a regular file",
    "empty_file": "the file is empty (0 bytes)",
    "not_an_image": "the content is not a recognised image format",
    "unsupported_format": "an image format the scanner does not decode (the README lists those it does)",
    "truncated": "the image data is truncated",
    "decode_error": "the image could not be decoded",
    "too_large": "the input is larger than the size limit",
    "too_many_pixels": "the image has more pixels than the limit (possible decompression bomb)",
    "too_many_scans": "the progressive JPEG has more scans than the limit (a decoding-time bomb)",
    "too_many_strips": "the TIFF is stored in more strips or tiles than the limit (a decoding-time bomb)",
    "http_4xx": "the server answered with a client error (4xx)",
    "http_5xx": "the server answered with a server error (5xx) after retries",
    "timeout": "the server did not answer in time",
    "connection_error": "the server could not be reached",
    "too_many_redirects": "the URL redirected too many times",
    "blocked_address": "the URL resolves to a private, loopback or otherwise blocked address",
    "unsupported_scheme": "only http:// and https:// URLs and local paths are accepted",
    "invalid_url": "the URL is malformed",
    "internal_error": "an unexpected error occurred while scanning this item",
    "worker_lost": "scanning this item killed its worker process again and again (isolated from its batch)",
    "model_mismatch": "the worker holds another model version than the one the job was submitted with",
    "retries_exhausted": "the batch kept failing on database or broker errors until its retries ran out",
}


class ItemError(Exception):
    """A failure that belongs to one item: it becomes that item's error row."""

    def __init__(self, code: str, message: str | None = None, http_status: int | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.message = mask_passwords(message) or ERROR_CODES[code]  # messages quote URLs: never their passwords
        super().__init__(self.message)
        self.http_status = http_status
