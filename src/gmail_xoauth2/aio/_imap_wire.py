"""Reading one IMAP response from a :class:`Stream`, shaped as imaplib shapes it.

An untagged response becomes the list of ``(type, data)`` pieces imaplib's
``_append_untagged`` would store: ``(b"1 (RFC822 {12}", b"<literal>")`` for
each literal, then the text after the last one, and for a status response
with a response code (``* OK [UIDVALIDITY 3] ...``) the code as its own piece.
So ``fetch()`` returns ``[(b'1 (RFC822 {12}', b'...'), b')']`` as imaplib does
and code ports line by line. Every byte is charged to the reply's
:class:`ReplyMeter`; each read waits at most what is left of the reply's
deadline and the connection's timeout.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, NamedTuple

from .._limits import Limits, ReplyMeter
from ..errors import ConnectionLost, ProtocolError, Timeout
from ._stream import LineTooLong, Stream, StreamClosed

__all__ = ["Response", "read_response"]

_TAGGED = re.compile(rb"(?P<tag>[A-Z]+\d+) (?P<type>[A-Z]+) ?(?P<data>.*)", re.S)
_UNTAGGED = re.compile(rb"\* (?P<type>[A-Z-]+)(?: (?P<data>.*))?", re.S)
_UNTAGGED_NUMBER = re.compile(
    rb"\* (?P<number>\d+) (?P<type>[A-Z-]+)(?: (?P<data>.*))?", re.S
)
_CONTINUATION = re.compile(rb"\+(?: (?P<data>.*))?", re.S)
_LITERAL = re.compile(rb".*\{(?P<size>\d+)\}\Z", re.S)
_CODE = re.compile(rb"\[(?P<type>[A-Z-]+)(?: (?P<data>[^]]*))?\]")


class Response(NamedTuple):
    """One server response.

    Attributes:
        kind: ``"tagged"``, ``"untagged"`` or ``"continuation"``.
        tag: the tag of a tagged response (else empty).
        typ: ``OK``/``NO``/``BAD`` (tagged), the response type (untagged:
            ``EXISTS``, ``FETCH``, ``OK``...), or ``+``.
        text: the text of a tagged response or continuation.
        pieces: an untagged response's ``(type, data)`` pieces, as imaplib
            stores them.
    """

    kind: str
    tag: bytes
    typ: str
    text: bytes
    pieces: list[tuple[str, Any]]


async def read_response(
    stream: Stream, meter: ReplyMeter, limits: Limits, timeout: float | None
) -> Response:
    """Read one whole response (with its literals).

    Raises:
        ProtocolError: it is not IMAP (LimitExceeded: it passed a bound).
        Timeout: the reply's deadline, or ``timeout`` of silence, passed.
        ConnectionLost: the connection ended first.
    """
    line = await _line(stream, meter, limits, timeout)
    if line.startswith(b"* "):
        return await _untagged(stream, meter, limits, timeout, line)
    if line.startswith(b"+"):
        cont = _CONTINUATION.fullmatch(line)
        if cont is None:
            raise _malformed(meter, line)
        return Response("continuation", b"", "+", cont.group("data") or b"", [])
    tagged = _TAGGED.fullmatch(line)
    if tagged is None:
        raise _malformed(meter, line)
    return Response(
        "tagged",
        tagged.group("tag"),
        tagged.group("type").decode("ascii"),
        tagged.group("data"),
        [],
    )


async def _untagged(
    stream: Stream,
    meter: ReplyMeter,
    limits: Limits,
    timeout: float | None,
    line: bytes,
) -> Response:
    numbered = _UNTAGGED_NUMBER.fullmatch(line)
    if numbered is not None:
        typ = numbered.group("type").decode("ascii")
        rest = numbered.group("data")
        data = numbered.group("number") + (b" " + rest if rest else b"")
    else:
        plain = _UNTAGGED.fullmatch(line)
        if plain is None:
            raise _malformed(meter, line)
        typ = plain.group("type").decode("ascii")
        data = plain.group("data") or b""
    pieces: list[tuple[str, Any]] = []
    while (literal := _LITERAL.fullmatch(data)) is not None:
        size = int(literal.group("size"))
        meter.check_literal(size)
        meter.charge(size)
        body = await _exactly(stream, meter, size, timeout)
        pieces.append((typ, (data, body)))
        data = await _line(stream, meter, limits, timeout)
    pieces.append((typ, data))
    if typ in ("OK", "NO", "BAD"):
        code = _CODE.match(data)
        if code is not None:
            pieces.append((code.group("type").decode("ascii"), code.group("data")))
    return Response("untagged", b"", typ, b"", pieces)


async def _line(
    stream: Stream, meter: ReplyMeter, limits: Limits, timeout: float | None
) -> bytes:
    try:
        if stream.has_line():
            # Buffered already (most lines of a big reply): no timer to set,
            # but the reply's deadline still holds.
            meter.recv_timeout(timeout)
            raw = await stream.readline(limits.line_bytes)
        else:
            async with asyncio.timeout(meter.recv_timeout(timeout)):
                raw = await stream.readline(limits.line_bytes)
    except LineTooLong as exc:
        raise meter.too_large(
            f"a line of more than {limits.line_bytes} bytes", "line_bytes"
        ) from exc
    except TimeoutError as exc:
        raise _silent(meter, timeout) from exc
    except StreamClosed as exc:
        raise ConnectionLost(f"{meter.where}: {exc}") from exc
    meter.charge(len(raw))
    meter.count()
    if not raw.endswith(b"\r\n"):
        raise ProtocolError(
            f"{meter.where} ended a line with LF alone, not CRLF; the "
            "connection was closed"
        )
    return raw[:-2]


async def _exactly(
    stream: Stream, meter: ReplyMeter, size: int, timeout: float | None
) -> bytes:
    try:
        if stream.buffered >= size:
            meter.recv_timeout(timeout)
            return await stream.readexactly(size)
        async with asyncio.timeout(meter.recv_timeout(timeout)):
            return await stream.readexactly(size)
    except TimeoutError as exc:
        raise _silent(meter, timeout) from exc
    except StreamClosed as exc:
        raise ConnectionLost(
            f"{meter.where} ended the connection in the middle of a literal: {exc}"
        ) from exc


def _silent(meter: ReplyMeter, timeout: float | None) -> Timeout:
    try:
        meter.recv_timeout(timeout)
    except Timeout as exc:  # the reply's own deadline passed
        return exc
    return Timeout(f"{meter.where} did not answer within {timeout}s")


def _malformed(meter: ReplyMeter, line: bytes) -> ProtocolError:
    shown = line[:80].decode("ascii", "replace")
    return ProtocolError(
        f"{meter.where} sent a reply that is not IMAP ({shown!r}); the "
        "connection was closed"
    )
