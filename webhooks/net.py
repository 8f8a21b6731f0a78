"""Sending a webhook to a URL that is checked where it is connected to (ADR 0083).

The host is resolved once; every address it resolves to must be public (unless
`WEBHOOK_ALLOW_PRIVATE`), and the connection goes to that checked address, with the
URL's host in the `Host` header and, over TLS, in SNI and the certificate check. A name
that resolves to a public address at the check and to 127.0.0.1 at the connect (DNS
rebinding) therefore cannot reach the private one.

Every attempt has one deadline (`timeout`) for all of it: resolving the name, connecting,
TLS, sending and reading the answer. A watchdog shuts the socket down when it passes, so a
receiver that answers a byte at a time cannot hold a worker (or, on the embedded default,
a web request) beyond it. The name lookup is bounded the same way, on a helper thread.
Only ports 80, 443 and 1024 and above are used (any with WEBHOOK_ALLOW_PRIVATE), and a
URL must be printable ASCII.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

EXCERPT_CHARS = 500


class UnsafeUrl(ValueError):
    """A URL webhooks may not be sent to (scheme, host, or an address that is not public)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str


# Ranges refused whatever the Python version's idea of "global": IETF protocol
# assignments, 6to4 relays, deprecated site-local IPv6.
_EXTRA_FORBIDDEN = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15", "2002::/16", "fec0::/10")
)
# How long resolving a URL's host may take, at creation and at each attempt.
RESOLVE_SECONDS = 3.0
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-resolve")


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None and _forbidden(embedded):
            return True
    if any(address in network for network in _EXTRA_FORBIDDEN):
        return True
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or not address.is_global
    )


def allow_private() -> bool:
    return bool(getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False))


def _resolve(host: str, port: int, seconds: float) -> list[Any]:
    future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return future.result(timeout=seconds)
    except FutureTimeout as exc:
        raise UnsafeUrl("The URL's host did not resolve in time.") from exc


def check_url(url: str, *, resolve_seconds: float = RESOLVE_SECONDS) -> Target:
    """Resolve `url`'s host and return where to connect; UnsafeUrl if it may not be used."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise UnsafeUrl("The URL must be printable ASCII (percent-encode anything else).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl("The URL is not valid.") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("Only http and https URLs are allowed.")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("The URL has no host.")
    if parts.username or parts.password:
        raise UnsafeUrl("The URL must not carry a user name or password.")
    port = port or (443 if parts.scheme == "https" else 80)
    if port < 1024 and port not in (80, 443) and not allow_private():
        raise UnsafeUrl("Webhooks go to port 80, 443, or a port from 1024 up.")
    try:
        infos = _resolve(host, port, resolve_seconds)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl("The URL's host does not resolve.") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise UnsafeUrl("The URL's host does not resolve.")
    if not allow_private():
        for address in addresses:
            if _forbidden(ipaddress.ip_address(address.split("%")[0])):
                raise UnsafeUrl(
                    "The URL resolves to a private, loopback or link-local address; "
                    "webhooks go to public addresses only."
                )
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return Target(parts.scheme, host, port, path, addresses[0])


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a checked address, verifying the certificate for the URL's host."""

    def __init__(self, target: Target, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=timeout, context=self._tls)
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.raw_sock = sock  # for the watchdog, before the TLS handshake
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = self.raw_sock = socket.create_connection(
            (self._address, self.port), self.timeout
        )


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str
    duration_ms: int
    excerpt: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST `body` to `url` (checked again now); never raises for the endpoint's faults."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = check_url(url, resolve_seconds=min(RESOLVE_SECONDS, timeout))
    except UnsafeUrl as exc:
        return Answer(None, f"refused: {exc}", elapsed(), "")
    left = max(timeout - (time.monotonic() - started), 0.1)
    connection: http.client.HTTPConnection = (
        _PinnedHTTPSConnection(target, left)
        if target.scheme == "https"
        else _PinnedHTTPConnection(target, left)
    )
    expired = threading.Event()

    def cut() -> None:  # the deadline passed: end whatever the connection is waiting for
        expired.set()
        sock = getattr(connection, "raw_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(left, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read(EXCERPT_CHARS * 4)
        excerpt = raw.decode("utf-8", errors="replace").replace("\x00", "")[:EXCERPT_CHARS]
        if expired.is_set():
            return Answer(None, "timeout", elapsed(), "")
        return Answer(response.status, "", elapsed(), excerpt)
    except TimeoutError:
        return Answer(None, "timeout", elapsed(), "")
    except ssl.SSLError as exc:
        if expired.is_set():
            return Answer(None, "timeout", elapsed(), "")
        return Answer(None, f"tls error: {type(exc).__name__}", elapsed(), "")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set():
            return Answer(None, "timeout", elapsed(), "")
        return Answer(None, f"{type(exc).__name__}: {exc}".replace("\x00", "")[:300], elapsed(), "")
    finally:
        watchdog.cancel()
        connection.close()
