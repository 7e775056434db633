"""A byte-counting HTTP proxy on 127.0.0.1, to measure what a storage server really sends.

Tests put it between the google-cloud-storage client and the GCS emulator (``STORAGE_EMULATOR_HOST``
pointed at the proxy) and read back, per HTTP exchange, the status and the exact header and body
bytes the server sent: the project's own counters are checked against these, not against
themselves.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass(frozen=True)
class Exchange:
    """One request and the response to it, as seen on the wire."""

    method: str
    target: str
    range: str | None
    status: int
    head_bytes: int
    body_bytes: int

    @property
    def media(self) -> bool:
        """True for an object-content download (``alt=media``), false for metadata and other API calls."""
        return "alt=media" in self.target

    @property
    def object_call(self) -> bool:
        """True for a JSON API call on one object (``/b/<bucket>/o/<name>``), such as its metadata GET.

        Neither this nor ``media`` is the bucket metadata GET that google-cloud-storage (3.17+) sends
        in the background once per client and bucket, to label its telemetry.
        """
        return not self.media and "/o/" in self.target


class ProxyError(RuntimeError):
    """The proxy met HTTP it does not parse (it records the message and drops the connection)."""


def _read_head(stream) -> bytes:
    """Bytes up to and including the blank line that ends an HTTP head; ``b""`` at a clean EOF."""
    lines = []
    while True:
        line = stream.readline(65536)
        if not line:
            if lines:
                raise ProxyError(f"connection closed inside an HTTP head: {b''.join(lines)[:200]!r}")
            return b""
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _headers(head: bytes) -> dict[str, str]:
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


class _Upstream:
    """The server side of one proxied connection, opened on first use and again after the server closes it."""

    def __init__(self, address: tuple[str, int]):
        self._address = address
        self._sock: socket.socket | None = None
        self._reader = None

    def send(self, data: bytes):
        """Send ``data``; return the reader for the server's answer."""
        if self._sock is None:
            self._sock = socket.create_connection(self._address)
            self._reader = self._sock.makefile("rb")
        self._sock.sendall(data)
        return self._reader

    def close(self) -> None:
        if self._sock is not None:
            self._reader.close()
            self._sock.close()
            self._sock = self._reader = None


class CountingProxy:
    """Forwards connections on ``127.0.0.1:<port>`` to ``upstream`` and records every exchange.

    HTTP/1.x with ``Content-Length`` bodies only (what the client and the emulator speak); anything
    else is recorded in ``errors`` so a test can fail on it. ``fail_next(n)`` answers the next ``n``
    requests itself with ``503 Service Unavailable`` without forwarding them.
    """

    def __init__(self, upstream: tuple[str, int]):
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.host = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self.errors: list[str] = []
        self._failures_left = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def in_front_of(cls, url: str) -> CountingProxy:
        """A proxy to the server at ``url`` (``http://host:port``)."""
        parsed = urlparse(url)
        return cls((parsed.hostname, parsed.port))

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def reset(self) -> None:
        with self._lock:
            self._exchanges.clear()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = count

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = _Upstream(self._upstream)
        try:
            with client, client.makefile("rb") as requests:
                while self._exchange(client, requests, upstream):
                    pass
        except (ProxyError, OSError) as exc:
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            upstream.close()

    def _exchange(self, client: socket.socket, requests, upstream: _Upstream) -> bool:
        """Relay one request and its response; False when the connection is done."""
        head = _read_head(requests)
        if not head:
            return False
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        fields = _headers(head)
        if "transfer-encoding" in fields:
            raise ProxyError(f"unsupported request transfer-encoding {fields['transfer-encoding']!r}")
        body = requests.read(int(fields.get("content-length", 0)))
        with self._lock:
            inject = self._failures_left > 0
            self._failures_left -= inject
        if inject:
            reply = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            self._record(Exchange(method, target, fields.get("range"), 503, len(reply), 0))
            client.sendall(reply)
            return False
        responses = upstream.send(head + body)
        response_head = _read_head(responses)
        if not response_head:
            raise ProxyError(f"upstream closed without answering {method} {target}")
        version, status = response_head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)[:2]
        response_fields = _headers(response_head)
        if "transfer-encoding" in response_fields:
            raise ProxyError(
                f"unsupported response transfer-encoding {response_fields['transfer-encoding']!r}"
            )
        no_body = method == "HEAD" or status.startswith("1") or status in ("204", "304")
        if not no_body and "content-length" not in response_fields:
            raise ProxyError(f"response to {method} {target} has no Content-Length")
        size = 0 if no_body else int(response_fields["content-length"])
        response_body = responses.read(size)
        if len(response_body) != size:
            raise ProxyError(f"upstream sent {len(response_body)} of {size} body bytes for {target}")
        self._record(
            Exchange(method, target, fields.get("range"), int(status), len(response_head), len(response_body))
        )
        client.sendall(response_head + response_body)
        keep_alive = version == "HTTP/1.1" and response_fields.get("connection", "").lower() != "close"
        if not keep_alive:
            upstream.close()
        return keep_alive

    def _record(self, exchange: Exchange) -> None:
        """Keep ``exchange``; called before the client gets the response, so a caller sees its own."""
        with self._lock:
            self._exchanges.append(exchange)
