"""SEARCH for the fake Gmail: compile RFC 3501 search keys (and X-GM-RAW) to a test.

Text matching is case-insensitive substring matching on decoded headers and text
parts; Gmail matches words, which every substring test here also satisfies.
"""

from __future__ import annotations

import email
import email.policy
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage

from ._imap_fetch import MessageLike, split_message
from ._imap_parse import ImapSyntaxError, SequenceSet, Token, as_text, parse_date

__all__ = ["SearchTarget", "compile_search"]


@dataclass(frozen=True)
class SearchTarget:
    """A message as SEARCH sees it: its sequence number and the mailbox's extent."""

    seq: int
    msg: MessageLike
    largest_seq: int
    largest_uid: int


Test = Callable[[SearchTarget], bool]

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    "OLD": ("\\Recent", False),
}
_HEADER_KEYS = ("FROM", "TO", "CC", "BCC", "SUBJECT")


def compile_search(tokens: list[Token], /) -> Test:
    """Compile SEARCH arguments (after the verb) into one test; all keys must hold.

    Raises:
        ImapSyntaxError: an unknown key or a missing argument.
    """
    items = list(tokens)
    if len(items) >= 2 and isinstance(items[0], str) and items[0].upper() == "CHARSET":
        items = items[2:]
    parser = _Parser(items)
    tests = []
    while not parser.done():
        tests.append(parser.key())
    if not tests:
        raise ImapSyntaxError("SEARCH needs at least one key")
    return _all(tests)


def _all(tests: list[Test]) -> Test:
    return lambda t: all(test(t) for test in tests)


class _Parser:
    def __init__(self, items: list[Token]) -> None:
        self._items = items
        self._pos = 0

    def done(self) -> bool:
        return self._pos >= len(self._items)

    def _next(self) -> Token:
        if self.done():
            raise ImapSyntaxError("SEARCH key is missing an argument")
        token = self._items[self._pos]
        self._pos += 1
        return token

    def _text(self) -> str:
        return as_text(self._next())

    def key(self) -> Test:
        token = self._next()
        if isinstance(token, list):
            inner = _Parser(token)
            tests = []
            while not inner.done():
                tests.append(inner.key())
            return _all(tests)
        word = as_text(token).upper()
        if word == "ALL":
            return lambda t: True
        if word in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[word]
            return lambda t: (flag in t.msg.flags) is present
        if word == "NEW":
            return lambda t: "\\Recent" in t.msg.flags and "\\Seen" not in t.msg.flags
        if word in ("KEYWORD", "UNKEYWORD"):
            keyword, present = self._text().lower(), word == "KEYWORD"
            return lambda t: (keyword in {f.lower() for f in t.msg.flags}) is present
        if word == "NOT":
            inner_test = self.key()
            return lambda t: not inner_test(t)
        if word == "OR":
            left, right = self.key(), self.key()
            return lambda t: left(t) or right(t)
        if word in _HEADER_KEYS:
            return _header_test(word.lower(), self._text())
        if word == "HEADER":
            name = self._text().lower()
            return _header_test(name, self._text())
        if word == "BODY":
            needle = self._text().lower()
            return lambda t: needle in _body_text(t.msg.raw)
        if word == "TEXT":
            needle = self._text().lower()
            return lambda t: needle in _all_text(t.msg.raw)
        if word in ("SINCE", "BEFORE", "ON", "SENTSINCE", "SENTBEFORE", "SENTON"):
            return _date_test(word, parse_date(self._text()))
        if word in ("LARGER", "SMALLER"):
            size = _number(self._text())
            if word == "LARGER":
                return lambda t: len(t.msg.raw) > size
            return lambda t: len(t.msg.raw) < size
        if word == "UID":
            uids = SequenceSet.parse(self._text())
            return lambda t: uids.contains(t.msg.uid, t.largest_uid)
        if word in ("X-GM-MSGID", "X-GM-THRID"):
            wanted = _number(self._text())
            if word == "X-GM-MSGID":
                return lambda t: t.msg.gm_msgid == wanted
            return lambda t: t.msg.gm_thrid == wanted
        if word == "X-GM-LABELS":
            label = self._text().lower()
            return lambda t: label in {x.lower() for x in t.msg.labels}
        if word == "X-GM-RAW":
            return compile_gmail_query(self._text())
        if SequenceSet.is_sequence_set(word):
            seqs = SequenceSet.parse(word)
            return lambda t: seqs.contains(t.seq, t.largest_seq)
        raise ImapSyntaxError(f"unknown SEARCH key {word!r}")


def _number(text: str) -> int:
    if not text.isdigit():
        raise ImapSyntaxError(f"expected a number, got {text!r}")
    return int(text)


