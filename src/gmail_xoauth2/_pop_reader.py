"""POP3 replies read within Limits, and parsed strictly: lines, multi-line bodies, STAT.

poplib reads with ``readline(2049)`` and loops until a line that is only ``.``,
so a server that never sends it fills memory, and one that trickles bytes is
never cut off (a socket timeout only measures silence). Here every line is
bounded by ``Limits.line_bytes``, a multi-line reply by ``literal_bytes`` and
``response_lines``, and every reply by ``response_seconds``: the socket
timeout is lowered before each read so the reply's deadline holds.
"""

from __future__ import annotations

import io
import poplib
from collections.abc import Callable

from ._limits import Limits, ReplyMeter
from ._redact import scrub
from .errors import ProtocolError

__all__ = [
    "Body",
    "ReplyReader",
    "capabilities",
    "scan_listing",
    "shown",
    "status_line",
    "unique_id",
    "without_line_end",
]

_LF = b"\n"
_CRLF = b"\r\n"
_CR = b"\r"
# The longest number POP3 needs: octet counts of up to 2**64.
_DIGITS = 20
# How much of a line is scrubbed of secrets before a message shows its start.
_SCRUBBED = 16384


class ReplyReader:
    """Reads the lines of one reply at a time from a socket's buffered file.

    The file is the socket's ``makefile("rb")``. Reads never go further than
    the end of the current line, and the reader knows how many bytes are
    already buffered ahead of it, so a raw read (the only kind that can block)
    is always preceded by a socket timeout that respects the reply's deadline,
    and a server that sent more than was asked for is seen without blocking.
    """

    def __init__(
        self,
        file: io.BufferedReader,
        settimeout: Callable[[float | None], None],
        *,
        limits: Limits,
        timeout: float | None,
        where: str,
    ) -> None:
        self.file = file
        self._settimeout = settimeout
        self._limits = limits
        self._timeout = timeout
        self.meter = ReplyMeter(limits, where=where)
        self._room = limits.line_bytes + len(_CRLF)
        self._ahead = 0  # bytes in the file's buffer, not yet read
        self._lowered = False

    @property
    def pending(self) -> int:
        """Bytes the server sent that no reply has consumed yet."""
        return self._ahead

    def start(self) -> None:
        """A reply begins: its deadline starts now."""
        self.meter.start()

    def done(self) -> None:
        """The reply ended: give later writes and handshakes the full timeout."""
        if self._lowered:
            self._settimeout(self._timeout)
            self._lowered = False

    def line(self) -> tuple[bytes, int]:
        """One line without its CRLF, and its size on the wire, as poplib returns.

        Raises:
            poplib.error_proto: ``-ERR EOF`` (as poplib) when the server closed
                the connection, also in the middle of a line.
            LimitExceeded: the line is longer than ``Limits.line_bytes``.
            Timeout: the reply's deadline passed.
        """
        room = self._room
        ahead = self._ahead or self._fill()
        # Within what is buffered, readline() makes no read from the socket.
        # (A conditional, not min(): this runs for every line of a message.)
        raw = self.file.readline(ahead if ahead < room else room)
        self._ahead = ahead - len(raw)
        if not raw.endswith(_LF):
            raw = self._rest_of_line(raw)
        line = without_line_end(raw)
        if len(line) > room - 2:
            self.meter.check_line(len(line))
        return line, len(raw)

    def _rest_of_line(self, start: bytes) -> bytes:
        """Read on until LF: the line was longer than what was buffered."""
        room = self._room
        parts = [start]
        size = len(start)
        while True:
            if size >= room:
                raise self.meter.too_large(
                    f"a line of more than {self._limits.line_bytes} bytes",
                    "line_bytes",
                )
            ahead = self._ahead or self._fill()
            piece = self.file.readline(min(ahead, room - size))
            self._ahead = ahead - len(piece)
            size += len(piece)
            parts.append(piece)
            if piece.endswith(_LF):
                return b"".join(parts)

    def body(
        self, read_line: Callable[[], tuple[bytes, int]]
    ) -> tuple[list[bytes], int]:
        """The lines of a multi-line reply up to its ``.``, dot-unstuffed.

        Returns poplib's ``(lines, octets)``; ``read_line`` is :meth:`line`,
        or a wrapper of it (poplib's debug output).

        Raises:
            LimitExceeded: more than ``Limits.literal_bytes`` bytes or
                ``Limits.response_lines`` lines.
        """
        body = Body(self._limits, self.meter)
        add = body.add
        while not add(*read_line()):
            pass
        return body.lines, body.octets

    def _fill(self) -> int:
        """Read from the socket once (it must be buffered dry), by the deadline.

        Returns how many bytes are buffered now.

        The only read that can block; before it, the socket timeout is
        lowered to what the reply's deadline leaves.
        """
        wait = self.meter.recv_timeout(self._timeout)
        if wait != self._timeout or self._lowered:
            self._settimeout(wait)
            self._lowered = True
        try:
            # One read from the socket at most (io.BufferedReader.peek).
            self._ahead = len(self.file.peek(1))
        except TimeoutError as exc:
            if self.meter.expired():
                raise self.meter.too_slow() from exc
            raise
        if not self._ahead:
            raise poplib.error_proto("-ERR EOF")
        self.meter.charge(self._ahead)
        return self._ahead


