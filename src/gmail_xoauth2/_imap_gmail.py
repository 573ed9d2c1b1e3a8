"""Gmail's own IMAP as plain Python: search, labels, threads, special folders, delete.

:class:`GmailCommands` is a mixin of :class:`imaplib.IMAP4` subclasses built on
imaplib's public commands (``uid``, ``list``, ``select``, ``response``) and
Google's IMAP extensions (https://developers.google.com/gmail/imap/imap-extensions):
``X-GM-RAW`` (Gmail's search syntax), ``X-GM-LABELS``, ``X-GM-THRID`` and
``X-GM-MSGID``; special folders are found by their RFC 6154 SPECIAL-USE
attribute, as Gmail localizes their names (``[Google Mail]/Papierkorb``).

UIDs are the unit everywhere: sequence numbers change under a reconnect, UIDs
do not. Results are ints, sets of str and dicts; a reply that cannot be
parsed raises :class:`~gmail_xoauth2.ProtocolError`, a command the server
refuses (``NO``) an :class:`imaplib.IMAP4.error`. No command is ever sent
again by these helpers: a MOVE, COPY or EXPUNGE cut short by a lost
connection is left to the caller, as the IMAP4 class's reconnect policy says.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _mutf7
from ._imap_signatures import TypedCommands
from .errors import ConfigurationError, ProtocolError

__all__ = ["SPECIAL_USES", "GmailCommands"]

SPECIAL_USES = frozenset(
    r"\All \Archive \Drafts \Flagged \Important \Junk \Sent \Trash".split()
)
"""RFC 6154's mailbox attributes, and Gmail's ``\\Important`` (RFC 8457)."""

_CANONICAL_USE = {use.lower(): use for use in SPECIAL_USES}
# RFC 3501 section 9: characters an atom cannot hold (atom-specials), so a
# mailbox name holding one is sent as a quoted string. "]" may be in an astring.
_NEEDS_QUOTES = re.compile(r'[\x00-\x20\x7f(){%*"\\]')
_TOKEN = re.compile(
    rb'\s*(?:(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\\r\n]|\\.)*)"'
    rb"|~?\{(?P<literal>\d+)\+?\}\r\n|(?P<atom>[^\s()\"{]+(?:\[[^\]]*\][^\s()]*)?))"
)

Token = str | bytes | list["Token"]
"""A parsed reply: an atom or quoted string (str), a literal (bytes), a list."""


class GmailCommands(TypedCommands):
    """Mixin: Gmail's search, labels, thread and message ids, special folders, delete.

    Also makes :meth:`select` take a mailbox name as :meth:`special_folder`
    returns it: decoded (``[Gmail]/Envoyés``), with spaces, unquoted.
    """

    # --- mailbox names --------------------------------------------------------

    def select(self, mailbox: str = "INBOX", readonly: bool = False) -> Any:
        """imaplib's SELECT/EXAMINE, with ``mailbox`` sent as IMAP needs it.

        A name as :meth:`special_folder` or :meth:`special_folders` return it
        (``[Gmail]/All Mail``, ``[Gmail]/Envoyés``) is encoded in modified
        UTF-7 (RFC 3501 section 5.1.3; UTF-8 once ``UTF8=ACCEPT`` is enabled)
        and quoted when it holds a space or another special character. A name
        already in IMAP's form (``INBOX``, ``"[Gmail]/All Mail"``,
        ``[Gmail]/Envoy&AOk-s``) is sent as it is, as imaplib sends it.
        """
        select: Callable[..., Any] = super().select
        return select(self.mailbox_argument(mailbox), readonly)

    def mailbox_argument(self, name: str, /) -> str:
        """``name`` as a command argument: encoded and quoted as :meth:`select` does.

        A name that is already in IMAP's form comes back unchanged, so the
        conversion can be applied twice.

        Raises:
            ModifiedUTF7Error: ``name`` holds a lone surrogate.
        """
        if not isinstance(name, str):
            return name  # bytes from imaplib-style callers: theirs to encode
        quoted = len(name) >= 2 and name[0] == name[-1] == '"'
        if quoted:
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        if self.utf8_enabled:
            wire = name
        elif name.isascii() and _is_modified_utf7(name):
            wire = name
        else:
            wire = _mutf7.encode(name)
        if quoted or not wire or _NEEDS_QUOTES.search(wire):
            return _quote(wire)
        return wire

    # --- Gmail search ----------------------------------------------------------

    def gmail_search(self, query: str, /) -> list[int]:
        """The UIDs of the selected mailbox's messages that match a Gmail query.

        ``query`` is what one types in Gmail's search box
        (``from:alice has:attachment newer_than:7d``), sent with X-GM-RAW; a
        query that is not ASCII is sent as a UTF-8 literal
        (``UID SEARCH CHARSET UTF-8 X-GM-RAW {n}``).

        Returns:
            The UIDs, ascending.

        Raises:
            imaplib.IMAP4.error: the server refused the search.
            ProtocolError: the reply is not a list of UIDs.
        """
        if query.isascii() and query.isprintable():
            typ, data = self.uid("SEARCH", "X-GM-RAW", _quote(query))
        else:
            # imaplib sends self.literal after the command's last argument,
            # waiting for the server's "+" first (RFC 3501 section 4.3).
            # typeshed says str; imaplib sends it as bytes, so bytes it is.
            self.literal = query.encode("utf-8")  # type: ignore[assignment]
            typ, data = self.uid("SEARCH", "CHARSET", "UTF-8", "X-GM-RAW")
        _check(self, typ, data, "X-GM-RAW search")
        uids: set[int] = set()
        for item in data:
            if item is None:
                continue
            if not isinstance(item, bytes):
                raise _malformed("SEARCH", item)
            for word in item.split():
                uids.add(_number(word, "SEARCH", item))
        return sorted(uids)

    # --- labels ----------------------------------------------------------------

    def labels(self, uids: Iterable[int], /) -> dict[int, set[str]]:
        """The Gmail labels of messages of the selected mailbox, by UID.

        User labels are decoded (``Reçus``, ``Work/2024``); Gmail's system
        labels keep their backslash (``\\Inbox``, ``\\Important``,
        ``\\Sent``, ``\\Starred``), so they never mix with a user label of
        the same name. A UID with no message is left out.

        Raises:
            ProtocolError: a reply that cannot be parsed, or a label that is
                not valid modified UTF-7 (:class:`ModifiedUTF7Error`).
        """
        return {
            uid: {_label(item) for item in _as_list(value, "X-GM-LABELS")}
            for uid, value in self._fetch_item(uids, "X-GM-LABELS")
        }

    def add_labels(self, uids: Iterable[int], labels: str | Iterable[str]) -> None:
        """Add Gmail labels to messages (``UID STORE +X-GM-LABELS``).

        A label is a user label's name (created if new; any text, ``/`` for
        nesting) or a system label in its backslash form (``\\Starred``,
        ``\\Important``, ``\\Inbox``); one str is one label.
        """
        self._store_labels(uids, "+X-GM-LABELS", labels)

    def remove_labels(self, uids: Iterable[int], labels: str | Iterable[str]) -> None:
        """Remove Gmail labels from messages (``UID STORE -X-GM-LABELS``).

        Removing ``\\Inbox`` archives a message, as Gmail's Archive button does.
        """
        self._store_labels(uids, "-X-GM-LABELS", labels)

    def set_labels(self, uids: Iterable[int], labels: str | Iterable[str]) -> None:
        """Replace the Gmail labels of messages (``UID STORE X-GM-LABELS``)."""
        self._store_labels(uids, "X-GM-LABELS", labels, allow_empty=True)

    def _store_labels(
        self,
        uids: Iterable[int],
        item: str,
        labels: str | Iterable[str],
        *,
        allow_empty: bool = False,
    ) -> None:
        names = [labels] if isinstance(labels, str) else list(labels)
        uid_set = _uid_set(uids)
        if not uid_set or not (names or allow_empty):
            return
        rendered = " ".join(_render_label(name) for name in names)
        typ, data = self.uid("STORE", uid_set, item, f"({rendered})")
        _check(self, typ, data, f"STORE {item}")

    # --- thread and message ids ------------------------------------------------

    def thread_ids(self, uids: Iterable[int], /) -> dict[int, int]:
        """Gmail's conversation id (``X-GM-THRID``) of messages, by UID.

        Messages of one conversation share it, in every folder.
        """
        return {
            uid: _number(value, "X-GM-THRID", value)
            for uid, value in self._fetch_item(uids, "X-GM-THRID")
        }

    def message_ids(self, uids: Iterable[int], /) -> dict[int, int]:
        """Gmail's message id (``X-GM-MSGID``) of messages, by UID.

        It stays the same in every folder and session, unlike a UID.
        """
        return {
            uid: _number(value, "X-GM-MSGID", value)
            for uid, value in self._fetch_item(uids, "X-GM-MSGID")
        }

    def _fetch_item(self, uids: Iterable[int], item: str) -> Iterator[tuple[int, Any]]:
        """``(uid, value)`` of ``item`` for each message of a UID FETCH."""
        uid_set = _uid_set(uids)
        if not uid_set:
            return
        typ, data = self.uid("FETCH", uid_set, f"({item})")
        _check(self, typ, data, f"FETCH {item}")
        for response in _responses(data, "FETCH"):
            if len(response) != 2 or not isinstance(response[1], list):
                raise _malformed("FETCH", response)
            pairs = _pairs(response[1])
            uid, value = pairs.get("UID"), pairs.get(item)
            if uid is None or value is None:
                continue  # an unsolicited FETCH (a flag change) from the server
            yield _number(uid, "FETCH", response), value

    # --- special folders ---------------------------------------------------------

    def special_folders(self) -> dict[str, str]:
        """Every special folder (RFC 6154 SPECIAL-USE), from ``LIST "" "*"``.

        Returns:
            The folder's decoded name by its use: ``{"\\All": "[Gmail]/All Mail",
            "\\Trash": "[Google Mail]/Papierkorb", ...}``. Names are usable in
            :meth:`select` as they are.

        Raises:
            ProtocolError: the LIST reply cannot be parsed.
        """
        typ, data = self.list('""', '"*"')
        _check(self, typ, data, "LIST")
        found: dict[str, str] = {}
        for response in _responses(data, "LIST"):
            if len(response) != 3 or not isinstance(response[0], list):
                raise _malformed("LIST", response)
            attributes = {str(a).lower() for a in response[0]}
            if {"\\noselect", "\\nonexistent"} & attributes:
                continue
            name = self._mailbox_name(response[2])
            for attribute in attributes:
                use = _CANONICAL_USE.get(attribute)
                if use is not None:
                    found.setdefault(use, name)
        return found

    def special_folder(self, use: str, /) -> str | None:
        """The name of the folder with a SPECIAL-USE, or None if there is none.

        ``use`` is ``"\\All"``, ``"\\Sent"``, ``"\\Trash"``, ``"\\Junk"``,
        ``"\\Drafts"``, ``"\\Flagged"``, ``"\\Important"`` or ``"\\Archive"``
        (the backslash and the case are optional). The name is decoded
        (``[Gmail]/Envoyés``), never hard-coded: Gmail names these folders in
        the account's language, under ``[Gmail]`` or ``[Google Mail]``.

        Raises:
            ConfigurationError: ``use`` is not a special use.
        """
        wanted = _CANONICAL_USE.get("\\" + use.lower().lstrip("\\"))
        if wanted is None:
            choices = ", ".join(sorted(SPECIAL_USES))
            raise ConfigurationError(
                f"{use!r} is not a special use; use one of {choices}"
            )
        return self.special_folders().get(wanted)

    def _mailbox_name(self, token: Token) -> str:
        if isinstance(token, list):
            raise _malformed("LIST", token)
        if isinstance(token, bytes):
            token = _utf8(token, "LIST")
        return token if self.utf8_enabled else _mutf7.decode(token)

    # --- a true delete ------------------------------------------------------------

    def delete_permanently(self, mailbox: str, uids: Iterable[int]) -> int:
        """Delete messages for good, as Gmail's "Delete forever" does.

        In Gmail, EXPUNGE in a folder only removes that label; the message
        stays in All Mail. So the messages ``uids`` of ``mailbox`` are moved
        to the Trash folder (found by SPECIAL-USE; ``UID MOVE`` when the
        server offers MOVE, else ``UID COPY``, ``\\Deleted`` and expunge),
        then flagged ``\\Deleted`` and expunged there. ``mailbox`` is
        selected again at the end.

        Nothing is sent twice: if the connection is lost after the MOVE, COPY
        or EXPUNGE was sent, :class:`~gmail_xoauth2.IMAPConnectionLost` is
        raised with ``outcome_unknown=True`` and the caller decides (the
        messages are in ``mailbox`` or in the Trash, which Gmail empties after
        30 days).

        Returns:
            How many messages were deleted from the Trash.

        Raises:
            imaplib.IMAP4.error: no Trash folder, no way to tell which Trash
                messages were moved (neither UIDPLUS nor X-GM-EXT-1), or a
                command refused.
            ProtocolError: a reply that cannot be parsed.
        """
        wanted = sorted(set(_uids(uids)))
        if not wanted:
            return 0
        trash = self.special_folder("\\Trash")
        if trash is None:
            raise self.error("the server lists no \\Trash folder (RFC 6154)")
        caps = set(self.capabilities)
        if "UIDPLUS" not in caps and "X-GM-EXT-1" not in caps:
            raise self.error(
                "cannot tell the moved messages apart in the Trash: the server "
                "offers neither UIDPLUS (COPYUID) nor X-GM-EXT-1 (X-GM-MSGID)"
            )
        self._select_writable(mailbox)
        in_trash = _same_mailbox(
            self.mailbox_argument(mailbox), self.mailbox_argument(trash)
        )
        if in_trash:
            targets = wanted
        else:
            targets = self._move(wanted, trash, caps)
            self._select_writable(trash)
        deleted = self._expunge_uids(targets, caps) if targets else 0
        if not in_trash:
            self._select_writable(mailbox)
        return deleted

    def _select_writable(self, mailbox: str) -> None:
        typ, data = self.select(mailbox)
        _check(self, typ, data, f"SELECT {mailbox}")

    def _move(self, uids: list[int], trash: str, caps: set[str]) -> list[int]:
        """Move ``uids`` to ``trash``; return their UIDs there."""
        uid_set = _uid_set(uids)
        msgids: set[int] = set()
        if "UIDPLUS" not in caps:
            msgids = set(self.message_ids(uids).values())
        self.response("COPYUID")  # drop a stale one
        destination = self.mailbox_argument(trash)
        if "MOVE" in caps:
            typ, data = self.uid("MOVE", uid_set, destination)
            _check(self, typ, data, "UID MOVE")
        else:
            typ, data = self.uid("COPY", uid_set, destination)
            _check(self, typ, data, "UID COPY")
            self._expunge_uids(uids, caps)
        if "UIDPLUS" in caps:
            _, codes = self.response("COPYUID")
            return _copyuid_destinations(codes)
        self._select_writable(trash)
        return [uid for uid, msgid in self._all_msgids().items() if msgid in msgids]

    def _all_msgids(self) -> dict[int, int]:
        typ, data = self.uid("SEARCH", None, "ALL")
        _check(self, typ, data, "SEARCH")
        uids = [
            _number(w, "SEARCH", item) for item in data if item for w in item.split()
        ]
        return self.message_ids(uids)

    def _expunge_uids(self, uids: list[int], caps: set[str]) -> int:
        """Flag ``uids`` \\Deleted and expunge them (only them, with UIDPLUS)."""
        uid_set = _uid_set(uids)
        typ, data = self.uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
        _check(self, typ, data, "STORE \\Deleted")
        if "UIDPLUS" in caps:
            typ, data = self.uid("EXPUNGE", uid_set)
        else:
            # RFC 3501 EXPUNGE: every \Deleted message of the mailbox goes.
            typ, data = self.expunge()
        _check(self, typ, data, "EXPUNGE")
        return len(uids)


# --- helpers: arguments ----------------------------------------------------------


def _quote(text: str) -> str:
    """``text`` as an IMAP quoted string (RFC 3501 section 4.3)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_modified_utf7(text: str) -> bool:
    try:
        _mutf7.decode(text)
    except _mutf7.ModifiedUTF7Error:
        return False
    return True


