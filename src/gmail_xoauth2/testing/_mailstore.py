"""The fake Gmail's mailboxes: per-user folders, messages, UIDs, flags and labels.

One lock guards everything, so the IMAP, POP and SMTP servers can share a store
from many handler threads. Gmail's model is approximated this way: every message
also has a copy in ``[Gmail]/All Mail`` (except Spam and Trash), every copy of
one message shares its ``gm_msgid`` and its ``labels``, and each folder numbers
its own copies with UIDs.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Literal

from .._tokens import Clock, utcnow

__all__ = [
    "ALL_MAIL",
    "DRAFTS",
    "IMPORTANT",
    "INBOX",
    "SENT",
    "SPAM",
    "STARRED",
    "TRASH",
    "MailEvent",
    "MailStore",
    "MailboxInfo",
    "MailboxStatus",
    "Message",
    "NoSuchMailbox",
    "NoSuchUser",
]

INBOX = "INBOX"
ALL_MAIL = "[Gmail]/All Mail"
SENT = "[Gmail]/Sent Mail"
DRAFTS = "[Gmail]/Drafts"
SPAM = "[Gmail]/Spam"
TRASH = "[Gmail]/Trash"
STARRED = "[Gmail]/Starred"
IMPORTANT = "[Gmail]/Important"

# Gmail's LIST: RFC 6154 SPECIAL-USE attributes, and the [Gmail] parent that
# cannot be selected.
_SYSTEM_FOLDERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (INBOX, ("\\HasNoChildren",)),
    ("[Gmail]", ("\\HasChildren", "\\Noselect")),
    (ALL_MAIL, ("\\All", "\\HasNoChildren")),
    (DRAFTS, ("\\Drafts", "\\HasNoChildren")),
    (IMPORTANT, ("\\HasNoChildren", "\\Important")),
    (SENT, ("\\HasNoChildren", "\\Sent")),
    (SPAM, ("\\HasNoChildren", "\\Junk")),
    (STARRED, ("\\Flagged", "\\HasNoChildren")),
    (TRASH, ("\\HasNoChildren", "\\Trash")),
)

# The X-GM-LABELS name of each system folder; other folders are labels by name.
_FOLDER_LABELS = {
    INBOX: "\\Inbox",
    SENT: "\\Sent",
    DRAFTS: "\\Drafts",
    STARRED: "\\Starred",
    IMPORTANT: "\\Important",
    SPAM: "\\Spam",
    TRASH: "\\Trash",
}

# Folders whose messages are not also in All Mail (Gmail keeps Spam and Trash out).
_OUTSIDE_ALL_MAIL = frozenset({ALL_MAIL, SPAM, TRASH})
# Expunging in these deletes a message forever, every copy of it (Gmail's
# "Delete forever"); elsewhere an expunge only removes that label.
_DELETES_FOREVER = frozenset({SPAM, TRASH})

_FIRST_MSGID = 1_600_000_000_000_000_000

FlagMode = Literal["set", "add", "remove"]


class NoSuchUser(KeyError):
    """The store has no mailboxes for this user."""


class NoSuchMailbox(KeyError):
    """The user has no mailbox of this name (or it cannot be selected)."""


@dataclass
class Message:
    """One copy of a message in one mailbox.

    Attributes:
        uid: the UID in its mailbox.
        raw: the whole RFC 5322 message, CRLF line ends.
        flags: IMAP flags such as ``\\Seen`` (this copy's own).
        internaldate: when the fake received it (aware).
        gm_msgid: Gmail's message id, shared by every copy.
        gm_thrid: Gmail's thread id.
        labels: Gmail labels (``\\Inbox``, ``\\Sent``, custom names), shared by
            every copy of the message.
    """

    uid: int
    raw: bytes
    flags: set[str]
    internaldate: datetime
    gm_msgid: int
    gm_thrid: int
    labels: set[str] = field(default_factory=set)

    @property
    def size(self) -> int:
        """RFC822.SIZE: the length of the raw message in bytes."""
        return len(self.raw)

    def snapshot(self) -> Message:
        """A copy that later changes to the store do not touch."""
        return Message(
            self.uid,
            self.raw,
            set(self.flags),
            self.internaldate,
            self.gm_msgid,
            self.gm_thrid,
            set(self.labels),
        )


@dataclass(frozen=True)
class MailboxInfo:
    """A LIST entry: the mailbox name and its attributes."""

    name: str
    attributes: tuple[str, ...]
    selectable: bool


@dataclass(frozen=True)
class MailboxStatus:
    """What SELECT and STATUS report; ``messages`` are snapshots in UID order."""

    name: str
    uidvalidity: int
    uidnext: int
    messages: tuple[Message, ...]

    @property
    def exists(self) -> int:
        """The number of messages."""
        return len(self.messages)

    @property
    def unseen(self) -> int:
        """The number of messages without ``\\Seen``."""
        return sum(1 for m in self.messages if "\\Seen" not in m.flags)


@dataclass(frozen=True)
class MailEvent:
    """A change to one mailbox, sent to listeners after the store's lock is released.

    Attributes:
        user: whose mailbox changed.
        mailbox: its name.
        kind: ``"exists"`` (messages added), ``"expunge"`` (removed) or
            ``"flags"`` (flags changed).
        uids: the UIDs concerned.
    """

    user: str
    mailbox: str
    kind: Literal["exists", "expunge", "flags"]
    uids: tuple[int, ...]


@dataclass
class _Mailbox:
    name: str
    attributes: tuple[str, ...]
    uidvalidity: int
    selectable: bool = True
    uidnext: int = 1
    messages: list[Message] = field(default_factory=list)

    def by_uid(self, uids: Iterable[int]) -> list[Message]:
        wanted = set(uids)
        return [m for m in self.messages if m.uid in wanted]


Listener = Callable[[MailEvent], None]


class MailStore:
    """Per-user Gmail mailboxes, safe to share between threads.

    Args:
        users: the addresses that have mailboxes (compared case-insensitively).
        clock: gives INTERNALDATE to new messages.
    """

    def __init__(self, users: Iterable[str] = (), *, clock: Clock = utcnow) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._users: dict[str, dict[str, _Mailbox]] = {}
        self._msgids = itertools.count(_FIRST_MSGID + 1)
        self._uidvalidity = itertools.count(1)
        self._listeners: list[Listener] = []
        # Message-ID header -> gm_thrid, to thread replies as Gmail does.
        self._threads: dict[tuple[str, str], int] = {}
        for user in users:
            self.add_user(user)

    # -- users and mailboxes -------------------------------------------------

    def add_user(self, user: str) -> None:
        """Create ``user``'s Gmail folders (nothing happens if they exist)."""
        key = user.lower()
        with self._lock:
            if key in self._users:
                return
            boxes: dict[str, _Mailbox] = {}
            for name, attributes in _SYSTEM_FOLDERS:
                boxes[name] = _Mailbox(
                    name,
                    attributes,
                    next(self._uidvalidity),
                    selectable="\\Noselect" not in attributes,
                )
            self._users[key] = boxes

    def has_user(self, user: str) -> bool:
        """Whether ``user`` has mailboxes here."""
        with self._lock:
            return user.lower() in self._users

    @property
    def users(self) -> tuple[str, ...]:
        """The users, lower-cased, in the order they were added."""
        with self._lock:
            return tuple(self._users)

    def create(self, user: str, mailbox: str) -> None:
        """Create a user label (an IMAP folder); ``INBOX`` and existing names fail.

        Raises:
            ValueError: the mailbox exists already.
        """
        with self._lock:
            boxes = self._boxes(user)
            if mailbox in boxes or mailbox.upper() == INBOX:
                raise ValueError(f"mailbox {mailbox!r} exists")
            boxes[mailbox] = _Mailbox(
                mailbox, ("\\HasNoChildren",), next(self._uidvalidity)
            )

    def delete(self, user: str, mailbox: str) -> None:
        """Delete a user label; its messages stay in All Mail, as on Gmail.

        Raises:
            NoSuchMailbox: no such label.
            ValueError: ``mailbox`` is INBOX or a ``[Gmail]`` system folder.
        """
        with self._lock:
            boxes = self._boxes(user)
            box = self._user_label(boxes, mailbox)
            del boxes[box.name]
            for message in box.messages:
                self._relabel(user, message.gm_msgid)

    def rename(self, user: str, old: str, new: str) -> None:
        """Rename a user label; its messages keep their UIDs and get the new label.

        Raises:
            NoSuchMailbox: no label ``old``.
            ValueError: a system folder, or ``new`` exists already.
        """
        with self._lock:
            boxes = self._boxes(user)
            box = self._user_label(boxes, old)
            if new in boxes or new.upper() == INBOX or not new:
                raise ValueError(f"mailbox {new!r} exists")
            del boxes[old]
            box.name = new
            boxes[new] = box
            for message in box.messages:
                self._relabel(user, message.gm_msgid)

    @staticmethod
    def _user_label(boxes: dict[str, _Mailbox], mailbox: str) -> _Mailbox:
        if mailbox.upper() == INBOX or any(mailbox == n for n, _ in _SYSTEM_FOLDERS):
            raise ValueError(f"{mailbox!r} is a system folder")
        box = boxes.get(mailbox)
        if box is None:
            raise NoSuchMailbox(mailbox)
        return box

    def mailboxes(self, user: str) -> list[MailboxInfo]:
        """Every mailbox of ``user`` (as LIST shows them), INBOX first."""
        with self._lock:
            return [
                MailboxInfo(b.name, b.attributes, b.selectable)
                for b in self._boxes(user).values()
            ]

    def status(self, user: str, mailbox: str) -> MailboxStatus:
        """A consistent snapshot of a mailbox: UIDVALIDITY, UIDNEXT and messages.

        Raises:
            NoSuchMailbox: unknown or not selectable.
        """
        with self._lock:
            box = self._box(user, mailbox)
            return MailboxStatus(
                box.name,
                box.uidvalidity,
                box.uidnext,
                tuple(m.snapshot() for m in box.messages),
            )

    def messages(self, user: str, mailbox: str = INBOX) -> list[bytes]:
        """The raw messages of a mailbox, in UID order."""
        with self._lock:
            return [m.raw for m in self._box(user, mailbox).messages]

    # -- adding messages ------------------------------------------------------

    def deliver(self, user: str, raw: bytes, mailbox: str = INBOX) -> int:
        """Deliver a new message to ``mailbox`` (and All Mail); return its UID."""
        return self.append(user, mailbox, raw)

    def append(
        self,
        user: str,
        mailbox: str,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> int:
        """Add a new message to ``mailbox`` (and All Mail); return its UID there.

        Raises:
            NoSuchUser, NoSuchMailbox: unknown user or mailbox.
        """
        events: list[MailEvent] = []
        with self._lock:
            box = self._box(user, mailbox)
            msgid = next(self._msgids)
            thrid = self._thread_of(user, raw, msgid)
            when = internaldate or self._clock()
            flagset = set(flags)
            labels: set[str] = set()
            uid = 0
            targets = [box]
            if box.name not in _OUTSIDE_ALL_MAIL:
                targets.append(self._box(user, ALL_MAIL))
            for target in targets:
                copy = Message(
                    target.uidnext, raw, set(flagset), when, msgid, thrid, labels
                )
                target.uidnext += 1
                target.messages.append(copy)
                events.append(
                    MailEvent(user.lower(), target.name, "exists", (copy.uid,))
                )
                if target is box:
                    uid = copy.uid
            self._relabel(user, msgid)
        self._notify(events)
        return uid

    def copy(
        self, user: str, source: str, uids: Iterable[int], destination: str
    ) -> list[tuple[int, int]]:
        """Copy messages by UID; return ``(source_uid, new_uid)`` pairs (COPYUID).

        Copying a message into a folder that already holds it (All Mail, say)
        adds nothing, as in Gmail, and the pair gives the UID it already has.
        """
        events: list[MailEvent] = []
        pairs: list[tuple[int, int]] = []
        with self._lock:
            src = self._box(user, source)
            dst = self._box(user, destination)
            for message in src.by_uid(uids):
                existing = [m for m in dst.messages if m.gm_msgid == message.gm_msgid]
                if existing:
                    pairs.append((message.uid, existing[0].uid))
                    continue
                new = Message(
                    dst.uidnext,
                    message.raw,
                    set(message.flags),
                    message.internaldate,
                    message.gm_msgid,
                    message.gm_thrid,
                    message.labels,
                )
                dst.uidnext += 1
                dst.messages.append(new)
                pairs.append((message.uid, new.uid))
                events.append(MailEvent(user.lower(), dst.name, "exists", (new.uid,)))
                self._relabel(user, message.gm_msgid)
        self._notify(events)
        return pairs

    def move(
        self, user: str, source: str, uids: Iterable[int], destination: str
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """Move messages by UID (RFC 6851).

        Returns:
            The ``(source_uid, new_uid)`` pairs and the expunged sequence
            numbers, as :meth:`expunge` reports them.
        """
        pairs = self.copy(user, source, list(uids), destination)
        expunged = self.expunge(user, source, uids=[s for s, _ in pairs])
        return pairs, expunged

    # -- flags and expunge ----------------------------------------------------

    def store_flags(
        self,
        user: str,
        mailbox: str,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: FlagMode = "add",
    ) -> list[Message]:
        """Set, add or remove flags on messages by UID; return their snapshots."""
        changed: list[Message] = []
        flagset = set(flags)
        with self._lock:
            box = self._box(user, mailbox)
            for message in box.by_uid(uids):
                if mode == "set":
                    message.flags = set(flagset)
                elif mode == "add":
                    message.flags |= flagset
                else:
                    message.flags -= flagset
                changed.append(message.snapshot())
        if changed:
            uidlist = tuple(m.uid for m in changed)
            self._notify([MailEvent(user.lower(), mailbox, "flags", uidlist)])
        return changed

    def expunge(
        self, user: str, mailbox: str, *, uids: Iterable[int] | None = None
    ) -> list[int]:
        """Remove ``\\Deleted`` messages (only those in ``uids``, if given).

        In Trash and Spam this deletes them forever, as on Gmail: every copy of
        them goes, in All Mail and every label too.

        Returns:
            The sequence numbers in the order IMAP must send ``* n EXPUNGE``:
            ascending, each valid at the moment it is sent (so deleting
            messages 2, 3 and 5 gives ``[2, 2, 3]``).
        """
        with self._lock:
            box = self._box(user, mailbox)
            only = set(uids) if uids is not None else None
            kept: list[Message] = []
            numbers: list[int] = []
            gone: list[Message] = []
            for index, message in enumerate(box.messages, start=1):
                if (only is None and "\\Deleted" in message.flags) or (
                    only is not None and message.uid in only
                ):
                    numbers.append(index - len(gone))
                    gone.append(message)
                else:
                    kept.append(message)
            box.messages = kept
            events: list[MailEvent] = []
            if gone:
                uidlist = tuple(m.uid for m in gone)
                events.append(MailEvent(user.lower(), box.name, "expunge", uidlist))
            if box.name in _DELETES_FOREVER:
                events += self._purge(user, {m.gm_msgid for m in gone})
            for message in gone:
                self._relabel(user, message.gm_msgid)
        self._notify(events)
        return numbers

    def _purge(self, user: str, msgids: set[int]) -> list[MailEvent]:
        """Remove every copy of these messages, in every folder (lock held)."""
        events: list[MailEvent] = []
        for other in self._boxes(user).values():
            removed = tuple(m.uid for m in other.messages if m.gm_msgid in msgids)
            if removed:
                other.messages = [m for m in other.messages if m.uid not in removed]
                events.append(MailEvent(user.lower(), other.name, "expunge", removed))
        return events

    def remove(self, user: str, mailbox: str, uids: Iterable[int]) -> list[int]:
        """Remove messages by UID whatever their flags (POP's DELE at QUIT)."""
        return self.expunge(user, mailbox, uids=list(uids))

    # -- listeners ------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` after every change (outside the lock)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- internals --------------------------------------------------------------

    def _boxes(self, user: str) -> dict[str, _Mailbox]:
        try:
            return self._users[user.lower()]
        except KeyError:
            raise NoSuchUser(user) from None

    def _box(self, user: str, mailbox: str) -> _Mailbox:
        boxes = self._boxes(user)
        # RFC 3501 section 5.1: INBOX is case-insensitive, other names are not.
        name = INBOX if mailbox.upper() == INBOX else mailbox
        box = boxes.get(name)
        if box is None or not box.selectable:
            raise NoSuchMailbox(mailbox)
        return box

    def _relabel(self, user: str, msgid: int) -> None:
        # Every copy shares one label set: the folders that hold the message.
        labels: set[str] = set()
        copies: list[Message] = []
        for box in self._boxes(user).values():
            for message in box.messages:
                if message.gm_msgid == msgid:
                    copies.append(message)
                    if box.name != ALL_MAIL:
                        labels.add(_FOLDER_LABELS.get(box.name, box.name))
        for message in copies:
            message.labels = labels

    def _thread_of(self, user: str, raw: bytes, msgid: int) -> int:
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
        key = user.lower()
        thrid = msgid
        for name in ("In-Reply-To", "References"):
            for ref in str(headers.get(name, "")).split():
                found = self._threads.get((key, ref.strip()))
                if found is not None:
                    thrid = found
                    break
            if thrid != msgid:
                break
        own = str(headers.get("Message-ID", "")).strip()
        if own:
            self._threads.setdefault((key, own), thrid)
        return thrid

    def _notify(self, events: list[MailEvent]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for event in events:
            for listener in listeners:
                listener(event)