def without_line_end(raw: bytes) -> bytes:
    """A line as read (up to its LF) without its line end.

    The server may end lines with CRLF, LF or even CR...LF (poplib's rule).
    """
    if raw.endswith(_CRLF):
        return raw[:-2]
    if raw.startswith(_CR):
        return raw[1:-1]
    return raw[:-1]


class Body:
    """The lines of a multi-line reply, free of I/O: dot-unstuffed, within Limits.

    Fed one line at a time (without its line end, and its size on the wire)
    by the sync and the asyncio readers; ``lines`` and ``octets`` are poplib's.
    """

    __slots__ = ("_meter", "_most_bytes", "_most_lines", "lines", "octets")

    def __init__(self, limits: Limits, meter: ReplyMeter) -> None:
        self._meter = meter
        self._most_bytes = limits.literal_bytes
        self._most_lines = limits.response_lines
        self.lines: list[bytes] = []
        self.octets = 0

    def add(self, line: bytes, size: int) -> bool:
        """Take one line; True when it was the final ``.``.

        Raises:
            LimitExceeded: more than ``Limits.literal_bytes`` bytes or
                ``Limits.response_lines`` lines.
        """
        if line[:1] == b".":
            if line == b".":
                self._meter.count(len(self.lines))
                return True
            # RFC 1939 section 3: a line starting with "." is sent with one more.
            if line[1:2] == b".":
                size -= 1
                line = line[1:]
        octets = self.octets = self.octets + size
        if octets > self._most_bytes:
            raise self._meter.too_large(
                f"a multi-line reply of more than {self._most_bytes} bytes",
                "literal_bytes",
            )
        lines = self.lines
        if len(lines) >= self._most_lines:
            self._meter.count(len(lines) + 1)  # raises
        lines.append(line)
        return False


def status_line(resp: bytes, where: str) -> bytes:
    """``resp`` when it starts with ``+OK``; poplib.error_proto for ``-ERR``.

    RFC 1939 section 3: every reply starts with one of the two.

    Raises:
        poplib.error_proto: the server answered ``-ERR`` (as poplib).
        ProtocolError: the line is neither.
    """
    head = resp[:4].upper()
    if head.startswith(b"+OK"):
        return resp
    if head == b"-ERR":
        raise poplib.error_proto(resp)
    raise ProtocolError(
        f"{where} answered {shown(resp)}, which is neither +OK nor -ERR "
        "(RFC 1939); the connection was closed"
    )


def scan_listing(resp: bytes, where: str, what: str) -> tuple[int, int]:
    """The two numbers of ``+OK n m`` (STAT, LIST n); ProtocolError otherwise."""
    fields = resp.split()
    if len(fields) >= 3 and all(_is_number(f) for f in fields[1:3]):
        return int(fields[1]), int(fields[2])
    raise ProtocolError(
        f"{where} answered {what} with {shown(resp)}, not '+OK <number> <number>' "
        "(RFC 1939); the connection was closed"
    )


def unique_id(resp: bytes, where: str) -> bytes:
    """The ``n uid`` of ``+OK n uid`` (UIDL n); ProtocolError otherwise."""
    fields = resp.split(None, 2)
    if len(fields) == 3 and _is_number(fields[1]) and fields[2].strip():
        return fields[1] + b" " + fields[2].strip()
    raise ProtocolError(
        f"{where} answered UIDL with {shown(resp)}, not '+OK <number> <id>' "
        "(RFC 1939); the connection was closed"
    )


def capabilities(lines: list[bytes]) -> dict[str, list[str]]:
    """CAPA lines as poplib's dict; blank lines carry nothing and are skipped."""
    result: dict[str, list[str]] = {}
    for line in lines:
        name, *args = line.decode("ascii", "replace").split() or [""]
        if name:
            result[name] = args
    return result


def shown(data: bytes, most: int = 80) -> str:
    """A server's bytes for a message: short, printable, without secrets.

    Scrubbed before it is cut short, so no prefix of a secret is shown
    either (a SASL string is at most a few kilobytes).
    """
    text = scrub(data[:_SCRUBBED].decode("utf-8", "replace"))
    return repr(text if len(text) <= most else text[:most] + "...")


def _is_number(field: bytes) -> bool:
    return field.isdigit() and len(field) <= _DIGITS
