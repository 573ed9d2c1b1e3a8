"""Backoff: the public reconnection policy, and how the connections follow it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gmail_xoauth2 import Backoff, ConfigurationError, TokenError, TooManyConnections
from gmail_xoauth2.imap import IMAP4
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
TOO_MANY = "NO [ALERT] Too many simultaneous connections. (Failure)"


def waits(
    backoff: Backoff, cause: str = "refused", *, too_many: bool = False
) -> list[float]:
    retry = backoff.start("the server")
    out: list[float] = []
    while retry.wait(cause, too_many=too_many):
        out.append(retry.last_delay)
        if len(out) > 1000:
            break
    return out


def test_the_default_gives_up_after_five_waits_of_growing_bounds() -> None:
    slept: list[float] = []
    backoff = Backoff(sleep=slept.append, rand=lambda: 1.0)
    assert waits(backoff) == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff.bounded


def test_full_jitter_draws_below_the_bound_and_none_keeps_it() -> None:
    half = Backoff(attempts=3, sleep=lambda _: None, rand=lambda: 0.5)
    assert waits(half) == [0.25, 0.5, 1.0]
    exact = Backoff(attempts=3, jitter=0.0, sleep=lambda _: None, rand=lambda: 0.0)
    assert waits(exact) == [0.5, 1.0, 2.0]


def test_forever_never_gives_up_and_stays_at_the_cap() -> None:
    backoff = Backoff.forever(sleep=lambda _: None, jitter=0.0)
    assert not backoff.bounded
    seen = waits(backoff)
    assert len(seen) == 1001  # still waiting when the test stopped it
    assert seen[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(seen) == 300.0 and seen[-1] == 300.0


def test_max_elapsed_gives_up_before_waiting_past_it() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    backoff = Backoff(
        attempts=None, max_elapsed=10.0, jitter=0.0, sleep=sleep, clock=lambda: now[0]
    )
    assert waits(backoff) == [0.5, 1.0, 2.0, 4.0]  # 7.5 s; 8 more would pass 10
    assert now[0] == 7.5


def test_too_many_connections_is_waited_out_only_when_asked() -> None:
    assert waits(Backoff(sleep=lambda _: None), too_many=True) == []
    patient = Backoff(
        too_many_connections=600.0, attempts=2, sleep=lambda _: None, rand=lambda: 1.0
    )
    retry = patient.start("imap.gmail.com:993")
    assert retry.wait("too many", too_many=True)
    assert retry.last_delay == 600.0
    # Half jitter at most: the wait is for another client to let go.
    low = Backoff(too_many_connections=600.0, sleep=lambda _: None, rand=lambda: 0.0)
    retry = low.start("imap.gmail.com:993")
    assert retry.wait("too many", too_many=True) and retry.last_delay == 300.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1},
        {"cap": float("nan")},
        {"jitter": 1.5},
        {"attempts": -1},
        {"attempts": 2.5},
        {"max_elapsed": -3},
        {"too_many_connections": True},
    ],
)
def test_nonsense_is_a_configuration_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_every_wait_is_one_warning_naming_what_and_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff = Backoff(attempts=2, sleep=lambda _: None, rand=lambda: 1.0)
    with caplog.at_level(logging.DEBUG):
        waits(backoff, "connection refused")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == [
        "the server unavailable (connection refused); trying again in 0.5 s "
        "(attempt 2 of 3)",
        "the server unavailable (connection refused); trying again in 1.0 s "
        "(attempt 3 of 3)",
    ]


# --- the connections follow the policy ----------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        yield fake


def connect(gmail: FakeGmail, clock: ManualClock, backoff: Backoff) -> IMAP4:
    return IMAP4(
        ALICE,
        gmail.token_provider(ALICE, clock=clock),
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        backoff=backoff,
        timeout=10,
    )


def test_imap_waits_out_too_many_connections_when_the_policy_says_so(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    slept: list[float] = []
    imap = connect(gmail, clock, Backoff.forever(sleep=slept.append))
    imap.select("INBOX")
    gmail.end_sessions(ALICE, "imap")
    gmail.fail_next("imap", "AUTHENTICATE", "reply", line=TOO_MANY, count=2)
    assert imap.noop()[0] == "OK"
    assert len(slept) == 2 and all(300 <= s <= 600 for s in slept)
    assert imap.reconnects == 1
    imap.logout()


def test_imap_raises_too_many_connections_with_the_default_policy(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    slept: list[float] = []
    imap = connect(gmail, clock, Backoff(sleep=slept.append))
    imap.select("INBOX")
    gmail.end_sessions(ALICE, "imap")
    gmail.fail_next("imap", "AUTHENTICATE", "reply", line=TOO_MANY)
    with pytest.raises(TooManyConnections):
        imap.noop()
    assert slept == []
    assert imap.noop()[0] == "OK"  # the next command tries again
    imap.logout()


class FlakyTokens:
    """The fake's provider, failing ``failures`` times once ``broken`` is set."""

    def __init__(self, inner: object, error: Exception, failures: int) -> None:
        self.inner = inner
        self.error = error
        self.failures = failures
        self.broken = False

    def token(self, *, force_refresh: bool = False) -> str:
        if self.broken and self.failures > 0:
            self.failures -= 1
            raise self.error
        return self.inner.token(force_refresh=force_refresh)  # type: ignore[attr-defined, no-any-return]


def flaky_session(
    gmail: FakeGmail, clock: ManualClock, error: Exception, failures: int
) -> tuple[IMAP4, FlakyTokens, list[float]]:
    """A selected IMAP4 whose token source will fail ``failures`` times, then
    its session ended by the server: the next command reconnects."""
    slept: list[float] = []
    tokens = FlakyTokens(gmail.token_provider(ALICE, clock=clock), error, failures)
    imap = IMAP4(
        ALICE,
        tokens,
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        backoff=Backoff.forever(sleep=slept.append),
        timeout=10,
    )
    imap.select("INBOX")
    tokens.broken = True
    gmail.end_sessions(ALICE, "imap")
    return imap, tokens, slept


def test_a_token_source_down_for_now_is_waited_out_on_a_reconnect(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    imap, _, slept = flaky_session(gmail, clock, ConnectionError("vault down"), 3)
    assert imap.noop()[0] == "OK"
    assert len(slept) == 3 and imap.reconnects == 1
    imap.logout()


def test_a_token_source_that_is_broken_is_raised_at_once(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    imap, _, slept = flaky_session(gmail, clock, RuntimeError("bad config"), 1)
    with pytest.raises(TokenError) as caught:
        imap.noop()
    assert not caught.value.retryable and slept == []
    assert imap.noop()[0] == "OK"  # the next command tries again
    imap.logout()