def _same_mailbox(a: str, b: str) -> bool:
    """Whether two mailbox arguments name one mailbox (INBOX in any case)."""
    a, b = a.strip('"'), b.strip('"')
    return a == b or a.upper() == b.upper() == "INBOX"


def _uids(uids: Iterable[int]) -> Iterator[int]:
    if isinstance(uids, int):
        raise ConfigurationError(f"uids must be an iterable of UIDs, not {uids!r}")
    for uid in uids:
        if isinstance(uid, bool) or not isinstance(uid, int) or uid < 1:
            raise ConfigurationError(f"a UID is a positive int, not {uid!r}")
        yield uid


def _uid_set(uids: Iterable[int]) -> str:
    """A compact UID set (``1:3,7``); empty when there are no UIDs."""
    runs: list[list[int]] = []
    for uid in sorted(set(_uids(uids))):
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


def _render_label(label: str) -> str:
    """A label for STORE X-GM-LABELS: a system label as an atom, others quoted."""
    if not label:
        raise ConfigurationError("a label cannot be empty")
    if label.startswith("\\") and label[1:].isalnum() and label.isascii():
        return label
    return _quote(_mutf7.encode(label))


# --- helpers: replies ------------------------------------------------------------


def _check(imap: Any, typ: str, data: list[Any], what: str) -> None:
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes))
        raise imap.error(f"{what} refused: {typ} {detail.decode('utf-8', 'replace')}")


