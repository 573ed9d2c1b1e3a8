"""One SMTP reply read within the connection's Limits, whatever the server sends.

RFC 5321 section 4.2: a reply is one or more lines, each a three-digit code,
then a hyphen (more lines follow) or a space (the last line) and text. The
:class:`ReplyFramer` decides, free of I/O, whether what arrived is a reply and
when it ends; :class:`MeteredSocket` gives the socket a reader whose every
read obeys the reply's deadline, so a trickle ends as surely as a flood;
:class:`BoundedReplies` puts both under smtplib's ``getreply()``. Every error
raised here is an SMTP class (:mod:`gmail_xoauth2._smtp_errors`), an
:class:`smtplib.SMTPException` too; :class:`SMTPReplyMeter` makes the meter's.
"""

from __future__ import annotations

import io
import smtplib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._limits import ReplyMeter
from ._redact import REDACTED, scrub, scrub_bytes
from ._smtp_errors import SMTPLimitExceeded, SMTPProtocolError, SMTPTimeout
from .errors import Error, recast

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "BoundedReplies",
    "MeteredSocket",
    "ReplyFramer",
    "SMTPReplyMeter",
    "check_reply",
    "read_reply",
]

# The most one readline() returns: a long line arrives in pieces, so a reply
# that is not SMTP is refused on its first bytes, not after megabytes.
_PIECE = 64 * 1024
# How much of a bad line an error shows.
_SHOWN = 40
_BLANKS = b" \t\r\n"


def _heads() -> dict[bytes, tuple[int, bool]]:
    heads = {}
    for code in range(200, 600):
        heads[b"%d " % code] = (code, True)
        heads[b"%d-" % code] = (code, False)
    return heads


# A line's first four bytes -> (its code, whether it is the reply's last line):
# one lookup checks the code's syntax and range (RFC 5321 section 4.2).
_HEADS = _heads()


class SMTPReplyMeter(ReplyMeter):
    """A :class:`ReplyMeter` whose errors are SMTP's (SMTPException subclasses)."""

    __slots__ = ()

    def too_large(self, what: str, knob: str) -> SMTPLimitExceeded:
        return recast(super().too_large(what, knob), SMTPLimitExceeded)

    def too_slow(self) -> SMTPTimeout:
        return recast(super().too_slow(), SMTPTimeout)


