"""The POP3 wire under gmail_xoauth2.POP3: bounded replies, STLS, errors translated.

A mixin placed before :class:`poplib.POP3`: it replaces poplib's private
line I/O (``_putline``, ``_getline``, ``_getresp``, ``_getlongresp``...) with
versions that read every reply within the connection's Limits, check that a
reply is POP3 at all, never print a secret in poplib's debug output, and
translate socket and poplib failures in one place, scrubbed of secrets.
"""

from __future__ import annotations

import io
import poplib
import socket
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, TypeAlias, cast

from ._limits import Limits
from ._mailconn import Dead, too_many_message
from ._pop_reader import ReplyReader, capabilities, shown, status_line
from ._pop_sasl import SESSION_ENDED, TOO_MANY
from ._redact import scrub, scrub_bytes, scrub_exception
from .errors import (
    AuthenticationFailed,
    Error,
    InsecureConnection,
    LimitExceeded,
    ProtocolError,
    Timeout,
    TooManyConnections,
)

__all__ = [
    "Capabilities",
    "LongResp",
    "PopWire",
    "ends_session",
    "is_eof",
    "out_of_step",
    "redact",
    "refused_greeting",
    "stls_failure",
    "stls_injected",
    "stls_missing",
    "text",
    "translate",
]

LongResp: TypeAlias = tuple[bytes, list[bytes], int]
Capabilities: TypeAlias = dict[str, list[str]]

_REDACTED = b"<redacted>"


