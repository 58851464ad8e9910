"""A real HTTP server on 127.0.0.1 serving good images and every kind of hostile answer."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from tests.imaging import encode, noisy_image

GOOD_PNG = encode(noisy_image(1, 32))
GOOD_JPEG = encode(noisy_image(2, 32), "JPEG")
ENDLESS_LIMIT_SECONDS = 10
TRICKLE_SECONDS = 40


NAMED_FILES = ("café.png", "a b.png", "照片/脸.png")


class HostileHandler(BaseHTTPRequestHandler):
    """Routes named after what they do."""

    hits: Counter[str] = Counter()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.hits[self.path] += 1
        if unquote(self.path.split("?")[0]).strip("/") in NAMED_FILES:  # names a route cannot spell
            self._send(200, GOOD_PNG)
            return
        route = getattr(self, "route_" + self.path.strip("/").split("?")[0].replace("-", "_").replace(".", "_"), None)
        if route is None:
            self._send(404, b"not found", "text/plain")
        else:
            route()

    def _send(self, status: int, body: bytes, content_type: str = "image/png", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", Location=location)

    def route_good_png(self) -> None:
        self._send(200, GOOD_PNG)

    def route_good_jpg(self) -> None:
        self._send(200, GOOD_JPEG, "application/octet-stream")

    def route_missing(self) -> None:
        self._send(404, b"gone", "text/plain")

    def route_forbidden(self) -> None:
        self._send(403, b"no", "text/plain")

    def route_flaky(self) -> None:
        if self.hits[self.path] == 1:
            self._send(500, b"try again", "text/plain")
        else:
            self._send(200, GOOD_JPEG, "image/jpeg")

    def route_always_500(self) -> None:
        self._send(503, b"down", "text/plain")

    def route_paced_png(self) -> None:
        time.sleep(0.25)
        self._send(200, GOOD_PNG)

    def route_slow(self) -> None:
        time.sleep(3)
        self._send(200, GOOD_PNG)

    def route_trickle(self) -> None:
        """A valid image, one byte a second (each read is quick; only a total deadline stops it)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(GOOD_PNG)))
        self.end_headers()
        for byte in GOOD_PNG[:TRICKLE_SECONDS]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(1)

    def route_trickle_headers(self) -> None:
        """Headers that arrive one byte a second."""
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * TRICKLE_SECONDS:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(1)

    def route_endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        deadline = time.monotonic() + ENDLESS_LIMIT_SECONDS
        try:
            self.wfile.write(GOOD_JPEG[:100])
            while time.monotonic() < deadline:
                self.wfile.write(b"\x00" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route_huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(10**10))
        self.end_headers()

    def route_loop(self) -> None:
        self._redirect("/loop")

    def route_to_metadata(self) -> None:
        self._redirect("http://169.254.169.254/latest/meta-data/")

    def route_to_good(self) -> None:
        self._redirect("/good.png")

    def route_to_secret(self) -> None:
        host, port = self.server.server_address[:2]
        self._redirect(f"http://bob:hunter2@{host}:{port}/missing")

    def route_html(self) -> None:
        self._send(200, b"<html><body>not an image</body></html>", "image/jpeg")


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HostileServer:
    """Context manager running HostileHandler on an ephemeral port of 127.0.0.1 (or ::1)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host

    def __enter__(self) -> HostileServer:
        HostileHandler.hits = Counter()
        server_class = _IPv6Server if ":" in self.host else ThreadingHTTPServer
        self.server = server_class((self.host, 0), HostileHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def url(self, path: str) -> str:
        """Absolute URL of a route."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server.server_address[1]}/{path}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


EXPECTED = {
    "good.png": ("done", None),
    "good.jpg": ("done", None),
    "to-good": ("done", None),
    "flaky": ("done", None),
    "missing": ("error", "http_4xx"),
    "forbidden": ("error", "http_4xx"),
    "always-500": ("error", "http_5xx"),
    "slow": ("error", "timeout"),
    "endless": ("error", "too_large"),
    "huge": ("error", "too_large"),
    "loop": ("error", "too_many_redirects"),
    "to-metadata": ("error", "blocked_address"),
    "html": ("error", "not_an_image"),
}