def _malformed(command: str, what: object) -> ProtocolError:
    return ProtocolError(f"cannot parse the server's {command} reply: {what!r:.200}")


def _utf8(data: bytes, command: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(command, data) from None


def _number(value: object, command: str, where: object) -> int:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return int(value)
    raise _malformed(command, where)


def _as_list(value: Any, command: str) -> list[Token]:
    if not isinstance(value, list):
        raise _malformed(command, value)
    return value


def _label(token: Token) -> str:
    if isinstance(token, list):
        raise _malformed("X-GM-LABELS", token)
    if isinstance(token, bytes):
        token = _utf8(token, "X-GM-LABELS")
    if token.startswith("\\"):
        return token  # a system label: \Inbox, \Important, \Sent...
    return _mutf7.decode(token)


def _pairs(items: list[Token]) -> dict[str, Token]:
    """A FETCH response's ``(NAME value NAME value ...)`` as a dict."""
    if len(items) % 2:
        raise _malformed("FETCH", items)
    pairs: dict[str, Token] = {}
    for name, value in zip(items[::2], items[1::2], strict=True):
        if not isinstance(name, str):
            raise _malformed("FETCH", items)
        pairs[name.upper()] = value
    return pairs


def _responses(data: list[Any], command: str) -> Iterator[list[Token]]:
    """imaplib's data for ``command``, one token list per response.

    imaplib hands a response with literals over in pieces: ``(text ending in
    {n}, literal)`` tuples, then the text after the last literal as bytes. The
    pieces are joined back into the response as it was on the wire.
    """
    current: list[bytes] = []
    open_literal = False
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple) and len(item) == 2:
            head, body = item
            if not (isinstance(head, bytes) and isinstance(body, bytes)):
                raise _malformed(command, item)
            if not open_literal and current:
                yield _tokens(b"".join(current), command)
                current = []
            current += [head, b"\r\n", body]
            open_literal = True
        elif isinstance(item, bytes):
            if not open_literal and current:
                yield _tokens(b"".join(current), command)
                current = []
            current.append(item)
            open_literal = False
        else:
            raise _malformed(command, item)
    if current:
        yield _tokens(b"".join(current), command)


