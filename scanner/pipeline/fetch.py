"""Safe URL fetching: pinned, vetted addresses (no SSRF, no DNS rebinding), limits and retries."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from scanner.pipeline.errors import ItemError

REDIRECTS = {301, 302, 303, 307, 308}
USER_AGENT = "fauxscan/0.1 (+https://github.com/fauxscan)"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch; built from Settings."""

    timeout: float = 10.0
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 2
    backoff: float = 0.5
    allow_private: bool = False
    deadline: float = 0.0  # whole fetch (redirects and retries included); 0: three times `timeout`

    @property
    def total_seconds(self) -> float:
        """The time one URL may take from first connect to last byte, whatever the server does."""
        return self.deadline or 3 * self.timeout


@dataclass(frozen=True)
class FetchResult:
    """The body of a successful fetch and where it finally came from."""

    data: bytes
    final_url: str
    status: int


class _Transient(Exception):
    """A failure worth retrying (timeout, 5xx, connection reset)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# Never fetched, even with SCANNER_ALLOW_PRIVATE_URLS: cloud metadata and platform endpoints, link-local,
# and every IANA special-purpose range that is neither a private network nor loopback.
ALWAYS_BLOCKED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "169.254.0.0/16", "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24",
        "192.88.99.0/24", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4", "100.100.100.200/32", "168.63.129.16/32",
        "::/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16",
        "2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fe80::/10", "fec0::/10", "ff00::/8", "fd00:ec2::254/128",
    )
)  # fmt: skip
# Reachable only with SCANNER_ALLOW_PRIVATE_URLS (on-premises sources).
PRIVATE = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "::1/128", "fc00::/7")
)


def address_blocked(address: str, allow_private: bool) -> bool:
    """True for addresses a fetch must not reach.

    Always blocked: ALWAYS_BLOCKED (metadata endpoints, link-local, special-purpose ranges), multicast, reserved.
    Blocked unless `allow_private`: loopback and private networks (PRIVATE). Anything else must be global.
    IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in ALWAYS_BLOCKED) or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        return True
    if any(ip in net for net in PRIVATE):
        return not allow_private
    return ip.is_reserved or not ip.is_global


def resolve_vetted(host: str, port: int, policy: FetchPolicy) -> str:
    """Resolve `host` and return an allowed address to connect to, or raise blocked_address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _Transient("connection_error", f"cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    blocked = [a for a in addresses if address_blocked(a, policy.allow_private)]
    if blocked:
        raise ItemError("blocked_address", f"{host} resolves to blocked address {blocked[0]}")
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a vetted IP while sending the original Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a vetted IP, verifying the certificate for the original host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


URL_SAFE = "/%:@!$&'()*+,;=~[]"  # kept as they are in a path: reserved characters and escapes


def _split(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ItemError("invalid_url", f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ItemError("unsupported_scheme", f"scheme {scheme!r} is not http or https")
    if not parts.hostname:
        raise ItemError("invalid_url", "the URL has no host")
    try:
        host = parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
    except UnicodeError:
        raise ItemError("invalid_url", f"the host {parts.hostname!r} is not a valid domain name") from None
    # As browsers do: spaces, other scripts and control characters percent-encoded (UTF-8), escapes kept.
    path = quote(parts.path or "/", safe=URL_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=URL_SAFE + "?")
    return scheme, host, port or (443 if scheme == "https" else 80), path


def _read_limited(response: http.client.HTTPResponse, policy: FetchPolicy, deadline: float) -> bytes:
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > policy.max_bytes:
        raise ItemError("too_large", f"Content-Length {length} exceeds the limit of {policy.max_bytes} bytes")
    chunks, total = [], 0
    while chunk := response.read1(64 * 1024):  # read1: whatever has arrived, so a trickle is seen at once
        total += len(chunk)
        if total > policy.max_bytes:
            raise ItemError("too_large", f"body exceeds the limit of {policy.max_bytes} bytes")
        if time.monotonic() > deadline:
            raise DeadlineExceeded
        chunks.append(chunk)
    if time.monotonic() >= deadline:  # the watchdog cut the connection: what arrived is not the whole body
        raise DeadlineExceeded
    return b"".join(chunks)


class DeadlineExceeded(Exception):
    """The URL's total time ran out."""


def _request_once(url: str, policy: FetchPolicy, deadline: float) -> tuple[int, str | None, bytes]:
    scheme, host, port, path = _split(url)
    address = resolve_vetted(host, port, policy)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(host, port, address, min(policy.timeout, remaining))
    watchdog = threading.Timer(remaining, _cut, args=(connection,))  # ends any read, however slow the server
    watchdog.start()
    try:
        connection.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        response = connection.getresponse()
        if response.status in REDIRECTS:
            return response.status, response.getheader("Location"), b""
        body = _read_limited(response, policy, deadline) if response.status < 300 else b""
        return response.status, None, body
    except (OSError, http.client.HTTPException) as exc:  # TimeoutError and SSLError are OSErrors
        raise _transport_error(exc, host, policy, deadline) from None
    finally:
        watchdog.cancel()
        connection.close()


def _transport_error(exc: Exception, host: str, policy: FetchPolicy, deadline: float) -> Exception:
    if time.monotonic() >= deadline:
        return DeadlineExceeded()
    if isinstance(exc, TimeoutError):
        return _Transient("timeout", f"no answer from {host} within {policy.timeout:g} s")
    if isinstance(exc, ssl.SSLError):
        return ItemError("connection_error", f"TLS error with {host}: {exc.reason}")
    return _Transient("connection_error", f"connection to {host} failed: {type(exc).__name__}")


def _cut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _follow(url: str, policy: FetchPolicy, deadline: float) -> FetchResult:
    current = url
    for _ in range(policy.max_redirects + 1):
        status, location, body = _request_once(current, policy, deadline)
        if status in REDIRECTS:
            if not location:
                raise ItemError("http_4xx", f"redirect {status} without a Location header")
            current = urljoin(current, location)
            continue
        if 400 <= status < 500:
            raise ItemError("http_4xx", f"HTTP {status} from {current}", status)
        if status >= 500:
            raise _Transient("http_5xx", f"HTTP {status} from {current}", status)
        return FetchResult(body, current, status)
    raise ItemError("too_many_redirects", f"more than {policy.max_redirects} redirects")


def fetch_url(url: str, policy: FetchPolicy) -> FetchResult:
    """GET an image URL within the policy; retries timeouts, connection errors and 5xx only, and never runs
    past the policy's total deadline (code `timeout`)."""
    deadline = time.monotonic() + policy.total_seconds
    last: _Transient | None = None
    try:
        for attempt in range(policy.retries + 1):
            try:
                return _follow(url, policy, deadline)
            except _Transient as exc:
                last = exc
                pause = policy.backoff * 2**attempt
                if attempt == policy.retries or time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
    except DeadlineExceeded:
        raise ItemError("timeout", f"the URL took longer than its {policy.total_seconds:g} s deadline") from None
    assert last is not None
    raise ItemError(last.code, f"{last.message} (after {attempt + 1} attempts)", last.status)
