"""The fake servers' line machinery: a threaded TLS line server and its connections.

Each protocol server (IMAP, POP3, SMTP) subclasses :class:`LineServer` and
:class:`Connection`; one :class:`~._backend.Backend` is shared by all of them
(its names are re-exported here).
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar, Literal

from ._backend import (
    AuthFailure,
    Backend,
    FaultAction,
    Faults,
    Grant,
    TokenInfoLike,
    TokenLookup,
    TranscriptLine,
)

__all__ = [
    "AuthFailure",
    "Backend",
    "Connection",
    "FaultAction",
    "Faults",
    "Grant",
    "LineServer",
    "TokenInfoLike",
    "TokenLookup",
    "TranscriptLine",
    "gmail_id",
]

logger = logging.getLogger(__name__)

_MAX_LINE = 1 << 20  # longer lines are a broken client: the fake hangs up
_BUFSIZE = 65536
# Inflated in steps of this, so a client's zip bomb costs the fake one step.
_INFLATE_STEP = 1 << 20


def gmail_id(conn_id: int) -> str:
    """The server-side id Gmail puts in its greeting and replies, for a connection.

    Gmail's ids look like ``d75a77b69052e-2b0c1c0a3f5sm1234567pfb``; the fake's are
    derived from the connection id so tests can predict the exact lines.
    """
    return f"fake{conn_id:04d}mb{(conn_id * 2654435761) % 10**8:08d}gmx"


class _Disconnected(Exception):
    """The connection is gone (peer hung up, or the server ended it)."""


class Connection:
    """One client connection, served by its own thread.

    Subclasses set ``protocol``, write :meth:`greet` and :meth:`handle_line`, and
    run each command through :meth:`dispatch` so the fault controls apply.
    Server lines go out with :meth:`send_line`; a multi-step command reads
    the client's next lines with :meth:`readline` (and IMAP literals with
    :meth:`read_exact`).
    """

    protocol: ClassVar[str] = ""

    def __init__(self, server: LineServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.backend = server.backend
        self.sock = sock
        self.peer = peer
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.grant: Grant | None = None
        self.conn_id = self.backend._connection_opened(self)
        self.gmail_id = gmail_id(self.conn_id)
        self.last_active = self.backend.clock()
        self._buffer = bytearray()
        self._wlock = threading.RLock()
        self._mode: Literal["send", "drop", "hold"] = "send"
        self._held: list[bytes] = []
        self._hold: threading.Event | None = None
        self._close_after_hold = False
        self._handler = 0
        self._closing = False
        # COMPRESS=DEFLATE (RFC 4978), once started: raw DEFLATE both ways.
        self._deflate: zlib._Compress | None = None
        self._inflate: zlib._Decompress | None = None
        self._inflate_more = False
        # While a command runs its replies stay in the compressor; the flush
        # comes when it ends, or when the client must answer (a continuation).
        self._corked = False
        self._unflushed = False

    # -- what subclasses write ------------------------------------------------------

    def greet(self) -> None:
        """Send the greeting."""
        raise NotImplementedError

    def handle_line(self, line: bytes) -> None:
        """Handle one command line (without CRLF)."""
        raise NotImplementedError

    def is_continuation(self, line: bytes) -> bool:
        """Whether a server line asks the client to go on (``+``, ``334``, ``354``)."""
        return False

    def fault_reply(self, line: bytes) -> tuple[list[bytes], bool]:
        """The lines a ``"reply"`` fault sends, and whether to close after them."""
        return [line], False

    def session_end_lines(self, reason: str, text: str | None) -> list[bytes]:
        """What to send when the session ends.

        Args:
            reason: ``"expired"`` (the token expired on the clock), ``"ended"``
                (``end_sessions``) or ``"idle"``.
            text: the line a test asked for instead of the default, if any.
        """
        return [text.encode()] if text is not None else []

    def check_time(self, now: datetime) -> bool:
        """End the session if its token expired; return whether it goes on."""
        grant = self.grant
        if grant is not None and grant.expires_at is not None:
            if now >= grant.expires_at:
                self.end_session("expired")
                return False
        return True

    # -- lifecycle ----------------------------------------------------------------

    def run(self) -> None:
        """Serve the connection until it ends; record unexpected errors."""
        self._handler = threading.get_ident()
        try:
            if not self.tls and self.server.implicit_tls:
                self._wrap()
            self.dispatch("GREETING", self.greet)
            while not self._closing:
                line = self.readline()
                now = self.backend.clock()
                if not self.check_time(now):
                    break
                self.last_active = now
                self.handle_line(line)
        except _Disconnected:
            pass
        except (OSError, ssl.SSLError) as exc:
            if not self._closing:
                logger.debug("%s connection %d: %r", self.protocol, self.conn_id, exc)
        except Exception as exc:
            logger.exception("%s connection %d failed", self.protocol, self.conn_id)
            self.server._errors.append(exc)
        finally:
            self.close()
            self.sock.close()
            self.backend._connection_closed(self)
            self.server._forget(self)

    def close(self) -> None:
        """Hang up; safe from any thread (the handler thread frees the socket)."""
        with self._wlock:
            if (
                self._mode == "hold"
                and threading.get_ident() == self._handler
                and not self._closing
            ):
                # The command itself hangs up (QUIT): after its held reply.
                self._close_after_hold = True
                return
            self._closing = True
            hold = self._hold
        if hold is not None:
            # A reply held for the test will never be sent: stop waiting.
            hold.set()
        try:
            # The plain socket's shutdown wakes a recv() in the handler thread,
            # even under TLS (SSLSocket.shutdown would tear down its SSL state).
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    @property
    def closing(self) -> bool:
        """Whether the connection is being closed."""
        return self._closing

    def end_session(self, reason: str, text: str | None = None) -> None:
        """Send the protocol's session-end lines (ignoring holds) and hang up."""
        with self._wlock:
            if self._closing:
                return
            try:
                for line in self.session_end_lines(reason, text):
                    self._write(line + b"\r\n", line)
            except OSError:
                pass
        logger.debug(
            "%s connection %d: session %s", self.protocol, self.conn_id, reason
        )
        self.close()

    # -- commands and faults ------------------------------------------------------

    def dispatch(self, command: str, execute: Callable[[], None]) -> None:
        """Run one command, applying the faults armed for it."""
        fault, hold = self.backend.faults.take(self.protocol, command)
        self._corked = True
        if hold is not None:
            with self._wlock:
                self._mode = "hold"
                self._hold = hold
                if self._closing:
                    hold.set()
        try:
            if fault is None:
                execute()
            elif fault.action == "drop_before":
                self.close()
                raise _Disconnected
            elif fault.action == "reply":
                assert fault.line is not None
                lines, hang_up = self.fault_reply(fault.line)
                for line in lines:
                    self.send_line(line)
                if hang_up:
                    self.close()
            else:
                with self._wlock:
                    self._mode = "drop"
                execute()
                self.close()
                raise _Disconnected
        finally:
            if hold is not None:
                hold.wait()
                with self._wlock:
                    self._mode = "send"
                    self._hold = None
                    held, self._held = self._held, []
                    for data in held:
                        if not self._closing:
                            self._write(data, data.removesuffix(b"\r\n"))
                if self._close_after_hold:
                    self.close()
            self._corked = False
            self.flush_output()

    def flush_output(self) -> None:
        """Under COMPRESS: send what the compressor holds (Z_SYNC_FLUSH)."""
        with self._wlock:
            deflate = self._deflate
            if deflate is None or not self._unflushed or self._closing:
                return
            self._unflushed = False
            try:
                self.sock.sendall(deflate.flush(zlib.Z_SYNC_FLUSH))
            except OSError:
                pass  # the client is gone: the read loop finds out

    # -- I/O ----------------------------------------------------------------------

    def send_line(self, line: bytes) -> None:
        """Send one line (CRLF is added); recorded as sent."""
        self.send(line + b"\r\n", record=line, continuation=self.is_continuation(line))

    def send(
        self,
        data: bytes,
        *,
        record: bytes | None = None,
        continuation: bool = False,
        flush: bool = True,
    ) -> None:
        """Send raw bytes (an IMAP literal, say), recorded as ``record`` or as is.

        Under COMPRESS, ``flush=False`` leaves the bytes in the compressor
        until a later send flushes (the pieces of one response).
        """
        with self._wlock:
            if self._closing:
                raise _Disconnected
            if self._mode == "drop" and not continuation:
                return
            if self._mode == "hold" and not continuation:
                self._held.append(data)
                return
            self._write(
                data,
                data if record is None else record,
                flush=continuation or (flush and not self._corked),
            )

    def _write(self, data: bytes, record: bytes, *, flush: bool = True) -> None:
        self.backend.record(self.protocol, self.conn_id, "S", record)
        deflate = self._deflate
        if deflate is not None:
            # RFC 4978 section 4: a sync flush after each reply, so the client
            # can read it whole; the dictionary carries over.
            data = deflate.compress(data)
            self._unflushed = not flush
            if flush:
                data += deflate.flush(zlib.Z_SYNC_FLUSH)
            if not data:
                return
        self.sock.sendall(data)

    @property
    def compressed(self) -> bool:
        """Whether COMPRESS=DEFLATE is on for this connection."""
        return self._deflate is not None

    def start_compression(self) -> None:
        """Compress both ways from now on (after the OK to COMPRESS was sent).

        Bytes the client sent after its command, already buffered, were
        compressed: they go through the inflater too.
        """
        with self._wlock:
            self._deflate = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        early = bytes(self._buffer)
        self._buffer.clear()
        if early:
            self._buffer += self._inflated(early)

    def _inflated(self, data: bytes) -> bytes:
        inflate = self._inflate
        assert inflate is not None
        try:
            out = inflate.decompress(data, _INFLATE_STEP)
        except zlib.error as exc:
            logger.debug(
                "%s connection %d: bad DEFLATE data", self.protocol, self.conn_id
            )
            raise _Disconnected from exc
        self._inflate_more = len(out) == _INFLATE_STEP
        return out

    @property
    def inflate_pending(self) -> bool:
        """Whether the inflater holds input (or output) not yet in the buffer."""
        inflate = self._inflate
        return inflate is not None and (
            bool(inflate.unconsumed_tail) or self._inflate_more
        )

    def _fill(self) -> None:
        if self.inflate_pending:
            assert self._inflate is not None
            self._buffer += self._inflated(self._inflate.unconsumed_tail)
            return
        try:
            chunk = self.sock.recv(_BUFSIZE)
        except (OSError, ssl.SSLError) as exc:
            raise _Disconnected from exc
        if not chunk:
            raise _Disconnected
        if self._inflate is not None:
            chunk = self._inflated(chunk)
        self._buffer += chunk

    def readline(self) -> bytes:
        """Read the client's next line, without its CRLF; recorded as received.

        Raises:
            _Disconnected: the client hung up (handled by :meth:`run`).
        """
        while True:
            if self._closing:
                raise _Disconnected
            end = self._buffer.find(b"\n")
            if end >= 0:
                break
            if len(self._buffer) > _MAX_LINE:
                raise _Disconnected
            self._fill()
        line = bytes(self._buffer[:end]).removesuffix(b"\r")
        del self._buffer[: end + 1]
        self.backend.record(self.protocol, self.conn_id, "C", line)
        return line

    def read_exact(self, size: int) -> bytes:
        """Read exactly ``size`` bytes (an IMAP literal); recorded as one entry."""
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.backend.record(self.protocol, self.conn_id, "C", data)
        return data

    def starttls(self) -> None:
        """Upgrade to TLS in place, after the reply to STARTTLS was sent.

        Anything the client sent after the command is discarded (RFC 3207
        section 4.2 forbids acting on it: the "STARTTLS command injection" hole).
        """
        self._buffer.clear()
        self._wrap()

    def _wrap(self) -> None:
        """Replace the socket with a TLS one and run the server's handshake.

        The handshake runs after ``self.sock`` is the TLS socket and outside the
        write lock, so :meth:`close` can shut it down from another thread: a
        client that never finishes its handshake cannot hang the server's close.
        """
        with self._wlock:
            try:
                # wrap_socket detaches the plain socket; from here on only the
                # TLS socket's descriptor can be shut down.
                wrapped = self.server.ssl_context.wrap_socket(
                    self.sock, server_side=True, do_handshake_on_connect=False
                )
            except (OSError, ssl.SSLError) as exc:
                raise _Disconnected from exc
            self.sock = wrapped
            if self._closing:
                raise _Disconnected
        try:
            wrapped.do_handshake()
        except (OSError, ssl.SSLError) as exc:
            logger.debug(
                "%s connection %d: TLS handshake failed", self.protocol, self.conn_id
            )
            raise _Disconnected from exc
        self.tls = True

    # -- SASL ---------------------------------------------------------------------

    def sasl_exchange(
        self, mechanism: str, initial: bytes | None, *, challenge_prefix: bytes
    ) -> Grant | AuthFailure | None:
        """Run a SASL exchange as Gmail does; None when the client aborted (``*``).

        Without an initial response the client is sent ``challenge_prefix``
        alone (``b"+ "``, ``b"334 "``) and its line is the response. A rejected
        XOAUTH2/OAUTHBEARER token gets Gmail's JSON error challenge; whatever the
        client answers (the empty line SASL asks for, or its token again, as
        imaplib sends), the result is the failure.
        """
        if initial is None:
            self.send_line(challenge_prefix)
            initial = self.readline()
            if initial == b"*":
                return None
        if initial == b"=":
            # RFC 4959 / RFC 4954: "=" is an empty initial response.
            initial = b""
        outcome = self.backend.authenticate(mechanism, initial)
        if isinstance(outcome, Grant) or outcome.malformed:
            return outcome
        if outcome.reason != "unsupported mechanism":
            self.send_line(challenge_prefix + self.backend.error_challenge)
            if self.readline() == b"*":
                return None
        logger.debug(
            "%s connection %d: authentication failed", self.protocol, self.conn_id
        )
        return outcome


