"""FETCH for the fake Gmail: parse fetch items, cut body sections, render responses.

Body sections follow RFC 3501 section 6.4.5 (``BODY[<part>.<HEADER|TEXT|MIME>]``,
``HEADER.FIELDS (...)``, partial ``<start.count>``), cut from the stored raw
bytes so a client gets back exactly what was delivered.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Protocol

from ._imap_parse import (
    ImapSyntaxError,
    Token,
    as_text,
    flag_list,
    format_internaldate,
    literal,
    quote,
    quote_or_literal,
)

__all__ = [
    "FetchItem",
    "MessageLike",
    "header_value",
    "parse_fetch_items",
    "render_fetch",
    "render_labels",
    "split_message",
]


class MessageLike(Protocol):
    """What FETCH and SEARCH read from a stored message."""

    @property
    def uid(self) -> int: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def flags(self) -> AbstractSet[str]: ...
    @property
    def internaldate(self) -> datetime: ...
    @property
    def gm_msgid(self) -> int: ...
    @property
    def gm_thrid(self) -> int: ...
    @property
    def labels(self) -> AbstractSet[str]: ...


_SIMPLE = frozenset(
    {
        "FLAGS",
        "UID",
        "RFC822",
        "RFC822.SIZE",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "INTERNALDATE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "X-GM-MSGID",
        "X-GM-THRID",
        "X-GM-LABELS",
        "MODSEQ",
    }
)
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_BODY_ITEM = re.compile(
    r"(BODY|BINARY)(\.PEEK)?\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?", re.IGNORECASE
)
_SECTION = re.compile(
    r"((?:\d+\.)*\d+)?\.?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?"
    r"\s*(?:\((.*)\))?",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class FetchItem:
    """One fetch attribute.

    Attributes:
        name: ``FLAGS``, ``UID``, ``RFC822`` ... or ``BODY`` for a body section.
        part: the section's part numbers (``BODY[1.2]`` is ``(1, 2)``).
        kind: ``""``, ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``,
            ``TEXT`` or ``MIME``.
        fields: the header names of ``HEADER.FIELDS``, as requested.
        partial: ``(start, count)`` of ``<start.count>``, count None if absent.
        peek: ``BODY.PEEK``: do not set ``\\Seen``.
    """

    name: str
    part: tuple[int, ...] = ()
    kind: str = ""
    fields: tuple[str, ...] = ()
    partial: tuple[int, int | None] | None = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """True if fetching this marks the message ``\\Seen`` (RFC 3501 6.4.5)."""
        if self.name == "BODY" and self.kind != "STRUCTURE":
            return not self.peek
        return self.name in ("RFC822", "RFC822.TEXT")

    def response_name(self) -> bytes:
        """The name in the response (``BODY.PEEK[]`` is answered as ``BODY[]``)."""
        if self.name != "BODY" or self.kind == "STRUCTURE":
            return self.name.encode()
        section = ".".join(str(p) for p in self.part)
        if self.kind:
            section = f"{section}.{self.kind}" if section else self.kind
        if self.kind.startswith("HEADER.FIELDS"):
            section += " (" + " ".join(f.upper() for f in self.fields) + ")"
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BODY[{section}]{origin}".encode()


def parse_fetch_items(spec: Token, /) -> list[FetchItem]:
    """Parse FETCH's item list (an atom, a macro or a parenthesized list).

    Raises:
        ImapSyntaxError: an unknown or malformed item.
    """
    tokens = spec if isinstance(spec, list) else [spec]
    items: list[FetchItem] = []
    for token in tokens:
        text = as_text(token)
        upper = text.upper()
        if upper in _MACROS and not isinstance(spec, list):
            items.extend(_item(name) for name in _MACROS[upper])
        else:
            items.append(_item(text))
    if not items:
        raise ImapSyntaxError("empty fetch item list")
    return items


def _item(text: str) -> FetchItem:
    upper = text.upper()
    if upper in _SIMPLE:
        return FetchItem(upper)
    if upper == "BODY":
        return FetchItem("BODY", kind="STRUCTURE")
    m = _BODY_ITEM.fullmatch(text)
    if not m:
        raise ImapSyntaxError(f"unknown fetch item {text!r}")
    section = _SECTION.fullmatch(m.group(3).strip())
    if not section:
        raise ImapSyntaxError(f"malformed section {m.group(3)!r}")
    part = tuple(int(p) for p in section.group(1).split(".")) if section[1] else ()
    kind = (section.group(2) or "").upper()
    fields = tuple(section.group(3).split()) if section.group(3) else ()
    if kind.startswith("HEADER.FIELDS") != bool(fields):
        raise ImapSyntaxError(f"malformed section {m.group(3)!r}")
    partial = None
    if m.group(4) is not None:
        partial = (int(m.group(4)), int(m.group(5)) if m.group(5) else None)
    return FetchItem("BODY", part, kind, fields, partial, peek=bool(m.group(2)))


def split_message(raw: bytes, /) -> tuple[bytes, bytes]:
    """Split a message into its header (with the blank line) and its body."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(sep)
        if at >= 0:
            return raw[: at + len(sep)], raw[at + len(sep) :]
    if raw.startswith((b"\r\n", b"\n")):
        end = 2 if raw.startswith(b"\r\n") else 1
        return raw[:end], raw[end:]
    return raw, b""


