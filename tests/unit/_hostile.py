"""A harness for hostile and broken servers: scripted peers on loopback, bounded runs.

A :class:`ScriptedServer` accepts connections on 127.0.0.1 (implicit TLS, or
plain for STARTTLS tests) and hands each to a script that may send anything:
garbage, endless streams, huge lines, trickles. :func:`attack` runs a client
call in a worker thread under a hard wall-clock bound (a hang fails the test
instead of hanging CI), with tracemalloc measuring its peak memory, every log
record captured and the standard library's debug output (stdout/stderr)
captured; :func:`assert_no_secret` then looks for secrets in all of it and in
the whole exception chain.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gmail_xoauth2 import sasl

USER = "alice@example.com"
TOKEN = "ya29.hostile-secret-token-0123456789"


def secrets_for(token: str = TOKEN, user: str = USER) -> list[str]:
    """Every form of the secret a client may send: token, SASL raw and base64."""
    forms = [token]
    for raw in (
        sasl.xoauth2_response(user, token),
        sasl.oauthbearer_response(user, token, host="127.0.0.1", port=0),
    ):
        forms.append(base64.b64encode(raw).decode("ascii"))
    return forms


class Closed(Exception):
    """The client went away (or the server is shutting down)."""


class Peer:
    """The server side of one connection."""

    def __init__(self, sock: socket.socket, server: ScriptedServer, index: int):
        self.sock = sock
        self.server = server
        self.index = index  # 0 for the first connection, 1 for the next...
        self.buffer = b""

    @property
    def stopping(self) -> bool:
        return self.server.stop.is_set()

    def send(self, data: bytes, *, crlf: bool = True) -> None:
        """Send ``data`` (plus CRLF); :class:`Closed` once the client is gone."""
        if self.stopping:
            raise Closed
        try:
            self.sock.sendall(data + (b"\r\n" if crlf else b""))
        except OSError as exc:
            raise Closed from exc

    def flood(self, data: bytes, *, limit: int = 1 << 34) -> None:
        """Send ``data`` over and over until the client goes away (or ``limit`` B)."""
        chunk = data * max(1, 65536 // max(1, len(data)))
        sent = 0
        while sent < limit:
            self.send(chunk, crlf=False)
            sent += len(chunk)

    def trickle(self, data: bytes, *, every: float = 0.02) -> None:
        """Send ``data`` one byte at a time, ``every`` seconds apart, forever."""
        while True:
            for byte in data:
                self.send(bytes([byte]), crlf=False)
                if self.server.stop.wait(every):
                    raise Closed

    def line(self) -> bytes:
        """One line from the client, without its CRLF (recorded)."""
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise Closed from exc
            if not chunk:
                raise Closed
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        line = line.rstrip(b"\r")
        self.server.received.append(line)
        return line

    def tag(self) -> bytes:
        """Read an IMAP command; return its tag."""
        return self.line().split(b" ", 1)[0]

    def starttls(self) -> None:
        self.buffer = b""
        self.sock = self.server.tls.wrap_socket(self.sock, server_side=True)

    def close(self) -> None:
        """Hang up now (ends the script: raises :class:`Closed`)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        raise Closed

    def hang(self) -> None:
        """Say nothing until the test ends (or the client hangs up)."""
        while not self.stopping:
            with contextlib.suppress(Closed):
                self.line()
                continue
            return

    def drain(self) -> None:
        """Read (and record) whatever the client sends until it hangs up."""
        with contextlib.suppress(Closed):
            while True:
                self.line()


Script = Callable[[Peer], None]


