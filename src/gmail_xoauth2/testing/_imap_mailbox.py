"""The fake Gmail's IMAP mailbox commands: SELECT through IDLE, with Gmail's replies.

RFC 3501 (IMAP4rev1), RFC 4315 (UIDPLUS: APPENDUID, COPYUID, UID EXPUNGE),
RFC 6851 (MOVE), RFC 2177 (IDLE) and Google's IMAP extensions (X-GM-MSGID,
X-GM-THRID, X-GM-LABELS, X-GM-RAW).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from ._imap_fetch import FetchItem, parse_fetch_items, render_fetch, render_labels
from ._imap_parse import (
    ImapSyntaxError,
    Token,
    as_text,
    flag_list,
    parse_datetime,
    quote,
    string_list,
)
from ._imap_search import SearchTarget, compile_search
from ._imap_session import Exchange, ImapCommandError, ImapSession
from ._mailstore import (
    ALL_MAIL,
    DRAFTS,
    IMPORTANT,
    INBOX,
    SENT,
    SPAM,
    STARRED,
    TRASH,
    FlagMode,
    MailEvent,
    NoSuchMailbox,
)

__all__ = ["MailboxCommands", "mailbox_name", "uid_set"]

# Gmail's SELECT lists these; $Phishing and $NotPhishing are Gmail's own keywords.
_FLAGS = b"(\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing)"
_PERMANENT = (
    b"(\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing \\*)"
)

# X-GM-LABELS names of the system folders (Gmail's IMAP extensions page).
_LABEL_FOLDERS = {
    "\\inbox": INBOX,
    "\\sent": SENT,
    "\\drafts": DRAFTS,
    "\\draft": DRAFTS,
    "\\starred": STARRED,
    "\\important": IMPORTANT,
    "\\spam": SPAM,
    "\\trash": TRASH,
}


def mailbox_name(token: Token, /) -> str:
    """A mailbox argument as the store names it (``INBOX`` in any case is INBOX)."""
    name = as_text(token)
    return INBOX if name.upper() == INBOX else name


def uid_set(uids: Iterable[int], /) -> bytes:
    """A compact UID set for COPYUID (``1:3,7``), keeping the given order's runs."""
    runs: list[list[int]] = []
    for uid in uids:
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return b",".join(b"%d" % a if a == b else b"%d:%d" % (a, b) for a, b in runs)