class ReplyFramer:
    """Collects the lines of one reply; refuses what is not SMTP or too large.

    Feed it what ``readline(framer.room())`` returns until :meth:`feed` says
    the reply is complete, then take :meth:`reply`: smtplib's shape, the code
    and the lines' texts joined by ``\\n``. All the lines of one reply
    together are bounded by ``Limits.line_bytes`` (a real reply is a few
    hundred bytes), their number by ``Limits.response_lines``. The text is
    kept in one bytearray, so memory follows the bytes received.
    """

    def __init__(self, meter: ReplyMeter) -> None:
        limits = meter.limits
        self._meter = meter
        self._bound = min(limits.line_bytes, limits.response_bytes)
        self._knob = (
            "line_bytes"
            if limits.line_bytes <= limits.response_bytes
            else "response_bytes"
        )
        self._most_lines = limits.response_lines
        self._received = 0
        self._lines = 0
        self._code: int | None = None
        self._text = bytearray()
        self._line = bytearray()  # a line that arrives in pieces
        self._checked = False  # whose code was checked already

    def room(self) -> int:
        """The size to pass to ``readline()``: one byte over the bound, at most."""
        return min(self._bound - self._received + 1, _PIECE)

    def feed(self, data: bytes) -> bool:
        """Take one ``readline()`` result; True when the reply is complete.

        Raises:
            ProtocolError: a line is not an SMTP reply line, or a continuation
                line changes the code.
            LimitExceeded: the reply passed ``line_bytes`` or ``response_lines``.
        """
        self._received += len(data)
        if self._received > self._bound:
            raise self._meter.too_large(
                f"a reply of more than {self._bound} bytes", self._knob
            )
        if not self._line and data.endswith(b"\n"):
            return self._take(data)  # the usual case: a whole line at once
        line = self._line
        line += data
        if line.endswith(b"\n"):
            self._line = bytearray()
            return self._take(line)
        # Part of a line: check its code as soon as it is known ("250\r" may
        # yet be "250\r\n"; "250\rx" is not a reply line).
        if not self._checked and (
            len(line) > 4 or (len(line) == 4 and line[3:4] != b"\r")
        ):
            self._head(line)
            self._checked = True
        return False

    def reply(self) -> tuple[int, bytes]:
        """The reply: its code and its lines' texts, as smtplib returns them."""
        assert self._code is not None, "the reply is not complete"
        return self._code, bytes(self._text)

    @property
    def received(self) -> int:
        """The bytes fed so far, line ends included."""
        return self._received

    def _take(self, line: bytes | bytearray) -> bool:
        """A whole line (with its line end): its text is kept."""
        last = self._head(line)
        self._checked = False
        self._lines += 1
        if self._lines > self._most_lines:
            raise self._meter.too_large(
                f"a reply of more than {self._most_lines} lines", "response_lines"
            )
        if self._lines > 1:
            self._text += b"\n"
        self._text += line[4:].strip(_BLANKS)
        return last

    def _head(self, line: bytes | bytearray) -> bool:
        """Check the line's code; True when it is the reply's last line."""
        head = _HEADS.get(bytes(line[:4]))
        if head is None and line[3:] in (b"\r\n", b"\n"):
            head = _HEADS.get(bytes(line[:3]) + b" ")  # "250\r\n": no text
        if head is None:
            raise SMTPProtocolError(
                f"{self._meter.where} sent {_shown(line)}, which is not an SMTP "
                "reply line (RFC 5321 section 4.2: a code from 200 to 599, then a "
                "space, a hyphen or the end of the line); the connection was closed"
            )
        code, last = head
        if self._code is None:
            self._code = code
        elif code != self._code:
            raise SMTPProtocolError(
                f"{self._meter.where} changed the code from {self._code} to "
                f"{code} within one multi-line reply (RFC 5321 section 4.2.1); "
                "the connection was closed"
            )
        return last


def _shown(line: bytes | bytearray) -> str:
    # Scrubbed before it is cut, so no part of a quoted secret survives.
    shown = scrub_bytes(bytes(line[:4096]))
    return repr(shown[:_SHOWN]) + ("..." if len(line) > _SHOWN else "")


class MeteredSocket(io.RawIOBase):
    """A socket as a raw stream; every read waits no longer than the reply may.

    The socket timeout alone bounds silences: a server sending one byte every
    second would never trip it. Before each read the timeout becomes what is
    left of the reply's deadline, if that is shorter. Closing it leaves the
    socket open: that stays with its owner.
    """

    def __init__(
        self, sock: socket.socket, meter: ReplyMeter, timeout: float | None
    ) -> None:
        super().__init__()
        self._sock = sock
        self._meter = meter
        self._timeout = timeout
        self.received = 0  # bytes read from the socket

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        timeout = self._meter.recv_timeout(self._timeout)
        self._sock.settimeout(timeout)
        try:
            size = self._sock.recv_into(buffer)
        except TimeoutError as exc:
            if timeout != self._timeout:
                raise self._meter.too_slow() from exc
            raise
        self.received += size
        return size


def read_reply(
    file: io.BufferedReader,
    meter: ReplyMeter,
    show: Callable[[bytes], None] | None = None,
) -> tuple[int, bytes, int]:
    """Read one reply from ``file``, calling ``show`` with each piece read.

    Returns smtplib's ``(code, text)``, and the bytes the reply took on the wire.

    Raises:
        EOFError: the server closed the connection.
        ProtocolError: what arrived is not an SMTP reply.
        LimitExceeded: the reply passed one of the Limits.
        Timeout: the reply did not end within ``Limits.response_seconds``.
        OSError: the socket failed (or was silent for its whole timeout).
    """
    meter.start()
    framer = ReplyFramer(meter)
    while True:
        data = file.readline(framer.room())
        if not data:
            raise EOFError
        if show is not None:
            show(data)
        if framer.feed(data):
            return (*framer.reply(), framer.received)


