"""Which IMAP commands may be sent again after a reconnect, and when.

RFC 3501 sequence numbers change when messages are expunged, and a mailbox's
UIDs are only stable while its UIDVALIDITY is. A command cut off by a lost
connection is repeated only when repeating it cannot do harm.
"""

from __future__ import annotations

import re
from typing import Any, Literal, NamedTuple

__all__ = [
    "SESSION_COMMANDS",
    "TRACKED",
    "AfterLost",
    "Depends",
    "Kind",
    "MailboxState",
    "after_lost",
    "as_bytes",
    "classify",
    "number",
    "observed",
    "stores_flags",
    "text",
    "unchanged_error",
]

Depends = Literal["none", "sequence", "uid"]


class Kind(NamedTuple):
    repeatable: bool
    depends: Depends


# Safe to send again: they read, or setting the same state twice is harmless.
_REPEATABLE = frozenset(
    {
        "CAPABILITY", "CHECK", "ENABLE", "EXAMINE", "GETACL", "GETANNOTATION",
        "GETQUOTA", "GETQUOTAROOT", "LIST", "LSUB", "MYRIGHTS", "NAMESPACE",
        "NOOP", "SELECT", "STATUS", "SUBSCRIBE", "UNSELECT", "UNSUBSCRIBE",
    }
)  # fmt: skip
# Their arguments are sequence numbers: repeat only in an unchanged mailbox.
_SEQUENCE_READS = frozenset({"FETCH", "PARTIAL", "STORE"})
_SEARCHES = frozenset({"SEARCH", "SORT", "THREAD"})
_SEQUENCE_ONCE = frozenset({"COPY", "MOVE"})
# UID variants that read or set flags: repeat while UIDVALIDITY is unchanged.
_UID_REPEATABLE = frozenset({"FETCH", "SEARCH", "SORT", "STORE", "THREAD"})
# Commands this class runs itself when a session is (re)established.
SESSION_COMMANDS = frozenset({"AUTHENTICATE", "LOGIN", "LOGOUT", "STARTTLS"})
_SEQUENCE_SET = re.compile(r"[0-9*][0-9*:,]*")


def classify(name: str, args: tuple[Any, ...]) -> Kind:
    """How a command may be treated when its connection dies (never twice unless safe).

    Anything not listed (APPEND, EXPUNGE, CREATE, DELETE, RENAME, CLOSE,
    SETACL, extension commands...) is sent at most once.
    """
    if name == "UID":
        sub = str(args[0]).upper() if args else ""
        return Kind(sub in _UID_REPEATABLE, "uid")
    if name in _SEQUENCE_READS:
        return Kind(True, "sequence")
    if name in _SEQUENCE_ONCE:
        return Kind(False, "sequence")
    if name in _SEARCHES:
        # SEARCH ALL is valid in any state of the mailbox; SEARCH 1:5 is not.
        words = " ".join(text(a) for a in args).replace("(", " ").replace(")", " ")
        seq = any(_SEQUENCE_SET.fullmatch(w) for w in words.split())
        return Kind(True, "sequence" if seq else "none")
    return Kind(name in _REPEATABLE, "none")


def as_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return b"" if value is None else str(value).encode("ascii", "replace")


def text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", "replace")
    return str(value)


class MailboxState(NamedTuple):
    """What we last knew of the selected mailbox (RFC 3501 section 7.3, 7.1).

    A tuple: built anew for every EXISTS or EXPUNGE, which a busy mailbox
    sends by the thousand, so it must cost no more than a tuple.
    """

    uidvalidity: int | None = None
    exists: int | None = None
    uidnext: int | None = None

    def differs(self, other: MailboxState, depends: Depends) -> str | None:
        """Why ``other`` (after a reconnect) is not the mailbox we knew, or None."""
        if depends == "none":
            return None
        if self.uidvalidity != other.uidvalidity:
            return f"UIDVALIDITY {self.uidvalidity} -> {other.uidvalidity}"
        if depends == "uid":
            return None
        if self.exists is not None and self.exists != other.exists:
            return f"EXISTS {self.exists} -> {other.exists}"
        if None not in (self.uidnext, other.uidnext) and self.uidnext != other.uidnext:
            return f"UIDNEXT {self.uidnext} -> {other.uidnext}"
        return None