def _header_fields(header: bytes) -> list[tuple[str, bytes]]:
    fields: list[tuple[str, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line)
        else:
            name = line.split(b":", 1)[0].strip().decode("ascii", "replace")
            fields.append((name.lower(), line))
    return fields


def header_value(header: bytes, name: str, /) -> str | None:
    """The unfolded raw value of the first ``name`` field in ``header``, or None."""
    msg = BytesHeaderParser(policy=compat32).parsebytes(header)
    value = msg.get(name)
    if value is None:
        return None
    return re.sub(r"\r?\n[ \t]*", " ", str(value)).strip()


def _content_type(header: bytes) -> tuple[str, str, dict[str, str]]:
    msg = BytesHeaderParser(policy=compat32).parsebytes(header)
    if msg.get("content-type") is None:
        return "text", "plain", {"charset": "us-ascii"}
    maintype, subtype = msg.get_content_maintype(), msg.get_content_subtype()
    params = {
        k.lower(): str(v) for k, v in (msg.get_params() or [])[1:] if isinstance(v, str)
    }
    return maintype, subtype, params


def _multipart_parts(body: bytes, boundary: str) -> list[bytes]:
    delimiter = re.compile(
        rb"(?:^|\r?\n)--" + re.escape(boundary.encode()) + rb"(--)?[ \t]*(?:\r?\n|$)"
    )
    marks = list(delimiter.finditer(body))
    parts: list[bytes] = []
    for here, after in itertools.pairwise(marks):
        if here.group(1):
            break
        parts.append(body[here.end() : after.start()])
    return parts


def _entity(raw: bytes, part: tuple[int, ...]) -> tuple[bytes, bytes] | None:
    """The (header, body) of the MIME part ``part`` of ``raw``, or None."""
    header, body = split_message(raw)
    for number in part:
        maintype, _, params = _content_type(header)
        if maintype == "multipart" and "boundary" in params:
            parts = _multipart_parts(body, params["boundary"])
            if not 1 <= number <= len(parts):
                return None
            header, body = split_message(parts[number - 1])
        elif number != 1:
            return None
    return header, body


def section_bytes(raw: bytes, item: FetchItem) -> bytes:
    """The bytes of a body section, before any partial is applied."""
    if item.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        header, body = split_message(raw)
        return {"RFC822": raw, "RFC822.HEADER": header, "RFC822.TEXT": body}[item.name]
    entity = _entity(raw, item.part)
    if entity is None:
        return b""
    header, body = entity
    if not item.kind:
        return raw if not item.part else body
    if item.kind in ("HEADER", "MIME"):
        return header
    if item.kind == "TEXT":
        return body
    wanted = {f.lower() for f in item.fields}
    keep = item.kind == "HEADER.FIELDS"
    chosen = [line for name, line in _header_fields(header) if (name in wanted) == keep]
    return b"".join(chosen) + b"\r\n"


def render_labels(labels: AbstractSet[str], /) -> bytes:
    """X-GM-LABELS as Gmail renders them: system labels as atoms, others quoted."""
    rendered = [
        label.encode() if label.startswith("\\") else quote(label)
        for label in sorted(labels, key=lambda x: (not x.startswith("\\"), x.lower()))
    ]
    return b"(" + b" ".join(rendered) + b")"


def render_fetch(
    seq: int, msg: MessageLike, items: list[FetchItem], *, flags_changed: bool = False
) -> bytes:
    """Render ``* seq FETCH (...)`` (without CRLF), literals inlined.

    Items come in Gmail's order, not the request's: X-GM-THRID, X-GM-MSGID and
    X-GM-LABELS first (those asked for), then UID, then the rest as requested.
    Gmail answers ``UID FETCH 1 (FLAGS X-GM-LABELS X-GM-MSGID X-GM-THRID)`` with
    ``* 1 FETCH (X-GM-THRID .. X-GM-MSGID .. X-GM-LABELS (..) UID 1 FLAGS (..))``,
    and some clients (getmail6) parse the extensions by that position.

    Args:
        seq: the message's sequence number.
        msg: the message (its flags already updated for an implied ``\\Seen``).
        items: what to return; UID FETCH callers add ``UID`` if not asked for.
        flags_changed: add FLAGS if not asked for, because this FETCH set ``\\Seen``.
    """
    out: list[bytes] = []
    seen: set[bytes] = set()
    for item in sorted(items, key=_gmail_rank):
        name = item.response_name()
        if name in seen:
            continue
        seen.add(name)
        out.append(name + b" " + _value(msg, item))
    if flags_changed and b"FLAGS" not in seen:
        out.append(b"FLAGS " + flag_list(msg.flags))
    return b"* %d FETCH (" % seq + b" ".join(out) + b")"


# Gmail's response order; everything else keeps its place after these (a stable sort).
_GMAIL_ORDER = {"X-GM-THRID": 0, "X-GM-MSGID": 1, "X-GM-LABELS": 2, "UID": 3}


def _gmail_rank(item: FetchItem) -> int:
    return _GMAIL_ORDER.get(item.name, len(_GMAIL_ORDER))


def _value(msg: MessageLike, item: FetchItem) -> bytes:
    name = item.name
    if name == "FLAGS":
        return flag_list(msg.flags)
    if name == "UID":
        return b"%d" % msg.uid
    if name == "RFC822.SIZE":
        return b"%d" % len(msg.raw)
    if name == "INTERNALDATE":
        return format_internaldate(msg.internaldate)
    if name == "X-GM-MSGID":
        return b"%d" % msg.gm_msgid
    if name == "X-GM-THRID":
        return b"%d" % msg.gm_thrid
    if name == "X-GM-LABELS":
        return render_labels(msg.labels)
    if name == "MODSEQ":
        return b"(%d)" % max(1, msg.uid)
    if name == "ENVELOPE":
        return envelope(msg.raw)
    if name == "BODYSTRUCTURE" or item.kind == "STRUCTURE":
        return bodystructure(msg.raw)
    data = section_bytes(msg.raw, item)
    if item.partial is not None:
        start, count = item.partial
        data = data[start : None if count is None else start + count]
    return literal(data)


def _nstring(value: str | None) -> bytes:
    return b"NIL" if value is None else quote_or_literal(value)


def _addresses(value: str | None) -> bytes:
    if not value:
        return b"NIL"
    rendered = []
    for name, addr in getaddresses([value]):
        mailbox, _, host = addr.partition("@")
        rendered.append(
            b"("
            + b" ".join(
                [
                    _nstring(name or None),
                    b"NIL",
                    _nstring(mailbox or None),
                    _nstring(host or None),
                ]
            )
            + b")"
        )
    return b"(" + b"".join(rendered) + b")" if rendered else b"NIL"


def envelope(raw: bytes, /) -> bytes:
    """The ENVELOPE structure of RFC 3501 section 7.4.2, from raw header values."""
    header, _ = split_message(raw)

    def get(name: str) -> str | None:
        return header_value(header, name)

    sender = get("from")
    parts = [
        _nstring(get("date")),
        _nstring(get("subject")),
        _addresses(sender),
        _addresses(get("sender") or sender),
        _addresses(get("reply-to") or sender),
        _addresses(get("to")),
        _addresses(get("cc")),
        _addresses(get("bcc")),
        _nstring(get("in-reply-to")),
        _nstring(get("message-id")),
    ]
    return b"(" + b" ".join(parts) + b")"


def bodystructure(raw: bytes, /) -> bytes:
    """A non-extensible BODYSTRUCTURE (RFC 3501 section 7.4.2), enough for clients."""
    header, body = split_message(raw)
    maintype, subtype, params = _content_type(header)
    if maintype == "multipart" and "boundary" in params:
        children = b"".join(
            bodystructure(part) for part in _multipart_parts(body, params["boundary"])
        )
        return b"(" + children + b" " + quote(subtype.upper()) + b")"
    param_list = (
        b"("
        + b" ".join(quote(k.upper()) + b" " + quote(v) for k, v in params.items())
        + b")"
        if params
        else b"NIL"
    )
    encoding = (header_value(header, "content-transfer-encoding") or "7BIT").upper()
    fields = [
        quote(maintype.upper()),
        quote(subtype.upper()),
        param_list,
        _nstring(header_value(header, "content-id")),
        _nstring(header_value(header, "content-description")),
        quote(encoding),
        b"%d" % len(body),
    ]
    if maintype == "text":
        fields.append(b"%d" % body.count(b"\n"))
    return b"(" + b" ".join(fields) + b")"
