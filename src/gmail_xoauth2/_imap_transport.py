"""The socket layer under gmail_xoauth2.IMAP4: TLS, our own read buffer, hang-up checks.

imaplib reads through ``sock.makefile()``, whose buffer cannot be inspected
without blocking (and Python 3.14 deprecates ``IMAP4.file``). Reading into a
buffer of our own lets the wrapper see, without blocking, whether the server
already ended the session before a command is sent.
"""

from __future__ import annotations

import io
import select
import socket
import ssl
import sys
from typing import Any

__all__ = ["BufferedTransport"]

_CHUNK = 65536
_MAX_LINE = 1_000_000  # imaplib's own limit (RFC 2683 suggests far less)
_CRLF = b"\r\n"


class _Drain(io.RawIOBase):
    """A raw stream that empties the transport's buffer first, then the socket."""

    def __init__(self, transport: BufferedTransport) -> None:
        super().__init__()
        self._transport = transport

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        buf = self._transport._rbuf
        if buf:
            n = min(len(b), len(buf))
            b[:n] = buf[:n]
            del buf[:n]
            return n
        return self._transport.sock.recv_into(b)


class BufferedTransport:
    """Mixin placed before :class:`imaplib.IMAP4`: open, read, readline, send, shutdown.

    These are the methods imaplib documents as overridable. ``sends`` counts
    writes that completed, so a caller can tell whether a command reached the
    wire at all.
    """

    host: str
    port: int
    sock: socket.socket
    _rbuf: bytearray
    _sends: int
    _timeout: float | None
    _use_starttls: bool
    _ssl_context: ssl.SSLContext

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
        self._rbuf = bytearray()
        self.sock = self._create_socket(timeout)

    def read(self, size: int) -> bytes:
        """Read ``size`` bytes (fewer at EOF)."""
        buf = self._rbuf
        if size - len(buf) > _CHUNK:
            # A large literal (a message body): let io.BufferedReader allocate the
            # result once and fill it in place, as imaplib's makefile() does, so
            # a 25 MB message costs 25 MB, not three copies of it.
            return io.BufferedReader(_Drain(self), buffer_size=1).read(size)
        while len(buf) < size:
            chunk = self.sock.recv(max(_CHUNK, size - len(buf)))
            if not chunk:
                break
            buf += chunk
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def readline(self) -> bytes:
        """Read one line with its CRLF (b"" at EOF)."""
        buf = self._rbuf
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if len(buf) > _MAX_LINE:
                raise self.error(f"got more than {_MAX_LINE} bytes")  # type: ignore[attr-defined]
            start = len(buf)
            chunk = self.sock.recv(_CHUNK)
            if not chunk:
                end = len(buf)
                break
            buf += chunk
        line = bytes(buf[:end])
        del buf[:end]
        return line

    def send(self, data: Any) -> None:
        """Send ``data``; counted once it is out."""
        sys.audit("imaplib.send", self, data)
        self.sock.sendall(data)
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
        self._rbuf = bytearray()

    def server_hung_up(self) -> str | None:
        """Why the session is over, if the server already said so. Never blocks.

        Reads whatever is waiting on the socket into the buffer: EOF or a
        ``* BYE`` line means a command sent now would go nowhere.
        """
        sock = self.sock
        eof = False
        try:
            sock.setblocking(False)
            try:
                while True:
                    chunk = sock.recv(_CHUNK)
                    if not chunk:
                        eof = True
                        break
                    self._rbuf += chunk
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            finally:
                sock.settimeout(self._timeout)
        except OSError as exc:
            return f"connection error: {exc}"
        for line in bytes(self._rbuf).split(_CRLF):
            if line.startswith(b"* BYE"):
                return line[2:].decode("utf-8", "replace")
        return "the server closed the connection" if eof else None

    def wait_readable(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever) for a line to read."""
        if b"\n" in self._rbuf:
            return True
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        wait = None if timeout is None else max(0.0, timeout)
        ready, _, _ = select.select([sock], [], [], wait)
        return bool(ready)
