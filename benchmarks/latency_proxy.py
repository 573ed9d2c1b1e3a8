"""A loopback TCP forwarder that adds one-way delay and counts client flights.

Loopback answers in microseconds, so a login that costs five round trips looks as
cheap as one that costs three. Put this proxy between a client and a server and
every chunk of bytes, in either direction, is delivered ``delay`` seconds after
the proxy read it: loopback then behaves like a network with a round-trip time
of ``2 * delay``. Chunks keep their order and are pipelined, so the delay adds
latency without limiting throughput. With ``bandwidth`` (bits per second, each
direction of each connection) the proxy also limits throughput: bytes leave
one slice at a time, each slice after the link has carried the ones before it,
like a link of that speed with a queue in front of it.

A *client flight* is one time the client had to wait for the server: the
client's first send on a connection is one, and so is every later send that
follows data the proxy has delivered to the client. Against a server that speaks
first (IMAP, POP, SMTP) over implicit TLS, the TLS 1.3 handshake costs two
flights (ClientHello, then Finished before the greeting), and each command the
client waits on costs one more. The TCP handshake is done by the kernel before
the proxy sees anything, so it is neither delayed nor counted.

The clock and the sleep are injectable so the proxy can be tested without
waiting: give it a fixed clock and a sleep that records its argument.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ConnectionStats", "LatencyProxy"]

logger = logging.getLogger(__name__)

_CHUNK = 256 * 1024
# Under a bandwidth limit, chunks are delivered in slices of at most this, so
# a 256 KiB read is not held back whole until its last byte would arrive.
_SLICE = 16 * 1024


@dataclass
class ConnectionStats:
    """What the proxy saw on one client connection."""

    flights: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    _server_spoke_last: bool = field(default=True, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client_sent(self, n: int) -> None:
        with self._lock:
            if self._server_spoke_last:
                self.flights += 1
                self._server_spoke_last = False
            self.bytes_up += n

    def delivered_to_client(self, n: int) -> None:
        with self._lock:
            self._server_spoke_last = True
            self.bytes_down += n


class _Pipe:
    """One direction of one connection: a reader thread and a delayed writer."""

    def __init__(
        self,
        proxy: LatencyProxy,
        src: socket.socket,
        dst: socket.socket,
        on_read: Callable[[int], None] | None,
        on_deliver: Callable[[int], None] | None,
        name: str,
    ) -> None:
        self._proxy = proxy
        self._src = src
        self._dst = dst
        self._on_read = on_read
        self._on_deliver = on_deliver
        self._queue: deque[tuple[float, bytes]] = deque()
        self._link_free_at = 0.0  # when the limited link has sent all it holds
        self._ready = threading.Condition()
        self.done = threading.Event()
        self._reader = threading.Thread(
            target=self._read, name=f"{name}-r", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write, name=f"{name}-w", daemon=True
        )

    def start(self) -> None:
        self._reader.start()
        self._writer.start()

    def join(self) -> None:
        self._reader.join()
        self._writer.join()

    def _read(self) -> None:
        while True:
            try:
                data = self._src.recv(_CHUNK)
            except OSError:
                data = b""
            if data and self._on_read is not None:
                self._on_read(len(data))
            with self._ready:
                self._queue.extend(self._schedule(data))
                self._ready.notify()
            if not data:
                return

    def _schedule(self, data: bytes) -> list[tuple[float, bytes]]:
        """When each part of ``data`` is due at the far end."""
        proxy = self._proxy
        now = proxy.clock()
        bandwidth = proxy.bandwidth
        if not bandwidth or not data:
            return [(max(now, self._link_free_at) + proxy.delay, data)]
        out = []
        for start in range(0, len(data), _SLICE):
            piece = data[start : start + _SLICE]
            begin = max(now, self._link_free_at)
            self._link_free_at = begin + len(piece) * 8 / bandwidth
            out.append((self._link_free_at + proxy.delay, piece))
        return out

    def _write(self) -> None:
        try:
            while True:
                with self._ready:
                    while not self._queue:
                        self._ready.wait()
                    due, data = self._queue.popleft()
                wait = due - self._proxy.clock()
                if wait > 0:
                    self._proxy.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        self._dst.shutdown(socket.SHUT_WR)
                    return
                if self._on_deliver is not None:
                    # Before the bytes leave: the client may answer at once.
                    self._on_deliver(len(data))
                self._dst.sendall(data)
        except OSError:
            # The far side went away; end both directions.
            for sock in (self._src, self._dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        finally:
            self.done.set()


class LatencyProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream`` with ``delay`` seconds each way.

    Use as a context manager; :attr:`port` is where clients connect. ``delay``
    may be changed between connections.

    Args:
        upstream: the server's ``(host, port)``.
        delay: one-way delay in seconds, applied to both directions.
        bandwidth: bits per second each direction of each connection may
            carry; None for no limit.
        clock: a monotonic clock in seconds.
        sleep: how the writer waits for a chunk's delivery time.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        delay: float = 0.0,
        bandwidth: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.upstream = upstream
        self.delay = delay
        self.bandwidth = bandwidth
        self.clock = clock
        self.sleep = sleep
        self.connections: list[ConnectionStats] = []
        self._lock = threading.Lock()
        self._pipes: list[_Pipe] = []
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._closed = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept, name="latency-proxy", daemon=True
        )
        self._acceptor.start()

    @property
    def flights(self) -> int:
        """Client flights summed over every connection so far."""
        with self._lock:
            return sum(c.flights for c in self.connections)

    def reset(self) -> None:
        """Forget the counts of connections made so far."""
        with self._lock:
            self.connections = []

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                logger.warning("latency proxy cannot reach %s:%s", *self.upstream)
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stats = ConnectionStats()
            n = len(self._pipes) // 2
            up = _Pipe(self, client, server, stats.client_sent, None, f"proxy{n}-up")
            down = _Pipe(
                self, server, client, None, stats.delivered_to_client, f"proxy{n}-down"
            )
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    server.close()
                    return
                self.connections.append(stats)
                self._pipes += [up, down]
                self._sockets += [client, server]
            up.start()
            down.start()

    def close(self) -> None:
        """Stop accepting, cut every connection and join every thread."""
        self._closed.set()
        # shutdown() wakes the thread blocked in accept(); close() alone does not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join()
        with self._lock:
            pipes, sockets = list(self._pipes), list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for pipe in pipes:
            pipe.join()
        for sock in sockets:
            sock.close()

    def __enter__(self) -> LatencyProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