class MailboxCommands(ImapSession):
    """SELECT/EXAMINE, STATUS, APPEND, FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE,
    CLOSE, UNSELECT, CHECK and IDLE, with their UID variants."""

    # -- selecting --

    def _select(self, args: list[Token], *, readonly: bool) -> None:
        if len(args) < 1:
            raise ImapSyntaxError("SELECT needs a mailbox")
        name = mailbox_name(args[0])
        self.deselect()
        try:
            status = self.backend.store.status(self.user, name)
        except NoSuchMailbox:
            raise ImapCommandError(
                b"NO", f"[NONEXISTENT] Unknown Mailbox: {name} (Failure)"
            ) from None
        self.select_view(status.name, status.messages)
        self.readonly = readonly
        self.untagged(b"FLAGS " + _FLAGS)
        permanent = b"()" if readonly else _PERMANENT
        self.untagged(b"OK [PERMANENTFLAGS " + permanent + b"] Flags permitted.")
        self.untagged(b"OK [UIDVALIDITY %d] UIDs valid." % status.uidvalidity)
        self.untagged(b"%d EXISTS" % status.exists)
        self.untagged(b"0 RECENT")
        self.untagged(b"OK [UIDNEXT %d] Predicted next UID." % status.uidnext)
        mode = b"[READ-ONLY]" if readonly else b"[READ-WRITE]"
        self.tagged(b"OK", mode + b" " + status.name.encode() + b" selected. (Success)")

    def cmd_SELECT(self, tag: bytes, args: list[Token]) -> None:
        self._select(args, readonly=False)

    def cmd_EXAMINE(self, tag: bytes, args: list[Token]) -> None:
        self._select(args, readonly=True)

    def _leave(self, *, expunge: bool) -> None:
        if expunge and self.selected is not None and not self.readonly:
            # RFC 3501 6.4.2: CLOSE expunges silently.
            self.backend.store.expunge(self.user, self.selected)
        self.deselect()
        self.tagged(b"OK", "Returned to authenticated state. (Success)")

    def cmd_CLOSE(self, tag: bytes, args: list[Token]) -> None:
        self._leave(expunge=True)

    def cmd_UNSELECT(self, tag: bytes, args: list[Token]) -> None:
        self._leave(expunge=False)

    def cmd_CHECK(self, tag: bytes, args: list[Token]) -> None:
        self.sync()
        self.tagged(b"OK", "Success")

    def cmd_STATUS(self, tag: bytes, args: list[Token]) -> None:
        if len(args) != 2 or not isinstance(args[1], list):
            raise ImapSyntaxError("STATUS needs a mailbox and a list")
        name = mailbox_name(args[0])
        try:
            status = self.backend.store.status(self.user, name)
        except NoSuchMailbox:
            raise ImapCommandError(
                b"NO", f"[NONEXISTENT] Unknown Mailbox: {name} (Failure)"
            ) from None
        values = {
            "MESSAGES": status.exists,
            "RECENT": 0,
            "UIDNEXT": status.uidnext,
            "UIDVALIDITY": status.uidvalidity,
            "UNSEEN": status.unseen,
        }
        out = []
        for item in string_list(args[1]):
            if item.upper() not in values:
                raise ImapSyntaxError(f"unknown STATUS item {item!r}")
            out.append(b"%s %d" % (item.upper().encode(), values[item.upper()]))
        self.untagged(b"STATUS " + quote(status.name) + b" (" + b" ".join(out) + b")")
        self.tagged(b"OK", "Success")

    # -- APPEND --

    def cmd_APPEND(self, tag: bytes, args: list[Token]) -> None:
        if len(args) < 2 or not isinstance(args[-1], bytes):
            raise ImapSyntaxError("APPEND needs a mailbox and a literal")
        name = mailbox_name(args[0])
        flags: list[str] = []
        when = None
        for extra in args[1:-1]:
            if isinstance(extra, list):
                flags = [f for f in string_list(extra) if f.lower() != "\\recent"]
            else:
                when = parse_datetime(as_text(extra))
        store = self.backend.store
        try:
            uid = store.append(
                self.user, name, args[-1], flags=flags, internaldate=when
            )
            uidvalidity = store.status(self.user, name).uidvalidity
        except NoSuchMailbox:
            raise ImapCommandError(
                b"NO", f"[TRYCREATE] No folder {name} (Failure)"
            ) from None
        self.sync()
        self.tagged(b"OK", b"[APPENDUID %d %d] (Success)" % (uidvalidity, uid))

    # -- FETCH and SEARCH --

    def _fetch(self, args: list[Token], *, by_uid: bool) -> None:
        if len(args) != 2:
            raise ImapSyntaxError("FETCH needs a set and items")
        items = parse_fetch_items(args[1])
        if by_uid and not any(item.name == "UID" for item in items):
            items.insert(0, FetchItem("UID"))
        self.sync(expunge=by_uid)
        marks_seen = not self.readonly and any(item.sets_seen for item in items)
        for seq, msg in self.resolve(args[0], by_uid=by_uid):
            changed = False
            if marks_seen and "\\Seen" not in msg.flags:
                assert self.selected is not None
                updated = self.backend.store.store_flags(
                    self.user, self.selected, [msg.uid], ["\\Seen"], "add"
                )
                if updated:
                    msg, changed = updated[0], True
                    self.flag_cache[msg.uid] = frozenset(msg.flags)
            self.send_response(render_fetch(seq, msg, items, flags_changed=changed))
        self.tagged(b"OK", "Success")

    def cmd_FETCH(self, tag: bytes, args: list[Token]) -> None:
        self._fetch(args, by_uid=False)

    def cmd_UID_FETCH(self, tag: bytes, args: list[Token]) -> None:
        self._fetch(args, by_uid=True)

    def _search(self, args: list[Token], *, by_uid: bool) -> None:
        test = compile_search(args)
        self.sync(expunge=by_uid)
        current = self.current()
        largest_uid = self.view[-1] if self.view else 0
        hits = []
        for seq, uid in enumerate(self.view, start=1):
            msg = current.get(uid)
            if msg is not None and test(
                SearchTarget(seq, msg, len(self.view), largest_uid)
            ):
                hits.append(b"%d" % (uid if by_uid else seq))
        self.untagged(b" ".join([b"SEARCH", *hits]))
        self.tagged(b"OK", "SEARCH completed (Success)")

    def cmd_SEARCH(self, tag: bytes, args: list[Token]) -> None:
        self._search(args, by_uid=False)

    def cmd_UID_SEARCH(self, tag: bytes, args: list[Token]) -> None:
        self._search(args, by_uid=True)

    # -- STORE --

    def _store(self, args: list[Token], *, by_uid: bool) -> None:
        if len(args) < 3:
            raise ImapSyntaxError("STORE needs a set, an item and values")
        item = as_text(args[1]).upper()
        values = args[2] if len(args) == 3 and isinstance(args[2], list) else args[2:]
        names = string_list(values if isinstance(values, list) else [values])
        mode: FlagMode = {"+": "add", "-": "remove"}.get(item[:1], "set")  # type: ignore[assignment]
        base = item.lstrip("+-")
        silent = base.endswith(".SILENT")
        base = base.removesuffix(".SILENT")
        if base not in ("FLAGS", "X-GM-LABELS"):
            raise ImapSyntaxError(f"unknown STORE item {item!r}")
        if self.readonly:
            raise ImapCommandError(
                b"NO", "STORE attempt on READ-ONLY folder. (Failure)"
            )
        self.sync(expunge=by_uid)
        targets = self.resolve(args[0], by_uid=by_uid)
        assert self.selected is not None
        for seq, msg in targets:
            if base == "FLAGS":
                flags = [f for f in names if f.lower() != "\\recent"]
                updated = self.backend.store.store_flags(
                    self.user, self.selected, [msg.uid], flags, mode
                )
                if not updated:
                    continue
                self.flag_cache[msg.uid] = frozenset(updated[0].flags)
                value = b"FLAGS " + flag_list(updated[0].flags)
            else:
                labels = self._store_labels(msg.uid, msg.labels, names, mode)
                value = b"X-GM-LABELS " + render_labels(labels)
            if not silent:
                uid = b" UID %d" % msg.uid if by_uid else b""
                self.untagged(b"%d FETCH (%s%s)" % (seq, value, uid))
        self.tagged(b"OK", "Success")

    def _store_labels(
        self, uid: int, labels: Iterable[str], names: list[str], mode: FlagMode
    ) -> set[str]:
        # Gmail's labels are its folders: adding one copies the message into the
        # folder (creating a user label as needed), removing one takes it out.
        assert self.selected is not None
        store = self.backend.store
        have = {_LABEL_FOLDERS.get(x.lower(), x) for x in labels}
        given = {_LABEL_FOLDERS.get(x.lower(), x) for x in names}
        add = given - have if mode != "remove" else set()
        drop = (
            (given & have)
            if mode == "remove"
            else (have - given if mode == "set" else set())
        )
        msgid = self.current()[uid].gm_msgid if uid in self.current() else None
        for folder in sorted(add):
            if folder not in {m.name for m in store.mailboxes(self.user)}:
                store.create(self.user, folder)
            store.copy(self.user, self.selected, [uid], folder)
        for folder in sorted(drop):
            try:
                copies = store.status(self.user, folder).messages
            except NoSuchMailbox:
                continue
            store.remove(
                self.user, folder, [m.uid for m in copies if m.gm_msgid == msgid]
            )
        return set(self._labels_of(msgid))

    def _labels_of(self, msgid: int | None) -> set[str]:
        for box in (self.selected or INBOX, ALL_MAIL):
            try:
                status = self.backend.store.status(self.user, box)
            except NoSuchMailbox:
                continue
            for msg in status.messages:
                if msg.gm_msgid == msgid:
                    return set(msg.labels)
        return set()

    def cmd_STORE(self, tag: bytes, args: list[Token]) -> None:
        self._store(args, by_uid=False)

    def cmd_UID_STORE(self, tag: bytes, args: list[Token]) -> None:
        self._store(args, by_uid=True)

    # -- COPY, MOVE, EXPUNGE --

    def _copy(self, args: list[Token], *, by_uid: bool, move: bool) -> None:
        if len(args) != 2:
            raise ImapSyntaxError("COPY needs a set and a mailbox")
        destination = mailbox_name(args[1])
        store = self.backend.store
        assert self.selected is not None
        if move:
            self.sync(expunge=True)
        targets = self.resolve(args[0], by_uid=by_uid)
        try:
            uidvalidity = store.status(self.user, destination).uidvalidity
            pairs = store.copy(
                self.user, self.selected, [m.uid for _, m in targets], destination
            )
        except NoSuchMailbox:
            raise ImapCommandError(
                b"NO", f"[TRYCREATE] No folder {destination} (Failure)"
            ) from None
        code = b""
        if pairs:
            code = b"[COPYUID %d %s %s]" % (
                uidvalidity,
                uid_set(s for s, _ in pairs),
                uid_set(d for _, d in pairs),
            )
        if not move:
            self.tagged(b"OK", code + b" (Success)" if code else b"Success")
            return
        if code:
            # RFC 6851 section 4.3: COPYUID goes in an untagged OK before expunges.
            self.untagged(b"OK " + code)
        if not self.readonly:
            store.remove(self.user, self.selected, [s for s, _ in pairs])
        self.sync()
        self.tagged(b"OK", "Success")

    def cmd_COPY(self, tag: bytes, args: list[Token]) -> None:
        self._copy(args, by_uid=False, move=False)

    def cmd_UID_COPY(self, tag: bytes, args: list[Token]) -> None:
        self._copy(args, by_uid=True, move=False)

    def cmd_MOVE(self, tag: bytes, args: list[Token]) -> None:
        self._copy(args, by_uid=False, move=True)

    def cmd_UID_MOVE(self, tag: bytes, args: list[Token]) -> None:
        self._copy(args, by_uid=True, move=True)

    def _expunge(self, uids: list[int] | None) -> None:
        if self.readonly:
            raise ImapCommandError(
                b"NO", "EXPUNGE attempt on READ-ONLY folder. (Failure)"
            )
        assert self.selected is not None
        # The store reports sequence numbers against its own list; the client's
        # numbers are this session's view, so the EXPUNGE lines come from sync().
        self.backend.store.expunge(self.user, self.selected, uids=uids)
        self.sync()
        self.tagged(b"OK", "Success")

    def cmd_EXPUNGE(self, tag: bytes, args: list[Token]) -> None:
        self._expunge(None)

    def cmd_UID_EXPUNGE(self, tag: bytes, args: list[Token]) -> None:
        if len(args) != 1:
            raise ImapSyntaxError("UID EXPUNGE needs a UID set")
        self.sync()
        targets = self.resolve(args[0], by_uid=True)
        self._expunge([m.uid for _, m in targets if "\\Deleted" in m.flags])

    # -- IDLE --

    def cmd_IDLE(self, tag: bytes, args: list[Token]) -> Exchange:
        """RFC 2177: ``+ idling``, changes pushed at once, until the client's DONE."""
        wake, poke = socket.socketpair()

        def on_event(event: MailEvent) -> None:
            if event.user == self.user and event.mailbox == self.selected:
                try:
                    poke.send(b"!")
                except OSError:
                    pass  # IDLE ended meanwhile

        store = self.backend.store
        store.add_listener(on_event)
        self._wake = wake
        try:
            poke.send(b"!")  # report what changed before IDLE began, too
            line = yield b"+ idling"
        finally:
            store.remove_listener(on_event)
            self._wake = None
            wake.close()
            poke.close()
        if line.upper() != b"DONE":
            raise ImapCommandError(b"BAD", "Could not parse command")
        self.tagged(b"OK", "IDLE terminated (Success)")