def _parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)  # the default policy builds EmailMessage
    return msg


def _header_text(raw: bytes, name: str) -> str:
    header, _ = split_message(raw)
    try:
        values = _parsed(header).get_all(name) or []
        return " ".join(str(v) for v in values).lower()
    except (ValueError, LookupError, TypeError):
        return header.decode("utf-8", "replace").lower()


def _header_test(name: str, needle: str) -> Test:
    wanted = needle.lower()
    if not wanted:  # RFC 3501: an empty string matches any message with the field
        return lambda t: bool(
            re.search(
                rb"(?im)^" + re.escape(name.encode()) + rb":",
                split_message(t.msg.raw)[0],
            )
        )
    return lambda t: wanted in _header_text(t.msg.raw, name)


def _body_text(raw: bytes) -> str:
    texts = [split_message(raw)[1].decode("utf-8", "replace")]
    try:
        for part in _parsed(raw).walk():
            if part.get_content_maintype() == "text":
                content = part.get_content()
                if isinstance(content, str):
                    texts.append(content)
    except (ValueError, LookupError, TypeError):
        pass
    return "\n".join(texts).lower()


def _all_text(raw: bytes) -> str:
    return _header_text(raw, "subject") + "\n" + _all_headers(raw) + _body_text(raw)


def _all_headers(raw: bytes) -> str:
    header, _ = split_message(raw)
    try:
        return "\n".join(f"{k}: {v}" for k, v in _parsed(header).items()).lower()
    except (ValueError, LookupError, TypeError):
        return header.decode("utf-8", "replace").lower()


def _sent_date(raw: bytes) -> date | None:
    header, _ = split_message(raw)
    try:
        value = _parsed(header).get("date")
        when = getattr(value, "datetime", None)
    except (ValueError, LookupError, TypeError):
        return None
    return when.date() if isinstance(when, datetime) else None


def _date_test(word: str, day: date) -> Test:
    def when(t: SearchTarget) -> date | None:
        if word.startswith("SENT"):
            return _sent_date(t.msg.raw)
        return t.msg.internaldate.date()

    op = word.removeprefix("SENT")

    def test(t: SearchTarget) -> bool:
        d = when(t)
        if d is None:
            return False
        if op == "SINCE":
            return d >= day
        if op == "BEFORE":
            return d < day
        return d == day

    return test


def compile_gmail_query(query: str, /) -> Test:
    """A minimal X-GM-RAW (Gmail search syntax): the operators tests need.

    Supported: ``from:`` ``to:`` ``cc:`` ``subject:`` ``label:``
    ``is:read|unread|starred|important`` ``has:attachment`` ``rfc822msgid:``
    ``after:``/``before:`` (``YYYY/MM/DD``), ``-term`` to negate, and bare words
    (matched anywhere). All terms must match.
    """
    try:
        terms = shlex.split(query)
    except ValueError as exc:
        raise ImapSyntaxError("unbalanced quotes in X-GM-RAW") from exc
    tests = [_gmail_term(term) for term in terms]
    return _all(tests) if tests else (lambda t: True)


def _gmail_term(term: str) -> Test:
    if term.startswith("-") and len(term) > 1:
        inner = _gmail_term(term[1:])
        return lambda t: not inner(t)
    op, sep, value = term.partition(":")
    op = op.lower()
    if not sep or not value:
        needle = term.lower()
        return lambda t: needle in _all_text(t.msg.raw)
    if op in ("from", "to", "cc", "subject"):
        return _header_test(op, value)
    if op == "rfc822msgid":
        return _header_test("message-id", value)
    if op == "label":
        label = value.lower()
        return lambda t: label in {x.lower().lstrip("\\") for x in t.msg.labels}
    if op == "is":
        flag = {
            "read": ("\\Seen", True),
            "unread": ("\\Seen", False),
            "starred": ("\\Flagged", True),
        }.get(value.lower())
        if flag is not None:
            name, present = flag
            return lambda t: (name in t.msg.flags) is present
        if value.lower() == "important":
            return lambda t: "\\Important" in t.msg.labels
    if op == "has" and value.lower() == "attachment":
        return lambda t: b"content-disposition: attachment" in t.msg.raw.lower()
    if op in ("after", "before"):
        try:
            day = datetime.strptime(value, "%Y/%m/%d").date()
        except ValueError as exc:
            raise ImapSyntaxError(f"invalid X-GM-RAW date {value!r}") from exc
        if op == "after":
            return lambda t: t.msg.internaldate.date() >= day
        return lambda t: t.msg.internaldate.date() < day
    raise ImapSyntaxError(f"unsupported X-GM-RAW operator {op!r}")
