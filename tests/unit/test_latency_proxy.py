"""The benchmarks' latency proxy: bytes unchanged, delay applied, flights counted."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from latency_proxy import LatencyProxy

Handler = Callable[[socket.socket], None]


class OneShotServer:
    """Serves one connection on 127.0.0.1 with ``handler``; re-raises its errors."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = self._listener.getsockname()[:2]
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
            with conn:
                self._handler(conn)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        data = sock.recv(min(n - got, 65536))
        assert data, f"EOF after {got} of {n} bytes"
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def recv_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        data = sock.recv(1)
        assert data, f"EOF inside line {line!r}"
        line += data
    return line


def recv_all(sock: socket.socket) -> bytes:
    parts = []
    while data := sock.recv(65536):
        parts.append(data)
    return b"".join(parts)


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], OneShotServer]]:
    servers: list[OneShotServer] = []

    def start(handler: Handler) -> OneShotServer:
        server = OneShotServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def lockstep_server(greeting: bytes | None, replies: int) -> Handler:
    """Optionally greet, then answer each of ``replies`` lines with its upper case."""

    def handler(conn: socket.socket) -> None:
        if greeting is not None:
            conn.sendall(greeting)
        for _ in range(replies):
            conn.sendall(recv_line(conn).upper())
        assert recv_all(conn) == b""

    return handler


def test_bytes_cross_unchanged_both_ways(
    serve: Callable[[Handler], OneShotServer],
) -> None:
    down = os.urandom(3_000_000)
    up = os.urandom(2_000_000)
    received: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        conn.sendall(down)
        received.append(recv_all(conn))

    server = serve(handler)
    with LatencyProxy(server.address) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_exactly(client, len(down)) == down
            client.sendall(up)
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b""
    server.close()
    assert received == [up]
    [stats] = proxy.connections
    assert (stats.bytes_up, stats.bytes_down) == (len(up), len(down))


def test_flights_count_each_wait_for_the_server(
    serve: Callable[[Handler], OneShotServer],
) -> None:
    server = serve(lockstep_server(b"* OK ready\r\n", replies=3))
    with LatencyProxy(server.address) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_line(client) == b"* OK ready\r\n"
            for word in (b"a1 capability\r\n", b"a2 login\r\n", b"a3 select\r\n"):
                client.sendall(word[:3])
                client.sendall(word[3:])  # a second send before any reply: same flight
                assert recv_line(client) == word.upper()
            assert proxy.flights == 3
    assert [c.flights for c in proxy.connections] == [3]


def test_client_speaking_first_counts_a_flight(
    serve: Callable[[Handler], OneShotServer],
) -> None:
    server = serve(lockstep_server(None, replies=2))
    with LatencyProxy(server.address) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as client:
            for word in (b"hello\r\n", b"bye\r\n"):
                client.sendall(word)
                assert recv_line(client) == word.upper()
            assert proxy.flights == 2


def test_pipelined_commands_are_one_flight(
    serve: Callable[[Handler], OneShotServer],
) -> None:
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"+OK\r\n")
        lines = [recv_line(conn) for _ in range(3)]
        conn.sendall(b"".join(line.upper() for line in lines))
        assert recv_all(conn) == b""

    server = serve(handler)
    with LatencyProxy(server.address) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_line(client) == b"+OK\r\n"
            for line in (b"one\r\n", b"two\r\n", b"three\r\n"):
                client.sendall(line)
            assert [recv_line(client) for _ in range(3)] == [
                b"ONE\r\n",
                b"TWO\r\n",
                b"THREE\r\n",
            ]
            assert proxy.flights == 1


def test_flights_add_up_over_connections_and_reset(
    serve: Callable[[Handler], OneShotServer],
) -> None:
    first = serve(lockstep_server(b"hi\r\n", replies=1))
    second = serve(lockstep_server(b"hi\r\n", replies=2))
    with LatencyProxy(first.address) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_line(client) == b"hi\r\n"
            client.sendall(b"x\r\n")
            assert recv_line(client) == b"X\r\n"
        proxy.upstream = second.address
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_line(client) == b"hi\r\n"
            for word in (b"y\r\n", b"z\r\n"):
                client.sendall(word)
                assert recv_line(client) == word.upper()
            assert proxy.flights == 3
            proxy.reset()
            assert proxy.flights == 0


def test_every_chunk_waits_out_the_delay(
    serve: Callable[[Handler], OneShotServer],
) -> None:
    waits: list[float] = []
    server = serve(lockstep_server(b"* OK\r\n", replies=2))
    # A clock that never moves: each chunk is due exactly `delay` after it was
    # read, so the writer must ask to sleep for exactly that long.
    with LatencyProxy(
        server.address, delay=0.04, clock=lambda: 1000.0, sleep=waits.append
    ) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_line(client) == b"* OK\r\n"
            for word in (b"a\r\n", b"b\r\n"):
                client.sendall(word)
                assert recv_line(client) == word.upper()
            # greeting + two commands + two replies, at least one chunk each
            assert len(waits) >= 5
    assert waits == pytest.approx([0.04] * len(waits))


def test_no_delay_means_no_sleep(serve: Callable[[Handler], OneShotServer]) -> None:
    waits: list[float] = []
    server = serve(lockstep_server(b"* OK\r\n", replies=1))
    with LatencyProxy(server.address, sleep=waits.append) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_line(client) == b"* OK\r\n"
            client.sendall(b"a\r\n")
            assert recv_line(client) == b"A\r\n"
    assert waits == []


def test_close_cuts_open_connections(serve: Callable[[Handler], OneShotServer]) -> None:
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"* OK\r\n")
        assert recv_all(conn) == b""

    server = serve(handler)
    proxy = LatencyProxy(server.address)
    with socket.create_connection((proxy.host, proxy.port)) as client:
        assert recv_line(client) == b"* OK\r\n"
        proxy.close()
        assert recv_all(client) == b""


def test_bandwidth_spaces_bytes_by_their_count(
    serve: Callable[[Handler], OneShotServer],
) -> None:
    down = os.urandom(200_000)
    rate = 8_000_000  # bits per second: 1,000,000 bytes per second
    waits: list[float] = []

    def handler(conn: socket.socket) -> None:
        conn.sendall(down)
        assert recv_all(conn) == b""

    server = serve(handler)
    # A clock that never moves: each slice is due when the link has carried
    # every byte before it and itself, so the waits count bytes.
    with LatencyProxy(
        server.address, bandwidth=rate, clock=lambda: 1000.0, sleep=waits.append
    ) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_exactly(client, len(down)) == down
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b""
    server.close()
    [stats] = proxy.connections
    assert stats.bytes_down == len(down)
    # Bytes carried by the time each slice is due: increasing, in slices of
    # at most 16 KiB, the last one the whole download.
    carried = sorted({round(wait * rate / 8) for wait in waits})
    assert carried[-1] == len(down)
    steps = [b - a for a, b in zip([0, *carried], carried, strict=False)]
    assert all(0 < step <= 16 * 1024 for step in steps)
    assert sum(steps) == len(down)


def test_no_bandwidth_limit_leaves_chunks_whole(
    serve: Callable[[Handler], OneShotServer],
) -> None:
    down = os.urandom(100_000)
    server = serve(lockstep_server(down, replies=0))
    with LatencyProxy(server.address) as proxy:
        assert proxy.bandwidth is None
        with socket.create_connection((proxy.host, proxy.port)) as client:
            assert recv_exactly(client, len(down)) == down
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b""
