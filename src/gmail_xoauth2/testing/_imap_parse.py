"""IMAP wire syntax for the fake Gmail: tokenize commands, quote replies, sequence sets.

Pure functions, no sockets (RFC 3501 section 9 is the grammar followed, loosely:
the fake accepts what real clients send and answers what Gmail answers).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

__all__ = [
    "ImapSyntaxError",
    "SequenceSet",
    "Token",
    "as_text",
    "format_internaldate",
    "literal",
    "parse_date",
    "parse_datetime",
    "quote",
    "quote_or_literal",
    "tokenize",
]

Token = str | bytes | list["Token"]
"""An atom or quoted string (``str``), a literal (``bytes``) or a list."""

_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_LITERAL = re.compile(rb"~?\{(\d+)(\+?)\}\r\n")
_ATOM_END = frozenset(b" ()")


class ImapSyntaxError(ValueError):
    """The command does not follow the IMAP grammar (answered with ``BAD``)."""


def tokenize(data: bytes, /) -> list[Token]:
    """Split a whole command (literals inlined as ``{n}CRLF`` + data) into tokens.

    Atoms and quoted strings come back as ``str``, literals as ``bytes``,
    parenthesized lists as ``list``. An atom holding ``[`` runs to its matching
    ``]`` so that ``BODY[HEADER.FIELDS (FROM TO)]<0.10>`` stays one token.

    Raises:
        ImapSyntaxError: unbalanced parentheses, an unterminated string or a
            literal shorter than announced.
    """
    stack: list[list[Token]] = [[]]
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x20:
            i += 1
        elif c == 0x28:  # "("
            stack.append([])
            i += 1
        elif c == 0x29:  # ")"
            if len(stack) == 1:
                raise ImapSyntaxError("unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
            i += 1
        elif c == 0x22:  # '"'
            text, i = _read_quoted(data, i + 1)
            stack[-1].append(text)
        elif c in (0x7B, 0x7E) and (m := _LITERAL.match(data, i)):
            size = int(m.group(1))
            start = m.end()
            if start + size > n:
                raise ImapSyntaxError("literal shorter than announced")
            stack[-1].append(data[start : start + size])
            i = start + size
        else:
            atom, i = _read_atom(data, i)
            stack[-1].append(atom)
    if len(stack) != 1:
        raise ImapSyntaxError("unbalanced '('")
    return stack[0]


def _read_quoted(data: bytes, i: int) -> tuple[str, int]:
    out = bytearray()
    while i < len(data):
        c = data[i]
        if c == 0x5C and i + 1 < len(data):  # backslash escapes " and \
            out.append(data[i + 1])
            i += 2
        elif c == 0x22:
            return out.decode("utf-8", "surrogateescape"), i + 1
        elif c in (0x0D, 0x0A):
            break
        else:
            out.append(c)
            i += 1
    raise ImapSyntaxError("unterminated quoted string")


def _read_atom(data: bytes, i: int) -> tuple[str, int]:
    start, depth = i, 0
    while i < len(data):
        c = data[i]
        if c == 0x5B:  # "["
            depth += 1
        elif c == 0x5D and depth:  # "]"
            depth -= 1
        elif depth == 0 and c in _ATOM_END:
            break
        i += 1
    if depth:
        raise ImapSyntaxError("unbalanced '['")
    return data[start:i].decode("utf-8", "surrogateescape"), i


def as_text(token: Token, /) -> str:
    """Return an atom, string or literal as text.

    Raises:
        ImapSyntaxError: the token is a list.
    """
    if isinstance(token, list):
        raise ImapSyntaxError("expected a string, got a list")
    if isinstance(token, bytes):
        return token.decode("utf-8", "surrogateescape")
    return token


def quote(text: str, /) -> bytes:
    """Return ``text`` as an IMAP quoted string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return b'"' + escaped.encode("utf-8", "surrogateescape") + b'"'


def literal(data: bytes, /) -> bytes:
    """Return ``data`` as a synchronizing literal: ``{n}CRLF`` then the bytes."""
    return b"{%d}\r\n" % len(data) + data