class ScriptedServer:
    """Accepts connections on loopback and runs ``script`` for each, in threads.

    With ``tls=True`` the connection is wrapped in TLS first (implicit TLS);
    otherwise it is plain and the script may call :meth:`Peer.starttls`.
    Exceptions raised by a script (other than the client leaving) are kept and
    re-raised by :meth:`close`, so a script's own assertions count.
    """

    def __init__(self, script: Script, tls: ssl.SSLContext, *, implicit: bool):
        self.script = script
        self.tls = tls
        self.implicit = implicit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.stop.is_set():
                conn.close()
                return
            index = self.connections
            self.connections += 1
            self._socks.append(conn)
            thread = threading.Thread(
                target=self._serve, args=(conn, index), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        peer = Peer(conn, self, index)
        try:
            if self.implicit:
                peer.sock = self.tls.wrap_socket(conn, server_side=True)
            self.script(peer)
            peer.drain()
        except (Closed, OSError, ssl.SSLError):
            pass
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            # After STARTTLS (or implicit TLS) the peer's socket is the TLS one.
            for sock in (peer.sock, conn):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self.stop.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would
        # leave it there for the life of the process.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        self._accept.join(timeout=10)
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)
        if self.errors:
            raise self.errors[0]


@dataclass
class Outcome:
    """What a client call did under attack."""

    result: Any = None
    error: BaseException | None = None
    seconds: float = 0.0
    peak_bytes: int = 0
    records: list[logging.LogRecord] = field(default_factory=list)
    output: str = ""

    def texts(self) -> Iterator[str]:
        """Every text that could leak: the exception chain, logs, debug output."""
        seen: set[int] = set()
        stack: list[BaseException | None] = [self.error]
        while stack:
            exc = stack.pop()
            if exc is None or id(exc) in seen:
                continue
            seen.add(id(exc))
            yield str(exc)
            yield repr(exc)
            yield repr(exc.args)
            yield repr(getattr(exc, "__dict__", {}))
            yield repr(getattr(exc, "__notes__", []))
            stack += [exc.__cause__, exc.__context__]
        for record in self.records:
            yield record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                yield logging.Formatter().formatException(record.exc_info)
        yield self.output
        if self.result is not None:
            yield repr(self.result)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def attack(
    call: Callable[[], Any], *, seconds: float = 15.0, trace: bool = True
) -> Outcome:
    """Run ``call`` in a thread; fail if it takes longer than ``seconds``.

    Logs of every logger are captured at DEBUG, stdout and stderr (where the
    stdlib's debug output goes) are captured, and tracemalloc reports the
    peak of memory allocated meanwhile (``trace=False`` skips it, for runs
    whose allocations would make tracing slow; ``peak_bytes`` is then 0).
    """
    outcome = Outcome()
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    out = io.StringIO()
    done = threading.Event()

    def work() -> None:
        try:
            outcome.result = call()
        except BaseException as exc:
            outcome.error = exc
        finally:
            done.set()

    if trace:
        tracemalloc.start()
    start = time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            worker = threading.Thread(target=work, daemon=True)
            worker.start()
            finished = done.wait(seconds)
        outcome.seconds = time.monotonic() - start
        if trace:
            outcome.peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        if trace:
            tracemalloc.stop()
        root.removeHandler(capture)
        root.setLevel(old_level)
    outcome.records = capture.records
    outcome.output = out.getvalue()
    if not finished:
        raise AssertionError(f"the client did not finish within {seconds}s: a hang")
    return outcome


def assert_no_secret(outcome: Outcome, secrets: list[str] | None = None) -> None:
    """No secret in the exception chain, reprs, log records or debug output."""
    for text in outcome.texts():
        for secret in secrets or secrets_for():
            assert secret not in text, f"secret leaked in: {text[:300]!r}"


def assert_raised(outcome: Outcome, *types: type[BaseException]) -> BaseException:
    """The call raised one of ``types`` (and nothing undocumented)."""
    error = outcome.error
    assert error is not None, f"no exception; returned {outcome.result!r}"
    assert isinstance(error, types), f"{type(error).__mro__}: {error}"
    return error


@contextlib.contextmanager
def serving(
    script: Script, tls: ssl.SSLContext, *, implicit: bool = True
) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script, tls, implicit=implicit)
    try:
        yield server
    finally:
        server.close()
