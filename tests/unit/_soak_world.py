"""The soak test's world: one user's IMAP, POP and SMTP clients, what they were told,
and the fake Gmail's store as the oracle of what really happened.

Each operation does what a mail program would do and records the library's
report: done, not done, or unknown (``outcome_unknown``, ``DeliveryUnknown``).
Only :class:`gmail_xoauth2.ConnectionLost` may escape an operation; anything else
propagates and fails the test. The checks compare the reports with the store.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gmail_xoauth2 import IMAP4, POP3, SMTP, ConnectionLost, DeliveryUnknown
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.auth import GoogleTokenProvider
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

USER = "alice@example.com"
OUTSIDER = "carol@example.net"
LABEL = "Soak"
ARCHIVE = "Archive"
INBOX = "INBOX"
SENT = "[Gmail]/Sent Mail"
ALL_MAIL = "[Gmail]/All Mail"

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
_FETCH_UID = re.compile(rb"\bUID (\d+)")

# What the library said about an operation that changes the mailbox.
DONE = "done"
NOT_DONE = "not done"
UNKNOWN = "unknown"


def message_id(raw: bytes) -> str | None:
    match = _MESSAGE_ID.search(raw)
    return match.group(1).decode() if match else None


def make_message(msgid: str, sender: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: {msgid}\r\n\r\n{subject}, all the way through.\r\n"
    ).encode()


@dataclass
class Log:
    """What happened, step by step, to quote when an invariant breaks."""

    seed: int
    step: int = 0
    lines: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> None:
        self.lines.append(f"step {self.step}: {text}")

    def tail(self, n: int = 25) -> str:
        return f"seed {self.seed}, step {self.step}; last events:\n  " + "\n  ".join(
            self.lines[-n:]
        )


class World:
    """One FakeGmail, one token provider, one IMAP4, POP3 and SMTP, and the ledger."""

    def __init__(
        self, gmail: FakeGmail, clock: ManualClock, rng: random.Random, log: Log
    ) -> None:
        self.gmail = gmail
        self.clock = clock
        self.rng = rng
        self.log = log
        self.client_sleeps: list[float] = []
        self.token_sleeps: list[float] = []
        jitter = random.Random(rng.random())
        self.provider: GoogleTokenProvider = gmail.token_provider(
            USER,
            clock=clock,
            backoff=Backoff(sleep=self.token_sleeps.append, rand=jitter.random),
        )
        backoff = Backoff(sleep=self.client_sleeps.append, rand=jitter.random)
        common: dict[str, Any] = {
            "ssl_context": gmail.ssl_context(),
            "timeout": 10,
            "clock": clock,
            "backoff": backoff,
        }
        self.imap = IMAP4(USER, self.provider, gmail.host, gmail.imap_port, **common)
        self.pop = POP3(USER, self.provider, gmail.host, gmail.pop_port, **common)
        self.smtp = SMTP(USER, self.provider, gmail.host, gmail.smtp_port, **common)
        self.selected: str | None = None
        self._serial = 0
        # The ledger: what the library reported.
        self.sent: dict[str, str] = {}  # Message-ID -> DONE / NOT_DONE / UNKNOWN
        self.resend: list[str] = []  # not sent, or found unsent when settled
        self.outside: set[str] = set()  # delivered by gmail.deliver
        self.appended: dict[str, str] = {}
        self.reappend: list[str] = []
        self.seen: dict[str, int] = {}  # Message-ID -> INBOX UID, by the reader
        self.last_uid = 0
        self.flagged: set[str] = set()  # UID STORE +FLAGS reported OK
        self.archived: set[str] = set()  # UID MOVE to Archive reported OK
        self.maybe_archived: set[str] = set()  # UID MOVE cut off after sending
        self.pop_seen: dict[bytes, str] = {}  # UIDL -> Message-ID, as RETR gave it
        self.pop_deleted: set[str] = set()  # QUIT answered +OK with these marked
        self.pop_maybe_deleted: set[str] = set()  # QUIT unconfirmed

    # -- the oracle -------------------------------------------------------------------

    def count(self, mailbox: str, msgid: str) -> int:
        return sum(
            message_id(raw) == msgid for raw in self.gmail.messages(USER, mailbox)
        )

    def counts(self, mailbox: str) -> Counter[str | None]:
        return Counter(message_id(raw) for raw in self.gmail.messages(USER, mailbox))

    def msgid_of_uidl(self, uidl: bytes) -> str | None:
        """The Message-ID of the message the fake's POP names ``GmailId<hex>``."""
        status = self.gmail.backend.store.status(USER, ALL_MAIL)
        for snapshot in status.messages:
            if f"GmailId{snapshot.gm_msgid:x}".encode() == uidl:
                return message_id(snapshot.raw)
        return None

    # -- helpers ---------------------------------------------------------------

    def new_msgid(self, kind: str) -> str:
        self._serial += 1
        return f"<soak-{self.log.seed}-{kind}-{self._serial}@example.com>"

    def now(self) -> datetime:
        return self.clock()

    def select(self, mailbox: str, *, readonly: bool = False) -> None:
        """SELECT (or EXAMINE) ``mailbox`` unless it is selected already."""
        if self.selected == mailbox and self.imap.state == "SELECTED":
            return
        self.selected = None
        quoted = f'"{mailbox}"' if " " in mailbox else mailbox
        typ, data = self.imap.select(quoted, readonly=readonly)
        assert typ == "OK", f"SELECT {mailbox}: {typ} {data!r}\n{self.log.tail()}"
        self.selected = mailbox

    def imap_count(self, mailbox: str, msgid: str) -> int:
        """How many messages with ``msgid`` IMAP finds in ``mailbox``."""
        self.select(mailbox, readonly=True)
        typ, data = self.imap.uid("SEARCH", f'HEADER Message-ID "{msgid}"')
        assert typ == "OK", f"UID SEARCH: {typ} {data!r}\n{self.log.tail()}"
        return len(data[0].split())

    # -- SMTP --------------------------------------------------------------------------

    def send(self, msgid: str | None = None) -> None:
        """Send a message to the user; note whether the library says it went."""
        msgid = msgid or self.new_msgid("sent")
        raw = make_message(msgid, USER, f"sent {msgid}")
        try:
            refused = self.smtp.sendmail(USER, [USER], raw)
        except DeliveryUnknown:
            self.sent[msgid] = UNKNOWN
            self.log(f"send {msgid}: DeliveryUnknown")
            assert self.count(SENT, msgid) <= 1, self.log.tail()
            return
        except ConnectionLost as exc:
            self.log(f"send {msgid}: ConnectionLost ({exc.outcome_unknown})")
            assert not exc.outcome_unknown, self.log.tail()
            self.sent[msgid] = NOT_DONE
            self.resend.append(msgid)
            assert self.count(SENT, msgid) == 0, f"reported unsent\n{self.log.tail()}"
            return
        assert refused == {}, self.log.tail()
        self.sent[msgid] = DONE
        self.log(f"send {msgid}: sent")
        assert self.count(SENT, msgid) == 1, f"sent {msgid}\n{self.log.tail()}"

    def settle_sends(self) -> None:
        """Look in Sent Mail for the messages whose delivery is unknown."""
        for msgid in [m for m, s in self.sent.items() if s == UNKNOWN]:
            found = self.imap_count(SENT, msgid)
            assert found <= 1, f"{msgid} is in Sent Mail {found} times"
            self.log(f"settle send {msgid}: found {found}")
            if found:
                self.sent[msgid] = DONE
            else:
                self.sent[msgid] = NOT_DONE
                self.resend.append(msgid)

    def deliver(self) -> None:
        msgid = self.new_msgid("outside")
        self.gmail.deliver(USER, make_message(msgid, OUTSIDER, f"news {msgid}"))
        self.outside.add(msgid)
        self.log(f"deliver {msgid}")

    # -- IMAP -------------------------------------------------------------------------

    def read(self, between: Callable[[], None] | None = None) -> int:
        """Read new INBOX mail by UID, as a program that remembers the last UID."""
        self.select(INBOX)
        typ, data = self.imap.uid("SEARCH", f"UID {self.last_uid + 1}:*")
        assert typ == "OK", f"UID SEARCH: {typ} {data!r}\n{self.log.tail()}"
        found = [int(u) for u in data[0].split()]
        assert len(found) == len(set(found)), f"SEARCH repeated a UID: {found}"
        new = sorted(u for u in found if u > self.last_uid)
        if not new:
            return 0
        if between is not None:
            between()
        typ, data = self.imap.uid(
            "FETCH",
            ",".join(map(str, new)),
            "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
        )
        assert typ == "OK", f"UID FETCH: {typ} {data!r}\n{self.log.tail()}"
        got: dict[int, str] = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            match = _FETCH_UID.search(item[0])
            assert match is not None, f"FETCH item without UID: {item!r}"
            uid = int(match.group(1))
            if uid not in new:
                continue  # an unsolicited FETCH (flags), not part of this read
            assert uid not in got, f"one read returned UID {uid} twice"
            msgid = message_id(item[1])
            assert msgid is not None, f"UID {uid} has no Message-ID"
            got[uid] = msgid
        # POP deletes only what this reader has seen: nothing new can vanish.
        assert sorted(got) == new, f"asked for {new}, got {sorted(got)}"
        for uid, msgid in got.items():
            assert msgid not in self.seen, (
                f"{msgid} read twice (UIDs {self.seen[msgid]} and {uid})\n"
                + self.log.tail()
            )
            self.seen[msgid] = uid
        self.last_uid = max(new)
        self.log(f"read {len(new)} new, last UID {self.last_uid}")
        return len(new)

    def append(self, msgid: str | None = None) -> None:
        msgid = msgid or self.new_msgid("appended")
        raw = make_message(msgid, USER, f"note {msgid}")
        try:
            typ, data = self.imap.append(LABEL, None, None, raw)
        except ConnectionLost as exc:
            self.log(f"append {msgid}: ConnectionLost ({exc.outcome_unknown})")
            self.selected = None
            if exc.outcome_unknown:
                self.appended[msgid] = UNKNOWN
                assert self.count(LABEL, msgid) <= 1, self.log.tail()
            else:
                self.appended[msgid] = NOT_DONE
                self.reappend.append(msgid)
                assert self.count(LABEL, msgid) == 0, self.log.tail()
            return
        assert typ == "OK", f"APPEND: {typ} {data!r}\n{self.log.tail()}"
        self.appended[msgid] = DONE
        self.log(f"append {msgid}: OK")
        assert self.count(LABEL, msgid) == 1, self.log.tail()

    def settle_appends(self) -> None:
        for msgid in [m for m, s in self.appended.items() if s == UNKNOWN]:
            found = self.imap_count(LABEL, msgid)
            assert found <= 1, f"{msgid} is in {LABEL} {found} times"
            self.log(f"settle append {msgid}: found {found}")
            if found:
                self.appended[msgid] = DONE
            else:
                self.appended[msgid] = NOT_DONE
                self.reappend.append(msgid)

    def flag(self) -> None:
        if not self.seen:
            return
        msgid = self.rng.choice(sorted(self.seen))
        self.select(INBOX)
        uid = self.seen[msgid]
        typ, data = self.imap.uid("STORE", str(uid), "+FLAGS", r"(\Flagged)")
        assert typ == "OK", f"UID STORE: {typ} {data!r}\n{self.log.tail()}"
        self.flagged.add(msgid)
        self.log(f"flag {msgid} (UID {uid})")

    def left_inbox(self) -> set[str]:
        """What the program moved out of INBOX, or may have (unknown outcomes)."""
        return (
            self.pop_deleted
            | self.pop_maybe_deleted
            | self.archived
            | self.maybe_archived
        )

    def archive(self) -> None:
        """Move a message the reader has seen out of INBOX (UID MOVE, RFC 6851)."""
        candidates = sorted(set(self.seen) - self.left_inbox())
        if not candidates:
            return
        msgid = self.rng.choice(candidates)
        self.select(INBOX)
        uid = self.seen[msgid]
        try:
            typ, data = self.imap.uid("MOVE", str(uid), ARCHIVE)
        except ConnectionLost as exc:
            self.log(f"archive {msgid}: ConnectionLost ({exc.outcome_unknown})")
            self.selected = None
            inbox, archive = self.count(INBOX, msgid), self.count(ARCHIVE, msgid)
            if exc.outcome_unknown:
                self.maybe_archived.add(msgid)
                assert (inbox, archive) in ((1, 0), (0, 1)), self.log.tail()
            else:
                assert (inbox, archive) == (1, 0), self.log.tail()
            return
        assert typ == "OK", f"UID MOVE: {typ} {data!r}\n{self.log.tail()}"
        self.archived.add(msgid)
        self.log(f"archive {msgid} (UID {uid})")
        assert self.count(INBOX, msgid) == 0, self.log.tail()
        assert self.count(ARCHIVE, msgid) == 1, self.log.tail()

    # -- POP ---------------------------------------------------------------------------

    def pop_cycle(
        self,
        between: Callable[[], None] | None,
        *,
        quit: bool,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """UIDL, RETR what is new, DELE some of what the reader has seen, QUIT.

        ``meanwhile`` runs after UIDL (another client changing the mailbox,
        say), ``between`` after the DELEs and before QUIT.
        """
        marked: list[str] = []
        try:
            _, lines, _ = self.pop.uidl()
            listing = [line.split() for line in lines]
            uids = [uid for _, uid in listing]
            assert len(uids) == len(set(uids)), f"UIDL repeated a UID: {lines}"
            if meanwhile is not None:
                meanwhile()
            for number, uid in listing:
                if uid in self.pop_seen:
                    continue
                _, body, _ = self.pop.retr(int(number))
                msgid = message_id(b"\r\n".join(body))
                expected = self.msgid_of_uidl(uid)
                assert msgid == expected, (
                    f"RETR {number.decode()} gave {msgid}, UIDL {uid!r} is {expected}"
                    f"\n{self.log.tail()}"
                )
                assert msgid is not None
                self.pop_seen[uid] = msgid
            delete = self.rng.random() < 0.6
            doomed = [
                (number, self.pop_seen[uid])
                for number, uid in listing
                if delete
                and self.pop_seen.get(uid) in self.seen
                and self.rng.random() < 0.6
            ]
            for number, msgid in doomed:
                marked.append(msgid)
                self.pop.dele(int(number))
            if between is not None and marked:
                between()
            if quit or marked:
                resp = self.pop.quit()
                self.log(f"pop: QUIT {resp!r} with {len(marked)} marked")
                self.pop_deleted.update(marked)
                for msgid in marked:
                    assert self.count(INBOX, msgid) == 0, (
                        f"QUIT +OK but {msgid} is still in INBOX\n{self.log.tail()}"
                    )
            else:
                self.log(f"pop: read {len(listing)} listed, session kept")
        except ConnectionLost as exc:
            self.log(f"pop: ConnectionLost ({exc.outcome_unknown}) marked {marked}")
            inbox = self.counts(INBOX)
            if exc.outcome_unknown:
                # QUIT went out unanswered: all of the marks applied, or none.
                gone = [m for m in marked if inbox[m] == 0]
                assert gone in ([], marked), f"QUIT applied half: {gone}"
                self.pop_maybe_deleted.update(gone)
            else:
                moved = self.archived | self.maybe_archived  # by another client
                for msgid in set(marked) - moved:
                    assert inbox[msgid] == 1, (
                        f"deletion of {msgid} reported not applied, but it was\n"
                        + self.log.tail()
                    )