def observed(
    state: MailboxState, typ: str, dat: object, *, selecting: bool = False
) -> MailboxState:
    """The mailbox state after an untagged ``EXISTS``, ``EXPUNGE``,
    ``UIDVALIDITY`` or ``UIDNEXT`` (``dat`` as imaplib stores it).

    While a mailbox is being selected, EXISTS is its count; afterwards it is
    growth: k new messages took the next k UIDs (RFC 3501 2.3.1.1), so the
    UIDNEXT to expect after a reconnect moves by k. A server that skipped UIDs
    makes the check fail safe: no repeat, an error.
    """
    uidvalidity, known, uidnext = state
    if typ == "EXISTS":
        exists = number(dat)
        if not selecting and uidnext is not None:
            if exists is None or known is None or exists < known:
                uidnext = None
            else:
                uidnext += exists - known
        return MailboxState(uidvalidity, exists, uidnext)
    if typ == "EXPUNGE":
        if known is None:
            return state
        return MailboxState(uidvalidity, known - 1, uidnext)
    if typ == "UIDVALIDITY":
        return MailboxState(number(dat), known, uidnext)
    if typ == "UIDNEXT":
        return MailboxState(uidvalidity, known, number(dat))
    return state


TRACKED = frozenset({"EXISTS", "EXPUNGE", "UIDVALIDITY", "UIDNEXT"})
"""The untagged responses :func:`observed` follows."""


def number(data: object) -> int | None:
    if not isinstance(data, bytes):
        return None
    try:
        return int(data)  # b"12", imaplib's data for "* 12 EXISTS"
    except ValueError:
        pass
    try:
        return int(data.split()[0])
    except (IndexError, ValueError):
        return None


class AfterLost(NamedTuple):
    """What to do when the connection died during a command (see :func:`after_lost`).

    Attributes:
        action: ``"raise"`` (reconnect is off), ``"reconnect_then_raise"``
            (the command may have been carried out: never sent again; the
            session is replaced so the object stays usable), or ``"retry"``
            (reconnect, check the mailbox is unchanged, send it once more).
        unknown: whether the command may have been carried out.
        forget_mailbox: the mailbox must not be selected again (a CLOSE that
            may have happened).
        message: the error's text when the action raises.
    """

    action: Literal["raise", "reconnect_then_raise", "retry"]
    unknown: bool
    forget_mailbox: bool
    message: str


def after_lost(
    name: str, kind: Kind, *, sent: bool, reconnect: bool, cause: object
) -> AfterLost:
    """The one rule, for the sync and the asyncio IMAP4: repeat only what is safe."""
    once = sent and not kind.repeatable
    forget = once and name == "CLOSE"
    if not reconnect:
        return AfterLost(
            "raise", once, forget, f"connection lost during {name}: {cause}"
        )
    if once:
        return AfterLost(
            "reconnect_then_raise",
            True,
            forget,
            f"connection lost after {name} was sent ({cause}); the server may "
            "or may not have carried it out, so it was not sent again: "
            "check the mailbox before repeating it",
        )
    return AfterLost("retry", False, False, f"{name} failed: {cause}")


def unchanged_error(
    name: str,
    mailbox: str,
    known: MailboxState,
    now: MailboxState,
    kind: Kind,
    *,
    sent: bool,
    stores: bool,
) -> tuple[str, bool] | None:
    """After a reconnect: why ``name`` must not run on the mailbox as it is now.

    Returns None when the mailbox is the one the command's message numbers or
    UIDs were meant for; else the error's message and whether the command may
    have been carried out already (a STORE cut off after it was sent).
    """
    changed = known.differs(now, kind.depends)
    if changed is None:
        return None
    unknown = sent and stores
    if unknown:
        what = (
            f"{name} had been sent and may or may not have been carried "
            "out; it was not sent again"
        )
    else:
        what = f"{name} was not sent{' again' if sent else ''}"
    return (
        f"reconnected, but mailbox {mailbox} changed meanwhile ({changed}); "
        f"{what} because its message numbers may now point at other messages: "
        "search again",
        unknown,
    )


def stores_flags(name: str, args: tuple[Any, ...]) -> bool:
    """Whether the command is a STORE (a repeat of which is harmless but unknowable)."""
    return name == "STORE" or (
        name == "UID" and bool(args) and text(args[0]).upper() == "STORE"
    )