class LineServer:
    """A threaded TCP server on loopback: one thread accepts, one per connection.

    The socket is bound (on port 0 unless given) and listening when the
    constructor returns, before any thread starts.

    Args:
        backend: shared with the other servers.
        ssl_context: the server-side TLS context.
        implicit_tls: TLS from the first byte (993/995/465) or plain (587).
        host: the loopback address to bind.
        port: 0 for a free port chosen by the OS.
    """

    protocol: ClassVar[str] = ""
    connection_class: ClassVar[type[Connection]] = Connection

    def __init__(
        self,
        backend: Backend,
        *,
        ssl_context: ssl.SSLContext,
        implicit_tls: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.backend = backend
        self.ssl_context = ssl_context
        self.implicit_tls = implicit_tls
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(32)
        except OSError:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._connections: dict[Connection, threading.Thread] = {}
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start accepting connections."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(
            target=self._serve, name=f"fake-{self.protocol}-{self.port}", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = [key.fileobj for key, _ in selector.select()]
                if self._wake_r in ready or self._closed:
                    return
                try:
                    sock, address = self._listener.accept()
                except OSError:
                    continue
                self._accept(sock, str(address[0]))

    def _accept(self, sock: socket.socket, peer: str) -> None:
        # Replies go out line by line; without NODELAY, Nagle's algorithm and
        # the client's delayed ACK would stall each multi-line reply ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = self.connection_class(self, sock, peer)
        thread = threading.Thread(
            target=conn.run,
            name=f"fake-{self.protocol}-conn-{conn.conn_id}",
            daemon=True,
        )
        with self._lock:
            self._connections[conn] = thread
        logger.debug("%s connection %d from %s", self.protocol, conn.conn_id, peer)
        thread.start()

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            self._connections.pop(conn, None)

    def connections(self) -> list[Connection]:
        """The connections open now."""
        with self._lock:
            return list(self._connections)

    def end_sessions(self, user: str, text: str | None = None) -> int:
        """End ``user``'s sessions on this server (Gmail's session-expired close).

        Args:
            user: whose sessions.
            text: a line to send instead of the protocol's own.

        Returns:
            How many sessions ended.
        """
        ended = 0
        for conn in self.connections():
            if conn.grant is not None and conn.grant.user == user.lower():
                conn.end_session("ended", text)
                ended += 1
        return ended

    def close(self) -> None:
        """Stop accepting, hang up every connection, join every thread.

        Raises:
            Exception: the first error a connection handler raised, so tests
                see failures of the fake itself.
        """
        if self._closed:
            return
        self._closed = True
        self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        with self._lock:
            pending = list(self._connections.items())
        for conn, _ in pending:
            conn.close()
        for _, thread in pending:
            thread.join()
        if self._errors:
            raise self._errors[0]

    def __enter__(self) -> LineServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