class PopWire:
    """poplib's line I/O, bounded and scrubbed; STLS; one translation of errors.

    A reply that is neither ``+OK`` nor ``-ERR``, bytes that answer no command,
    or a reply over the Limits raise ProtocolError (LimitExceeded) or Timeout,
    and the connection is closed: it is never resynchronised.
    """

    encoding: str
    host: str
    port: int
    sock: socket.socket
    file: BinaryIO
    _tls_established: bool
    _connected: bool
    _debugging: int
    _secrets: list[bytes]
    _where: str
    _limits: Limits
    _timeout: float
    _context: ssl.SSLContext
    _reader: ReplyReader | None
    _capabilities: Capabilities

    def _start_tls(self) -> None:
        """CAPA, STLS and the TLS handshake (RFC 2595); any oddity is insecure."""
        with self._wire("STLS"):
            try:
                offered = self._capa_or_none()
                if offered is None or "STLS" not in offered:
                    raise stls_missing(self._where)
                self._shortcmd("STLS")
                if self._line_reader().pending:
                    raise stls_injected(self._where)
                old_file = self.file
                self.sock = self._context.wrap_socket(
                    self.sock, server_hostname=self.host
                )
                self.file = self.sock.makefile("rb")
                old_file.close()
            except (poplib.error_proto, ssl.SSLError, ProtocolError) as exc:
                error = stls_failure(exc, self._where)
                if error is None:
                    raise
                raise error from exc
            self._tls_established = True
        with self._wire("CAPA"):
            # RFC 2595 section 4: forget what was learned before TLS; ask again.
            self._capabilities = self._capa_or_none() or {}

    def _capa_or_none(self) -> Capabilities | None:
        """CAPA as a dict, or None without CAPA; connection errors pass through."""
        try:
            return self._capa_command()
        except poplib.error_proto as exc:
            if is_eof(exc) or ends_session(exc):
                raise
            return None

    def _capa_command(self) -> Capabilities:
        try:
            _, lines, _ = self._longcmd("CAPA")
        except poplib.error_proto as exc:
            if is_eof(exc) or ends_session(exc):
                raise
            raise poplib.error_proto("-ERR CAPA not supported by server") from exc
        return capabilities(lines)

    def _read_line(self) -> bytes:
        """One SASL reply line (a reply of its own, with its own deadline)."""
        reader = self._line_reader()
        reader.start()
        try:
            line, _ = self._getline()
        finally:
            reader.done()
        if self._debugging > 1:
            print("*resp*", repr(self._redact(line)))
        return line

    def _redact(self, data: bytes) -> bytes:
        return redact(data, self._secrets)

    def _putline(self, line: bytes) -> None:
        # poplib's own, but its debug output never shows a token or password.
        if self.sock is None:
            raise poplib.error_proto("-ERR EOF")
        if self._reader is not None and self._reader.pending:
            # POP3 answers every command once, and nothing else: data before
            # a command means the replies are out of step with the commands.
            raise out_of_step(self._where, self._reader.pending)
        if self._debugging > 1:
            print("*put*", repr(self._redact(line)))
        sys.audit("poplib.putline", self, line)
        self.sock.sendall(line + poplib.CRLF)

    def _putcmd(self, line: str) -> None:
        data = line.encode(self.encoding)
        if self._debugging:
            print("*cmd*", repr(self._redact(data).decode(self.encoding, "replace")))
        self._putline(data)

    # poplib's private readers, replaced by bounded ones (same results).

    def _line_reader(self) -> ReplyReader:
        reader = self._reader
        if reader is None or reader.file is not self.file:
            if self.file is None:
                raise poplib.error_proto("-ERR EOF")
            reader = self._reader = ReplyReader(
                cast(io.BufferedReader, self.file),
                self.sock.settimeout,
                limits=self._limits,
                timeout=self._timeout,
                where=self._where,
            )
        return reader

    def _getline(self) -> tuple[bytes, int]:
        line, octets = self._line_reader().line()
        if self._debugging > 1:
            print("*get*", repr(self._redact(line)))
        return line, octets

    def _status(self, resp: bytes) -> bytes:
        # A status line is the server's words, not the caller's data: one that
        # quotes a secret back (a "+OK" too) is returned or raised without it.
        resp = self._redact(resp)
        if self._debugging > 1:
            print("*resp*", repr(resp))
        return status_line(resp, self._where)

    def _getresp(self) -> bytes:
        reader = self._line_reader()
        reader.start()
        try:
            resp, _ = self._getline()
        finally:
            reader.done()
        return self._status(resp)

    def _getlongresp(self) -> LongResp:
        reader = self._line_reader()
        reader.start()
        try:
            resp = self._status(self._getline()[0])
            # Straight from the reader, unless poplib's debug output is on.
            read_line = self._getline if self._debugging > 1 else reader.line
            lines, octets = reader.body(read_line)
        finally:
            reader.done()
        return resp, lines, octets

    def _shortcmd(self, line: str) -> bytes:
        self._putcmd(line)
        return self._getresp()

    def _longcmd(self, line: str) -> LongResp:
        self._putcmd(line)
        return self._getlongresp()

    @contextmanager
    def _wire(self, doing: str) -> Iterator[None]:
        """Translate socket and poplib failures; a dead connection becomes Dead.

        Every exception leaving here is scrubbed of secrets, with its chain.
        """
        try:
            yield
        except BaseException as exc:
            error = self._translate(exc, doing)
            scrub_exception(exc)
            if error is None:
                raise
            scrub_exception(error)
            raise error from exc

    def _translate(self, exc: BaseException, doing: str) -> BaseException | None:
        """What to raise instead of ``exc`` (None: itself); closes what is dead."""
        error, dead = translate(exc, doing, where=self._where, timeout=self._timeout)
        if dead:
            self._abandon()
        return error

    def _abandon(self) -> None:
        """Close the socket without a word to the server."""
        self._connected = False
        self._reader = None
        try:
            poplib.POP3.close(cast(poplib.POP3, self))
        except (OSError, AttributeError):
            pass


def text(value: object) -> str:
    """A server's reply (or poplib's error) for a message, without secrets."""
    if isinstance(value, BaseException):
        value = value.args[0] if value.args else ""
    if isinstance(value, bytes):
        return shown(value)
    return scrub(str(value))


def redact(data: bytes, secrets: list[bytes]) -> bytes:
    """``data`` (a line sent or received) without a password or a secret."""
    if data.upper().startswith(b"PASS "):
        return b"PASS " + _REDACTED
    for secret in secrets:
        data = data.replace(secret, _REDACTED)
    return scrub_bytes(data)


def out_of_step(where: str, pending: int) -> ProtocolError:
    """Bytes came before a command: POP3 answers every command once, and nothing else.

    So the replies are out of step with the commands.
    """
    return ProtocolError(
        f"{where} sent {pending} bytes that answer no command; its replies are out "
        "of step with the commands, so the connection was closed"
    )


