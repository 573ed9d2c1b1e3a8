"""The socket layer under gmail_xoauth2.IMAP4: TLS, compression, our own read buffer.

imaplib reads through ``sock.makefile()``, whose buffer cannot be inspected
without blocking (and Python 3.14 deprecates ``IMAP4.file``). Reading into a
buffer of our own lets the wrapper see, without blocking, whether the server
already ended the session before a command is sent. Once COMPRESS=DEFLATE
(RFC 4978) is on, the buffer holds inflated bytes: every bound and every
check (lines, literals, replies, hang-ups, IDLE's wait) sees the plain text.
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import sys
import time
from typing import Any

from ._imap_compress import Deflater, Inflater
from ._limits import ReplyMeter
from ._mailconn import readable
from .errors import ProtocolError

__all__ = ["BufferedTransport"]

_CHUNK = 65536
# A literal is received (and inflated) in steps of at most this: larger ones
# cost a 25 MB literal 3 MiB more peak memory (heap fragmentation) for nothing.
_MAX_INFLATE_STEP = 1 << 16
_FIRST_LITERAL_STEP = 1 << 18
_LF = b"\n"


class BufferedTransport:
    """Mixin placed before :class:`imaplib.IMAP4`: open, read, readline, send, shutdown.

    These are the methods imaplib documents as overridable. ``sends`` counts
    writes that completed, so a caller can tell whether a command reached the
    wire at all. Every read is charged to ``_meter``, the current reply's
    :class:`ReplyMeter`: lines, literals and whole replies stay within the
    connection's Limits, and a reply must end before its deadline even while
    bytes keep arriving.
    """

    host: str
    port: int
    sock: socket.socket
    _rbuf: bytes
    _rpos: int
    _sends: int
    _timeout: float | None
    _use_starttls: bool
    _ssl_context: ssl.SSLContext
    _meter: ReplyMeter
    _wake: socket.socket | None
    """Set while idling: readable when another thread wants the wait to end."""
    # Set once COMPRESS DEFLATE was accepted; a new session starts without.
    _inflater: Inflater | None = None
    _deflater: Deflater | None = None

    def _create_socket(self, timeout: float | None) -> socket.socket:
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")
        sys.audit("imaplib.open", self, self.host, self.port)
        sock = socket.create_connection((self.host, self.port), timeout)
        if self._use_starttls:
            return sock
        try:
            return self._ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def open(
        self, host: str = "", port: int = 993, timeout: float | None = None
    ) -> None:
        """Connect to ``host:port`` (implicit TLS unless STARTTLS was asked for)."""
        self.host = host
        self.port = port
        self._rbuf, self._rpos = b"", 0
        self._inflater = self._deflater = None
        self._meter.start()  # the greeting is a reply too
        self.sock = self._create_socket(timeout)

    def _recv_upto(self, n: int) -> bytes:
        """At most ``n`` bytes (inflated ones once COMPRESS is on); charged."""
        if self._inflater is not None:
            return self._recv_inflated(min(n, _MAX_INFLATE_STEP))
        data = self._recv_wire(min(n, _CHUNK))
        self._meter.charge(len(data))
        return data

    def _recv(self) -> bytes:
        """Receive a chunk within the reply's deadline; charge the bytes."""
        if self._inflater is not None:
            return self._recv_inflated(_CHUNK)
        data = self._recv_wire()
        self._meter.charge(len(data))
        return data

    def _recv_wire(self, n: int = _CHUNK) -> bytes:
        """At most ``n`` bytes as they came off the socket, within the deadline."""
        wait = self._meter.recv_timeout(self._timeout)
        if wait != self._timeout:
            chunk = bytearray(n)
            del chunk[self._recv_by_deadline(wait, memoryview(chunk)) :]
            return bytes(chunk)
        return self.sock.recv(n)

    def _recv_inflated(self, limit: int) -> bytes:
        """At most ``limit`` inflated bytes (b"" at EOF); charge them.

        Compressed bytes are received only when what is already here does
        not inflate to anything, so memory is bounded by ``limit`` and one
        chunk of input, whatever the input inflates to.
        """
        inflater = self._inflater
        assert inflater is not None
        while True:
            data = inflater.inflate(limit)
            if data:
                self._meter.charge(len(data))
                return data
            if inflater.ended:
                return b""
            raw = self._recv_wire()
            if not raw:
                return b""
            inflater.feed(raw)

    def _recv_by_deadline(self, wait: float | None, view: memoryview) -> int:
        """A receive whose timeout is the time left before the reply's deadline."""
        meter = self._meter
        sock = self.sock
        sock.settimeout(wait)
        try:
            return sock.recv_into(view)
        except TimeoutError as exc:
            if meter.expired():
                raise meter.too_slow() from exc
            raise
        finally:
            sock.settimeout(self._timeout)

    def read(self, size: int) -> bytes:
        """Read a literal of ``size`` bytes (fewer at EOF).

        The size is checked against ``Limits.literal_bytes`` first, and memory
        grows with the bytes received, never with the size announced (a
        server may announce ``{99999999999}`` and hang up).
        """
        self._meter.check_literal(size)
        buf, pos = self._rbuf, self._rpos
        have = len(buf) - pos
        if have >= size:
            self._rpos = pos + size
            return buf[pos : pos + size]
        # The result grows in steps of doubling size, each allocated exactly
        # (a jump past BytesIO's overallocation), and getvalue() hands its
        # buffer over without a copy. Chunks are written in, never received
        # through getbuffer(): an export alive in a traceback makes the
        # garbage collector of some CPython 3.12 releases crash.
        out = io.BytesIO()
        out.write(memoryview(buf)[pos:])
        self._rbuf, self._rpos = b"", 0
        capacity = have
        while have < size:
            if have == capacity:
                capacity = min(size, max(2 * capacity, _FIRST_LITERAL_STEP))
                out.seek(capacity - 1)
                out.write(b"\0")
            chunk = self._recv_upto(capacity - have)
            if not chunk:
                break
            out.seek(have)
            out.write(chunk)
            have += len(chunk)
        out.truncate(have)
        return out.getvalue()

    def readline(self) -> bytes:
        """Read one line with its LF (b"" at EOF, a partial line before EOF)."""
        buf = self._rbuf
        pos = self._rpos
        end = buf.find(_LF, pos) + 1
        if end:
            self._rpos = end
            return buf[pos:end]
        return self._readline_slow()

    def _readline_slow(self) -> bytes:
        """The rest of a line that is not in the buffer yet, within line_bytes."""
        meter = self._meter
        parts = [self._rbuf[self._rpos :]]
        size = len(parts[0])
        self._rbuf, self._rpos = b"", 0
        while True:
            meter.check_line(size)
            chunk = self._recv()
            if not chunk:
                return b"".join(parts)
            end = chunk.find(_LF) + 1
            if end:
                meter.check_line(size + end)
                parts.append(chunk[:end])
                self._rbuf, self._rpos = chunk, end
                return b"".join(parts)
            parts.append(chunk)
            size += len(chunk)

    def send(self, data: Any) -> None:
        """Send ``data`` (compressed once COMPRESS is on); counted once it is out."""
        sys.audit("imaplib.send", self, data)
        deflater = self._deflater
        self.sock.sendall(data if deflater is None else deflater.compress(data))
        # A command whose first write failed never reached the server.
        self._sends += 1

    def shutdown(self) -> None:
        """Close the connection (quietly if the peer already did)."""
        sock = getattr(self, "sock", None)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    def starttls_wrap(self, host: str) -> None:
        """Wrap the socket in TLS after STARTTLS; forget bytes received in clear.

        Anything already buffered was sent before the handshake, possibly by a
        man in the middle (the STARTTLS command-injection hole, RFC 3207 4.2).
        """
        self.sock = self._ssl_context.wrap_socket(self.sock, server_hostname=host)
        self._rbuf, self._rpos = b"", 0

    def start_compression(self) -> None:
        """Compress both ways from now on: the server accepted COMPRESS DEFLATE.

        Whatever is buffered past the OK was sent compressed (RFC 4978
        section 3: the server starts right after its OK line).
        """
        rest = self._rbuf[self._rpos :]
        self._rbuf, self._rpos = b"", 0
        self._inflater = Inflater(self._meter.where, rest)
        self._deflater = Deflater()

    def _inflate_buffered(self, limit: int) -> None:
        """Inflate what is already here into the buffer, up to ``limit`` bytes.

        Never blocks, never charges the reply: what it buffers is bounded by
        ``limit`` and read later by readline, which bounds the line.
        """
        inflater = self._inflater
        if inflater is None or not inflater.pending:
            return
        parts = [self._rbuf[self._rpos :]]
        size = len(parts[0])
        while size <= limit:
            data = inflater.inflate(min(_CHUNK, limit + 1 - size))
            if not data:
                break
            parts.append(data)
            size += len(data)
        self._rbuf, self._rpos = b"".join(parts), 0

    def _read_ready(self, limit: int) -> tuple[int, bool]:
        """Read what the socket holds now, without blocking: (bytes, EOF seen).

        At most about ``limit`` bytes; compressed bytes go to the inflater,
        plain ones to the buffer.
        """
        sock = self.sock
        inflater = self._inflater
        pending = []
        size = 0
        eof = False
        sock.setblocking(False)
        try:
            while size <= limit:
                chunk = sock.recv(_CHUNK)
                if not chunk:
                    eof = True
                    break
                if inflater is None:
                    pending.append(chunk)
                else:
                    inflater.feed(chunk)
                size += len(chunk)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        finally:
            sock.settimeout(self._timeout)
        if pending:
            self._rbuf = self._rbuf[self._rpos :] + b"".join(pending)
            self._rpos = 0
        return size, eof

    def server_hung_up(self) -> str | None:
        """Why the session is over, if the server already said so. Never blocks.

        Reads whatever is waiting on the socket (at most ``Limits.line_bytes``,
        inflated when COMPRESS is on) into the buffer: EOF or a ``* BYE`` line
        means a command sent now would go nowhere, and so does a server that
        talks that much unasked, or sends what does not inflate.
        """
        limit = self._meter.limits.line_bytes
        try:
            _, eof = self._read_ready(limit)
        except OSError as exc:
            return f"connection error: {exc}"
        try:
            self._inflate_buffered(limit)
        except ProtocolError as exc:
            return str(exc)
        inflater = self._inflater
        if inflater is not None and inflater.ended:
            eof = True
        size = len(self._rbuf) - self._rpos
        if size > limit:
            return f"the server sent more than {limit} bytes unasked"
        for line in self._rbuf[self._rpos :].split(_LF):
            if line.startswith(b"* BYE"):
                return line[2:].rstrip().decode("utf-8", "replace")
        return "the server closed the connection" if eof else None

    def wait_readable(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever) for a line to read."""
        if _LF in self._rbuf[self._rpos :]:
            return True
        if self._inflater is not None:
            return self._wait_inflated(timeout)
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        wait = None if timeout is None else max(0.0, timeout)
        return self._select(wait)

    def _select(self, wait: float | None) -> bool:
        """Wait for the socket or the wake socket; False when woken.

        poll(), not select(): select() refuses descriptors from 1,024 up, which
        a process holding hundreds of connections (three descriptors each
        while idling) reaches.
        """
        sock = self.sock
        wake = self._wake
        ready = readable([sock] if wake is None else [sock, wake], wait)
        if wake is not None and wake.fileno() in ready:
            with contextlib.suppress(OSError):
                wake.recv(64)
            return False
        return bool(ready)

    def _wait_inflated(self, timeout: float | None) -> bool:
        """wait_readable under COMPRESS: True once a whole inflated line is here.

        A readable socket is not enough: its bytes may inflate to part of a
        line or to nothing at all (the empty block a sync flush ends with),
        and a readline then would block past IDLE's wait. So whatever
        arrives is read and inflated now, until a line (or EOF, or more than
        a line may hold: readline raises) is buffered or the time is up.
        """
        limit = self._meter.limits.line_bytes
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        inflater = self._inflater
        assert inflater is not None
        while True:
            self._inflate_buffered(limit)
            buffered = self._rbuf[self._rpos :]
            if _LF in buffered or len(buffered) > limit or inflater.ended:
                return True
            sock = self.sock
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                wait = None if end is None else max(0.0, end - time.monotonic())
                if not self._select(wait):
                    return False
            _, eof = self._read_ready(limit)
            if eof:
                return True