def _tokens(data: bytes, command: str) -> list[Token]:
    """Tokenize one response (RFC 3501 section 9), literals inline."""
    stack: list[list[Token]] = [[]]
    pos = 0
    while pos < len(data):
        if data[pos : pos + 1].isspace():
            pos += 1
            continue
        match = _TOKEN.match(data, pos)
        if match is None:
            raise _malformed(command, data)
        pos = match.end()
        if match.group("open"):
            stack.append([])
        elif match.group("close"):
            if len(stack) == 1:
                raise _malformed(command, data)
            done = stack.pop()
            stack[-1].append(done)
        elif match.group("quoted") is not None:
            text = re.sub(rb"\\(.)", rb"\1", match.group("quoted"))
            stack[-1].append(_utf8(text, command))
        elif match.group("literal") is not None:
            size = int(match.group("literal"))
            if pos + size > len(data):
                raise _malformed(command, data)
            stack[-1].append(data[pos : pos + size])
            pos += size
        else:
            stack[-1].append(_utf8(match.group("atom"), command))
    if len(stack) != 1:
        raise _malformed(command, data)
    return stack[0]


def _copyuid_destinations(codes: list[Any]) -> list[int]:
    """The destination UIDs of the last ``[COPYUID validity source dest]``."""
    code = codes[-1] if codes else None
    if not isinstance(code, bytes):
        raise ProtocolError(
            "the server offers UIDPLUS but sent no COPYUID for the move to the "
            "Trash; the messages are there, not deleted"
        )
    parts = code.split()
    if len(parts) != 3:
        raise _malformed("COPYUID", code)
    return _expand(parts[2], code)


def _expand(uid_set: bytes, where: bytes) -> list[int]:
    """A UID set's members (``4:6,9`` is ``[4, 5, 6, 9]``), in the set's order."""
    out: list[int] = []
    for part in uid_set.split(b","):
        low, sep, high = part.partition(b":")
        a = _number(low, "COPYUID", where)
        b = _number(high, "COPYUID", where) if sep else a
        step = 1 if b >= a else -1
        out.extend(range(a, b + step, step))
    return out