def quote_or_literal(text: str | bytes, /) -> bytes:
    """Quote short single-line ASCII text; send anything else as a literal."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    if raw.isascii() and b"\r" not in raw and b"\n" not in raw and len(raw) < 1000:
        return quote(raw.decode("ascii"))
    return literal(raw)


@dataclass(frozen=True)
class SequenceSet:
    """An IMAP sequence set such as ``1:3,7,9:*`` (RFC 3501 ``sequence-set``).

    ``None`` in a range stands for ``*``, the largest number in use.
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    _cache: dict[int, tuple[list[int], list[int]]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def parse(cls, text: str, /) -> SequenceSet:
        """Parse ``text``.

        Raises:
            ImapSyntaxError: not a sequence set.
        """
        ranges: list[tuple[int | None, int | None]] = []
        for part in text.split(","):
            lo_text, sep, hi_text = part.partition(":")
            lo = _seq_number(lo_text)
            hi = _seq_number(hi_text) if sep else lo
            ranges.append((lo, hi))
        return cls(tuple(ranges))

    @staticmethod
    def is_sequence_set(text: str, /) -> bool:
        """True if ``text`` looks like a sequence set (for SEARCH)."""
        return bool(re.fullmatch(r"(\d+|\*)(:(\d+|\*))?(,(\d+|\*)(:(\d+|\*))?)*", text))

    def contains(self, number: int, largest: int) -> bool:
        """True if ``number`` is in the set, ``*`` standing for ``largest``."""
        starts, ends = self._merged(largest)
        i = bisect.bisect_right(starts, number) - 1
        return i >= 0 and number <= ends[i]

    def _merged(self, largest: int) -> tuple[list[int], list[int]]:
        """Sorted, merged ranges, so a lookup is a binary search, not a scan."""
        cached = self._cache.get(largest)
        if cached is not None:
            return cached
        spans = sorted(
            (min(a, b), max(a, b))
            for a, b in (
                (largest if lo is None else lo, largest if hi is None else hi)
                for lo, hi in self.ranges
            )
        )
        starts: list[int] = []
        ends: list[int] = []
        for a, b in spans:
            if ends and a <= ends[-1] + 1:
                ends[-1] = max(ends[-1], b)
            else:
                starts.append(a)
                ends.append(b)
        self._cache[largest] = (starts, ends)
        return starts, ends

    def select(self, numbers: Iterable[int], largest: int) -> list[int]:
        """The members of ``numbers`` that are in the set, in their order."""
        return [n for n in numbers if self.contains(n, largest)]


def _seq_number(text: str) -> int | None:
    if text == "*":
        return None
    if not text.isdigit() or int(text) == 0:
        raise ImapSyntaxError(f"invalid sequence number {text!r}")
    return int(text)


def parse_date(text: str, /) -> date:
    """Parse an IMAP ``date`` (``1-Feb-1994``), as SEARCH SINCE/BEFORE use.

    Raises:
        ImapSyntaxError: not a date.
    """
    m = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", text.strip())
    if not m or m.group(2).title() not in _MONTHS:
        raise ImapSyntaxError(f"invalid date {text!r}")
    try:
        return date(int(m.group(3)), _MONTHS.index(m.group(2).title()) + 1, int(m[1]))
    except ValueError as exc:
        raise ImapSyntaxError(f"invalid date {text!r}") from exc


def parse_datetime(text: str, /) -> datetime:
    """Parse an IMAP ``date-time`` (``17-Jul-1996 02:44:25 -0700``), as APPEND sends.

    Raises:
        ImapSyntaxError: not a date-time.
    """
    m = re.fullmatch(
        r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)",
        text,
    )
    if not m or m.group(2).title() not in _MONTHS:
        raise ImapSyntaxError(f"invalid date-time {text!r}")
    offset = timedelta(hours=int(m[8]), minutes=int(m[9]))
    tz = timezone(-offset if m[7] == "-" else offset)
    try:
        return datetime(
            int(m[3]),
            _MONTHS.index(m[2].title()) + 1,
            int(m[1]),
            int(m[4]),
            int(m[5]),
            int(m[6]),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise ImapSyntaxError(f"invalid date-time {text!r}") from exc


def format_internaldate(when: datetime, /) -> bytes:
    """Format ``when`` as a quoted IMAP ``date-time`` for INTERNALDATE."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    text = (
        f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when:%H:%M:%S} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    )
    return b'"' + text.encode("ascii") + b'"'


def flag_list(flags: Iterable[str], /) -> bytes:
    """Render flags as a parenthesized list, sorted with system flags first."""
    ordered = sorted(flags, key=lambda f: (not f.startswith("\\"), f.lower()))
    return b"(" + " ".join(ordered).encode("utf-8") + b")"


def string_list(items: Sequence[Token], /) -> list[str]:
    """Return a list token's items as text (for flag lists and header names)."""
    return [as_text(item) for item in items]