def translate(
    exc: BaseException, doing: str, *, where: str, timeout: float | None
) -> tuple[BaseException | None, bool]:
    """What to raise instead of ``exc`` (None: itself), and whether it killed the
    connection; for the sync and the asyncio POP3 alike.

    A dead connection (socket, stream or TLS failure, EOF, a session-ending
    ``-ERR``) becomes :class:`Dead`; a timeout :class:`Timeout`; a certificate
    that did not verify :class:`InsecureConnection`. The library's own errors,
    and an interrupt in the middle of a reply, leave the connection out of step.
    """
    if isinstance(exc, AuthenticationFailed):
        return None, False  # the connection stays: the token may be refreshed
    if isinstance(exc, Error | Dead) or not isinstance(exc, Exception):
        # Ours (ConnectionLost and Timeout are OSErrors), or an interrupt
        # in the middle of a reply: this connection is out of step.
        return None, True
    if isinstance(exc, TimeoutError):
        return Timeout(f"{where} did not answer {doing} within {timeout} s"), True
    if isinstance(exc, ssl.SSLCertVerificationError):
        return InsecureConnection(
            f"the certificate of {where} did not verify "
            f"({exc.verify_message}); no token was sent"
        ), True
    if isinstance(exc, OSError | EOFError):
        return Dead(f"{type(exc).__name__} during {doing}"), True
    if isinstance(exc, poplib.error_proto):
        if is_eof(exc):
            return Dead(f"the server closed the connection during {doing}"), True
        if ends_session(exc):
            return Dead(f"the server ended the session: {text(exc)}"), True
    return None, False


def refused_greeting(exc: poplib.error_proto) -> Exception:
    """The error for a ``-ERR`` greeting: the server is there but will not serve us."""
    line = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
    if TOO_MANY in line.upper():
        return TooManyConnections(too_many_message("POP3", text(line)))
    return Dead(f"the server refused the connection: {text(exc)}")


def stls_missing(where: str) -> InsecureConnection:
    """CAPA did not offer STLS (or failed): no token may be sent."""
    return InsecureConnection(
        f"{where} does not offer STLS, so the connection cannot be encrypted; "
        "no token was sent. Use the implicit-TLS port (995) with starttls=False."
    )


def stls_injected(where: str) -> InsecureConnection:
    """Bytes came after the answer to STLS, before the handshake.

    They would be read as if they came over TLS (the STARTTLS injection of
    CVE-2011-0411).
    """
    return InsecureConnection(
        f"{where} sent data after its answer to STLS, before the TLS handshake; "
        "no token was sent"
    )


def stls_failure(exc: BaseException, where: str) -> BaseException | None:
    """What a failure during CAPA, STLS or the handshake means (None: itself).

    Any refusal or oddity is an InsecureConnection (no token was sent); a
    connection that died or a reply over the Limits stay what they are.
    """
    if isinstance(exc, poplib.error_proto):
        if is_eof(exc):
            return None
        return InsecureConnection(
            f"{where} refused STLS ({text(exc)}); no token was sent"
        )
    if isinstance(exc, ssl.SSLError):
        return InsecureConnection(
            f"the TLS handshake with {where} after STLS failed "
            f"({_ssl_reason(exc)}); no token was sent"
        )
    if isinstance(exc, ProtocolError) and not isinstance(exc, LimitExceeded):
        return InsecureConnection(
            f"{where} broke the STLS negotiation ({exc}); no token was sent"
        )
    return None


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the certificate did not verify: {exc.verify_message}"
    return str(exc.reason or type(exc).__name__)


def is_eof(exc: poplib.error_proto) -> bool:
    """poplib's error for a connection the server closed."""
    # poplib raises error_proto('-ERR EOF') (a str) when the server closed.
    return exc.args == ("-ERR EOF",)


def ends_session(exc: poplib.error_proto) -> bool:
    """A ``-ERR`` that ends the session, not just the command (RFC 3206)."""
    line = exc.args[0] if exc.args else b""
    return isinstance(line, bytes) and any(m in line.upper() for m in SESSION_ENDED)
