"""Three simulated days of IMAP, POP and SMTP against the fake Gmail, in seconds.

The library's promise (docs/reconnection.rst): a program that reads and sends
Gmail keeps working for days unattended, never losing or duplicating mail,
while Gmail ends sessions every hour, drops connections and throttles, and
the token endpoint fails now and then. A seeded schedule drives one user's
IMAP4, POP3 and SMTP, sharing one GoogleTokenProvider, through clock jumps and
injected faults; the fake's store is the oracle the library's reports are
checked against, every step and at the end.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from _soak_world import (
    ALL_MAIL,
    ARCHIVE,
    DONE,
    INBOX,
    LABEL,
    SENT,
    UNKNOWN,
    USER,
    Log,
    World,
)

from gmail_xoauth2 import ConnectionLost
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

SEEDS = (7, 1871, 20240229)
START = datetime(2024, 3, 4, 6, 0, tzinfo=UTC)
DURATION = timedelta(days=3)
MAX_STEPS = 400
CHECK_EVERY = 25
TOKEN_LIFETIME = timedelta(seconds=3599)  # what the fake Google grants
REFRESH_MARGIN = timedelta(minutes=5)  # GoogleTokenProvider's default

# Gmail's own lines for a server that gives up on the session.
IMAP_BYE = "* BYE System Error"
SMTP_THROTTLED = "421 4.7.0 Try again later, closing connection."
SMTP_IDLE = "451 4.4.2 Timeout - closing connection."
POP_TEMP = "-ERR [SYS/TEMP] System error, please try again later."

# Per protocol: the commands a fault may hit (the session's own included) and
# the replies that end a session there.
WIRE_FAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "imap": (
        (
            *("UID SEARCH", "UID FETCH", "UID STORE", "APPEND", "SELECT"),
            *("EXAMINE", "AUTHENTICATE", "GREETING", "*"),
        ),
        (IMAP_BYE,),
    ),
    "smtp": (
        ("MAIL", "RCPT", "DATA", "EHLO", "AUTH", "GREETING", "*"),
        (SMTP_THROTTLED, SMTP_IDLE),
    ),
    "pop": (
        ("UIDL", "RETR", "DELE", "QUIT", "AUTH", "GREETING", "*"),
        (POP_TEMP,),
    ),
}

OPERATIONS: tuple[str, ...] = ("send", "deliver", "read", "pop", "append", "flag")
OPERATIONS += ("archive", "settle", "resend")
OPERATION_WEIGHTS = (16, 10, 20, 14, 10, 8, 5, 6, 4)


@dataclass
class Tally:
    """What was injected, to bound what the library may spend on it."""

    wire: int = 0  # command-level faults (each count)
    sessions_ended: int = 0
    expiries: int = 0
    token_failures: int = 0
    last_token_injection: int = -1  # request count when the last 503s were armed
    needless_refreshes: int = 0


class Soak:
    """The schedule: clock jumps, operations, and faults between and inside them."""

    def __init__(self, world: World, rng: random.Random, log: Log) -> None:
        self.world = world
        self.gmail = world.gmail
        self.rng = rng
        self.log = log
        self.tally = Tally()
        self.hours: set[int] = set()
        self.needless: list[str] = []

    # -- faults ----------------------------------------------------------------------

    def fault(self, near: str | None = None) -> None:
        """Inject one fault, chosen at random (on protocol ``near``, mostly)."""
        rng, gmail = self.rng, self.gmail
        kind = rng.choices(
            ("wire", "end_sessions", "expire", "google"), weights=(6, 2, 1, 1)
        )[0]
        if kind == "wire":
            protocol = near if near and rng.random() < 0.7 else None
            protocol = protocol or rng.choice(sorted(WIRE_FAULTS))
            commands, lines = WIRE_FAULTS[protocol]
            command = rng.choice(commands)
            action = rng.choice(("drop_before", "drop_after", "reply"))
            if protocol == "pop" and action == "reply" and command in ("QUIT", "*"):
                # -ERR to QUIT is the server's verdict (poplib.error_proto), not
                # a lost session: a real answer, outside this soak.
                action = "drop_before"
            line = rng.choice(lines) if action == "reply" else None
            count = rng.choices((1, 2), weights=(4, 1))[0]
            gmail.fail_next(protocol, command, action, line=line, count=count)  # type: ignore[arg-type]
            self.tally.wire += count
            self.log(f"fault {protocol} {command} {action} x{count} {line or ''}")
        elif kind == "end_sessions":
            protocol = near or rng.choice((None, "imap", "pop", "smtp"))
            ended = gmail.end_sessions(USER, protocol)
            self.tally.sessions_ended += 1
            self.log(f"fault end_sessions({protocol}): {ended}")
        elif kind == "expire":
            gmail.expire_tokens(USER)
            self.tally.expiries += 1
            self.expired_since_refresh = True
            self.log("fault expire_tokens")
        else:
            requests = self.refresh_requests()
            if requests <= self.tally.last_token_injection:
                return  # the last ones may still be queued: keep within the retries
            count = rng.randint(1, 2)
            gmail.google.fail_next(503, count=count)
            self.tally.token_failures += count
            self.tally.last_token_injection = requests
            self.log(f"fault token endpoint 503 x{count}")

    def mid_fault(self, near: str | None = None) -> None:
        """A fault inside an operation: between its commands."""
        if self.rng.random() < 0.3:
            minutes = self.rng.choice((2, 30, 59, 61, 75))
            self.world.clock.advance(timedelta(minutes=minutes))
            self.log(f"mid-operation: clock +{minutes} min")
        else:
            self.fault(near)

    def another_client(self) -> None:
        """Inside a POP cycle: IMAP moves mail away, and the POP session ends."""
        self.log("mid-operation: another client archives, POP session ends")
        for _ in range(self.rng.randint(1, 3)):
            self.world.archive()
        self.gmail.end_sessions(USER, "pop")
        self.tally.sessions_ended += 1

    def refresh_requests(self) -> int:
        return self.gmail.google.request_count("/token", grant_type="refresh_token")

    # -- the schedule ----------------------------------------------------------------

    def advance(self) -> None:
        minutes = self.rng.choices(
            (
                self.rng.uniform(0.5, 15),
                self.rng.uniform(15, 45),
                self.rng.uniform(45, 95),
            ),
            weights=(70, 24, 6),
        )[0]
        self.world.clock.advance(timedelta(minutes=minutes))

    def operation(self) -> None:
        world, rng = self.world, self.rng
        mid: Callable[[], None] | None = None
        op = rng.choices(OPERATIONS, weights=OPERATION_WEIGHTS)[0]
        if rng.random() < 0.15:
            near = {"read": "imap", "pop": "pop"}.get(op)
            mid = functools.partial(self.mid_fault, near)
        self.log(f"op {op}{' with a mid-operation fault' if mid else ''}")
        if op == "send":
            world.send()
        elif op == "deliver":
            world.deliver()
        elif op == "read":
            world.read(mid)
        elif op == "pop":
            meanwhile = self.another_client if rng.random() < 0.1 else None
            world.pop_cycle(mid, quit=rng.random() < 0.6, meanwhile=meanwhile)
        elif op == "append":
            world.append()
        elif op == "flag":
            world.flag()
        elif op == "archive":
            world.archive()
        elif op == "settle":
            world.settle_sends()
            world.settle_appends()
        elif world.resend:
            world.send(world.resend.pop(0))
        elif world.reappend:
            world.append(world.reappend.pop(0))

    def step(self) -> None:
        world = self.world
        self.advance()
        if self.rng.random() < 0.35:
            self.fault()
        expiry_before, now = world.provider.expiry, world.clock()
        self.hours.add(int((now - START).total_seconds() // 3600))
        try:
            self.operation()
        except ConnectionLost as exc:
            world.selected = None
            self.log(f"ConnectionLost (unknown={exc.outcome_unknown}): {exc}")
        # At the end of the step: a mid-operation fault may have moved the clock.
        self.check_refresh(expiry_before, world.clock())

    def check_refresh(self, before: datetime | None, at: datetime) -> None:
        """A token is refreshed only when needed: near its expiry, or rejected."""
        after = self.world.provider.expiry
        if after == before or before is None:
            return
        injected, self.expired_since_refresh = self.expired_since_refresh, False
        if not injected and before - at > REFRESH_MARGIN + timedelta(seconds=1):
            self.tally.needless_refreshes += 1
            self.log(f"needless refresh: the token had {before - at} left")
            self.needless.append(self.log.lines[-1])

    expired_since_refresh = False

    def run(self) -> None:
        end = START + DURATION
        while self.world.clock() < end:
            self.log.step += 1
            assert self.log.step <= MAX_STEPS, "the schedule did not reach its end"
            self.step()
            if self.log.step % CHECK_EVERY == 0:
                check(self.world, self.log, final=False)
        self.finish()

    def finish(self) -> None:
        """Settle every unknown, retry what was not done, read to the end."""
        world = self.world
        self.log.step += 1
        self.log("finish: no more faults")
        for _ in range(3):
            world.settle_sends()
            world.settle_appends()
            while world.resend:
                world.send(world.resend.pop(0))
            while world.reappend:
                world.append(world.reappend.pop(0))
        assert UNKNOWN not in world.sent.values(), self.log.tail()
        assert UNKNOWN not in world.appended.values(), self.log.tail()
        while world.read():
            pass


def check(world: World, log: Log, *, final: bool) -> None:
    """The invariants; ``final`` once everything has been settled."""
    inbox, sent, label = world.counts(INBOX), world.counts(SENT), world.counts(LABEL)
    all_mail, archive = world.counts(ALL_MAIL), world.counts(ARCHIVE)
    deleted = world.left_inbox()
    where = log.tail()
    # Never two copies of anything, whatever the library reported.
    boxes = ((inbox, INBOX), (sent, SENT), (label, LABEL), (archive, ARCHIVE))
    for counter, name in boxes:
        twice = {m: n for m, n in counter.items() if n > 1}
        assert not twice, f"duplicated in {name}: {twice}\n{where}"
    twice = {m: n for m, n in all_mail.items() if n > 1}
    assert not twice, f"duplicated in All Mail: {twice}\n{where}"
    for msgid, status in world.sent.items():
        if status == DONE:
            assert sent[msgid] == 1, f"sent {msgid} is not in Sent Mail\n{where}"
            assert all_mail[msgid] == 1, f"sent {msgid} is not in All Mail\n{where}"
            if msgid not in deleted:
                assert inbox[msgid] == 1, f"sent {msgid} is not in INBOX\n{where}"
    for msgid in world.outside:
        assert all_mail[msgid] == 1, f"delivered {msgid} lost\n{where}"
        if msgid not in deleted:
            assert inbox[msgid] == 1, f"delivered {msgid} left INBOX\n{where}"
    for msgid, status in world.appended.items():
        if status == DONE:
            assert label[msgid] == 1, f"appended {msgid} is not in {LABEL}\n{where}"
    for msgid in world.pop_deleted | world.archived:
        assert inbox[msgid] == 0, f"{msgid} left INBOX, yet it is there\n{where}"
        assert all_mail[msgid] == 1, f"{msgid} was lost for good\n{where}"
    for msgid in world.archived:
        assert archive[msgid] == 1, f"archived {msgid} is not in {ARCHIVE}\n{where}"
    for msgid in world.flagged - deleted:
        flags = [
            m.flags
            for m in world.gmail.backend.store.status(USER, INBOX).messages
            if world.seen.get(msgid) == m.uid
        ]
        assert flags == [] or "\\Flagged" in flags[0], f"{msgid} lost its flag"
    if not final:
        return
    delivered = {m for m, s in world.sent.items() if s == DONE} | world.outside
    missed = delivered - set(world.seen)
    assert not missed, f"the reader never saw {sorted(missed)}\n{where}"
    assert not set(world.seen) - delivered, f"the reader saw mail never sent\n{where}"
    assert all(s == DONE for s in world.sent.values()), where
    assert all(s == DONE for s in world.appended.values()), where


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        fake.backend.store.create(USER, LABEL)
        fake.backend.store.create(USER, ARCHIVE)
        yield fake


@pytest.mark.parametrize("seed", SEEDS)
def test_three_days_unattended(gmail: FakeGmail, clock: ManualClock, seed: int) -> None:
    rng = random.Random(seed)
    log = Log(seed)
    world = World(gmail, clock, rng, log)
    soak = Soak(world, rng, log)
    soak.run()
    check(world, log, final=True)
    tally = soak.tally
    where = log.tail()

    # Work was done: mail went both ways, and sessions were really replaced.
    assert len(world.seen) >= 50, where
    assert world.imap.reconnects >= 48, where

    # Token refreshes: one per token lifetime actually needed, plus one per
    # injected expiry; never while the token still had time left.
    assert tally.needless_refreshes == 0, soak.needless
    successful = soak.refresh_requests() - tally.token_failures
    lifetimes = math.ceil(DURATION / (TOKEN_LIFETIME - REFRESH_MARGIN))
    assert successful <= len(soak.hours) + tally.expiries + 2, (successful, where)
    assert successful <= lifetimes + tally.expiries + 2, (successful, where)

    # Backoff: waits only after an injected failure, each within the cap.
    assert len(world.token_sleeps) <= tally.token_failures, where
    assert all(0 <= s <= 30 for s in world.client_sleeps + world.token_sleeps)
    assert len(world.client_sleeps) <= tally.wire + tally.sessions_ended, where

    world.imap.logout()
    world.pop.quit()
    world.smtp.quit()