def check_reply(meter: ReplyMeter, code: int, text: bytes) -> None:
    """Check a reply framed by another reader (aiosmtplib's) as :func:`read_reply`
    checks one off the wire: its code from 200 to 599, all its lines together
    within ``Limits.line_bytes``, their number within ``Limits.response_lines``.

    ``text`` is the reply's lines joined by ``\\n``, as both smtplib and
    aiosmtplib return it. The lines are framed again, so the count of bytes is
    the text's (the reader stripped the blanks at the ends of lines).

    Raises:
        ProtocolError: the code is not an SMTP reply code.
        LimitExceeded: the reply passed ``line_bytes`` or ``response_lines``.
    """
    framer = ReplyFramer(meter)
    lines = text.split(b"\n")
    last = len(lines) - 1
    for index, line in enumerate(lines):
        mark = b" " if index == last else b"-"
        framer.feed(b"%d%s%s\r\n" % (code, mark, line))


class BoundedReplies(smtplib.SMTP):
    """An :class:`smtplib.SMTP` whose replies are read within :class:`Limits`.

    Its ``getreply()`` keeps smtplib's shape and its debug output is scrubbed
    of every secret. A subclass sets ``_meter`` before it connects, and lists
    the secrets of its connection in ``_secrets``.
    """

    _meter: ReplyMeter
    _secrets: list[str]
    _raw: MeteredSocket | None = None
    _consumed = 0  # bytes of _raw read as replies

    def getreply(self) -> tuple[int, bytes]:
        """Read one reply as smtplib does, within the connection's Limits.

        Returns smtplib's ``(code, b"\\n".join(lines))``, scrubbed of every
        secret (a server may quote the AUTH line back, even in a 250).
        Whatever goes wrong, the connection is closed first.

        Raises:
            smtplib.SMTPServerDisconnected: the connection is closed or was lost.
            ProtocolError: the reply is not SMTP (RFC 5321 section 4.2).
            LimitExceeded: the reply passed ``line_bytes`` or ``response_lines``.
            Timeout: the reply did not end within ``response_seconds``.
        """
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        if self.file is None:
            self._raw = MeteredSocket(self.sock, self._meter, self.timeout)
            self._consumed = 0
            self.file = io.BufferedReader(self._raw)
        show = self._show_reply if self.debuglevel > 0 else None
        try:
            code, message, size = read_reply(self.file, self._meter, show)
        except Error:
            self.close()
            raise
        except EOFError:
            self.close()
            raise smtplib.SMTPServerDisconnected(
                "Connection unexpectedly closed"
            ) from None
        except OSError as exc:
            self.close()
            raise smtplib.SMTPServerDisconnected(
                f"Connection unexpectedly closed: {exc}"
            ) from exc
        finally:
            if self.sock is not None:
                # The reply's deadline shortened it; the next send has it whole.
                self.sock.settimeout(self.timeout)
        self._consumed += size
        message = scrub_bytes(message)
        if self.debuglevel > 0:
            self._print_debug(f"reply: retcode ({code}); Msg: {message!a}")
        return code, message

    def _unread(self) -> int:
        """Bytes the server sent that no reply has taken (yet)."""
        if self.file is None or self._raw is None:
            return 0
        return self._raw.received - self._consumed

    def _show_reply(self, data: bytes) -> None:
        self._print_debug("reply:", repr(data))

    def _print_debug(self, *args: Any) -> None:
        # smtplib prints every line it sends, the AUTH line too, and every
        # reply, which may quote it: scrub them all.
        shown = []
        for arg in args:
            text = scrub(arg if isinstance(arg, str) else repr(arg))
            for secret in self._secrets:
                text = text.replace(secret, REDACTED)
            shown.append(text)
        super()._print_debug(*shown)  # type: ignore[misc]
