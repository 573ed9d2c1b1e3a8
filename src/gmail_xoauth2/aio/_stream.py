"""A byte stream for the asyncio drivers: TCP, TLS through a memory BIO, bounded reads.

asyncio's own TLS transport keeps a 256 KiB read buffer per connection
(``asyncio.sslproto.SSLProtocol.max_size``), which makes an idle connection cost
about three times what a thread with imaplib does. Here TLS runs over a plain
transport through :class:`ssl.SSLObject` and a memory BIO, decrypting what
arrives into one buffer that holds only unread bytes: an idle connection costs
the TLS state and nothing more. It also gives STARTTLS (IMAP, POP's STLS) the
same code as implicit TLS, with no loop API needed, and lets the reading side
refuse to buffer more than a reply's bounds allow (reading is paused while
the buffer is full).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl

from .._imap_compress import Deflater, Inflater
from ..errors import ProtocolError

__all__ = ["Stream", "StreamClosed"]

# Read no more than this ahead of the reader (the transport is paused beyond).
_HIGH_WATER = 1024 * 1024
_CHUNK = 64 * 1024


class StreamClosed(ConnectionError):
    """The peer closed the connection, or it failed (the cause says how)."""


class _Protocol(asyncio.Protocol):
    """Receives bytes for a :class:`Stream` (decrypting them once TLS is on)."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._stream._transport = transport

    def data_received(self, data: bytes) -> None:
        self._stream._received(data)

    def eof_received(self) -> bool | None:
        self._stream._closed(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream._closed(exc)

    def pause_writing(self) -> None:
        self._stream._writable.clear()

    def resume_writing(self) -> None:
        self._stream._writable.set()


class Stream:
    """One connection: ``readline``, ``readexactly``, ``write``, ``start_tls``.

    Not for concurrent readers: a driver reads one reply at a time.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._scan = 0  # where to look for the next line end
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False
        self._want = 0  # bytes the reader waits for (may exceed _HIGH_WATER)
        # TLS, once on: the SSL object and its two memory BIOs.
        self._tls: ssl.SSLObject | None = None
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self._handshaking = False
        # COMPRESS=DEFLATE (RFC 4978), once on: what the server sends is
        # inflated into the buffer in bounded steps, what we send deflated.
        self._inflater: Inflater | None = None
        self._deflater: Deflater | None = None

    @classmethod
    async def connect(cls, host: str, port: int) -> Stream:
        """Open a TCP connection (the caller bounds the time)."""
        stream = cls()
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _Protocol(stream), host, port)
        return stream

    # -- reading -----------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return len(self._buf)

    @property
    def at_eof(self) -> bool:
        """True once the peer closed (or the connection failed) and all is read."""
        return (self._eof or self._error is not None) and not self._buf

    def has_line(self) -> bool:
        """True when a whole line is buffered (reading it will not wait)."""
        return self._buf.find(b"\n", self._scan) >= 0

    def peek_unasked(self) -> bool:
        """True when the peer sent something, or closed, with nothing asked.

        Looks at the socket too (no round trip, as the sync classes' select()),
        so a goodbye that arrived since the loop last ran counts.
        """
        if self._buf or self._eof or self._error is not None:
            return True
        if self._inflater is not None and self._inflater.pending:
            return True
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    async def readline(self, limit: int) -> bytes:
        """The next line, with its line end (LF); at most ``limit`` bytes before it.

        Raises:
            LineTooLong: no line end within ``limit`` bytes.
            StreamClosed: the connection ended before a full line.
        """
        while True:
            end = self._buf.find(b"\n", self._scan)
            if end >= 0:
                line = self._take(end + 1)
                self._scan = 0
                self._resume()
                return line
            self._scan = len(self._buf)
            if self._scan > limit:
                raise LineTooLong(self._scan)
            await self._wait(want=self._scan + 1)

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes.

        Raises:
            StreamClosed: the connection ended first.
        """
        while len(self._buf) < n:
            await self._wait(want=n)
        data = self._take(n)
        self._scan = 0
        self._resume()
        return data

    def _take(self, n: int) -> bytes:
        """The first ``n`` buffered bytes, copied once (``bytes(buf[:n])``
        copies twice: a 3 MiB literal cost three times its size at the peak)."""
        with memoryview(self._buf) as view:
            data = bytes(view[:n])
        del self._buf[:n]
        return data

    async def wait_readable(self) -> None:
        """Return once bytes are buffered or the connection ended (reads nothing)."""
        while not (self._buf or self._eof or self._error is not None):
            if self._inflater is not None and self._inflater.pending:
                self._inflate()
                continue
            if self._paused:
                self._resume(force=True)
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    async def _wait(self, want: int = 0) -> None:
        if isinstance(self._error, ProtocolError):
            raise self._error  # what the server sent cannot be inflated
        if self._error is not None:
            raise StreamClosed(f"the connection failed: {self._error}") from self._error
        if self._eof:
            raise StreamClosed("the server closed the connection")
        self._want = want
        if self._inflater is not None and self._inflater.pending:
            before = len(self._buf)
            self._inflate()
            if len(self._buf) > before or self._error is not None or self._eof:
                return
        if self._paused:
            self._resume(force=True)
        # One waiter at a time; a cancelled one must not clear its successor.
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None
                self._want = 0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self, *, force: bool = False) -> None:
        if self._paused and (force or len(self._buf) < _HIGH_WATER):
            self._paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    # -- called by the protocol ----------------------------------------------

    def _received(self, data: bytes) -> None:
        if self._tls is None:
            self._plain(data)
        else:
            assert self._incoming is not None
            self._incoming.write(data)
            if not self._handshaking:
                self._decrypt()
        full = len(self._buf) >= max(_HIGH_WATER, self._want) or (
            self._inflater is not None and self._inflater.backlog >= _HIGH_WATER
        )
        if full and not self._paused:
            self._paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def _decrypt(self) -> None:
        assert self._tls is not None
        try:
            while True:
                chunk = self._tls.read(_CHUNK)
                if not chunk:
                    self._eof = True
                    break
                self._plain(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._eof = True
        except ssl.SSLError as exc:
            self._error = exc
        self._flush()

    def _plain(self, data: bytes) -> None:
        """Take bytes as the peer sent them (decrypted): inflate if compressed."""
        inflater = self._inflater
        if inflater is None:
            self._buf += data
            return
        inflater.feed(data)
        self._inflate()

    def _inflate(self) -> None:
        """Inflate into the buffer up to what the reader needs (bounded steps)."""
        inflater = self._inflater
        assert inflater is not None
        room = max(_HIGH_WATER, self._want)
        try:
            while len(self._buf) < room:
                out = inflater.inflate(_CHUNK)
                if not out:
                    break
                self._buf += out
        except ProtocolError as exc:
            self._error = exc
        if inflater.ended and not inflater.pending:
            self._eof = True

    def _closed(self, exc: BaseException | None) -> None:
        if exc is not None and self._error is None:
            self._error = exc
        self._eof = True
        self._writable.set()
        self._wake()

    # -- writing -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` (encrypted when TLS is on).

        Raises:
            StreamClosed: the connection is closed.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise StreamClosed("the connection is closed")
        if self._deflater is not None:
            data = self._deflater.compress(data)
        if self._tls is None:
            transport.write(data)
            return
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            raise StreamClosed(f"TLS failed: {exc}") from exc
        self._flush()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        await self._writable.wait()
        if self._error is not None:
            raise StreamClosed(f"the connection failed: {self._error}") from self._error

    def _flush(self) -> None:
        outgoing = self._outgoing
        if outgoing is None or self._transport is None:
            return
        data = outgoing.read()
        if data and not self._transport.is_closing():
            self._transport.write(data)

    # -- TLS -----------------------------------------------------------------

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """Handshake (the caller bounds the time); bytes read in clear must be none.

        Raises:
            ssl.SSLError: the handshake failed (SSLCertVerificationError: the
                certificate could not be verified).
            StreamClosed: the connection ended during the handshake.
            ValueError: bytes were received in clear and not read before TLS.
        """
        if self._buf:
            raise ValueError("bytes were received in clear before TLS")
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._handshaking = True
        try:
            while True:
                try:
                    self._tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    if self._incoming.pending:
                        continue
                    await self._wait()
        finally:
            self._handshaking = False
        self._flush()
        # Application data that came with the end of the handshake.
        if self._incoming.pending:
            self._decrypt()

    @property
    def tls(self) -> ssl.SSLObject | None:
        """The TLS object once :meth:`start_tls` succeeded."""
        return self._tls

    def start_compression(self, where: str) -> None:
        """COMPRESS=DEFLATE from now on (the byte after the server's OK).

        What the server sent after its OK is already compressed: it moves from
        the buffer into the inflater.
        """
        self._deflater = Deflater()
        rest = self._take(len(self._buf))
        self._scan = 0
        self._inflater = Inflater(where, rest)
        self._inflate()

    @property
    def compressed(self) -> bool:
        """Whether COMPRESS=DEFLATE is on."""
        return self._inflater is not None

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Close at once (no TLS close_notify: the driver has said goodbye)."""
        transport = self._transport
        if transport is not None:
            transport.abort()
        self._closed(None)
        self._buf.clear()

    async def aclose(self) -> None:
        """Close and let the loop run the transport's close callbacks."""
        self.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)


class LineTooLong(Exception):
    """A line went past its bound without a line end (``size`` bytes so far)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"a line of more than {size} bytes")
        self.size = size
