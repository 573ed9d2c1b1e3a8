"""Token-provider contract, backoff, session deadlines and the error tree."""

from __future__ import annotations

import functools
import pickle
from datetime import UTC, datetime, timedelta

import pytest

from gmail_xoauth2 import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionLost,
    DeliveryUnknown,
    InsecureTokenFile,
    StaticTokenProvider,
    Timeout,
    TokenError,
    TokenProvider,
    TokenRevokedError,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._constants import IMAP_SESSION_LIMIT
from gmail_xoauth2._session import SessionDeadline
from gmail_xoauth2._tokens import as_token_provider, token_expiry
from gmail_xoauth2.testing.clock import ManualClock

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_static_provider_hides_its_token() -> None:
    provider = StaticTokenProvider("ya29.secret", expiry=T0)
    assert provider.token() == "ya29.secret"
    assert provider.token(force_refresh=True) == "ya29.secret"
    assert provider.expiry == T0
    assert "ya29.secret" not in repr(provider)
    assert isinstance(provider, TokenProvider)


def test_static_provider_rejects_naive_expiry_and_empty_token() -> None:
    with pytest.raises(ConfigurationError):
        StaticTokenProvider("t", expiry=datetime(2026, 1, 1))
    with pytest.raises(ConfigurationError):
        StaticTokenProvider("")


def test_callable_is_called_for_every_token() -> None:
    tokens = iter(["one", "two"])
    provider = as_token_provider(lambda: next(tokens))
    assert provider.token() == "one"
    assert provider.token(force_refresh=True) == "two"
    assert token_expiry(provider) is None


def test_callable_failures_are_token_errors() -> None:
    def broken() -> str:
        raise RuntimeError("ya29.leaked?")

    with pytest.raises(TokenError) as info:
        as_token_provider(broken).token()
    assert "ya29" not in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(TokenError):
        as_token_provider(lambda: None).token()  # type: ignore[arg-type,return-value]


def test_callable_arguments_stay_out_of_errors_and_repr() -> None:
    # A partial's repr shows its arguments, which may be credentials.
    def fetch(refresh_token: str) -> str:
        raise RuntimeError("token endpoint down")

    provider = as_token_provider(functools.partial(fetch, "1//refresh-secret"))
    with pytest.raises(TokenError) as info:
        provider.token()
    assert "refresh-secret" not in str(info.value)
    assert "refresh-secret" not in repr(provider)
    empty = as_token_provider(functools.partial(lambda secret: "", "1//other-secret"))
    with pytest.raises(TokenError) as info:
        empty.token()
    assert "other-secret" not in str(info.value)


def test_not_a_provider() -> None:
    with pytest.raises(ConfigurationError):
        as_token_provider(42)  # type: ignore[arg-type]


def test_naive_expiry_from_google_auth_is_read_as_utc() -> None:
    class Naive:
        expiry = datetime(2026, 11, 27, 12, 0)

        def token(self, *, force_refresh: bool = False) -> str:
            return "t"

    assert token_expiry(Naive()) == T0


def test_backoff_is_bounded_jittered_and_never_sleeps_for_real() -> None:
    slept: list[float] = []
    backoff = Backoff(
        base=1.0, cap=5.0, attempts=4, sleep=slept.append, rand=lambda: 0.5
    )
    assert list(backoff.delays()) == [0.5, 1.0, 2.0, 2.5]
    assert slept == [0.5, 1.0, 2.0, 2.5]


def test_deadline_follows_token_expiry_minus_margin() -> None:
    clock = ManualClock(T0)
    deadline = SessionDeadline(clock=clock, margin=timedelta(seconds=60))
    deadline.start(StaticTokenProvider("t", expiry=T0 + timedelta(hours=1)))
    assert deadline.deadline == T0 + timedelta(minutes=59)
    assert not deadline.due()
    clock.advance(timedelta(minutes=58, seconds=59))
    assert not deadline.due()
    clock.advance(1)
    assert deadline.due()


def test_deadline_takes_the_session_limit_when_earlier() -> None:
    clock = ManualClock(T0)
    deadline = SessionDeadline(clock=clock, session_limit=IMAP_SESSION_LIMIT)
    deadline.start(as_token_provider(lambda: "t"))
    assert deadline.deadline == T0 + IMAP_SESSION_LIMIT
    unlimited = SessionDeadline(clock=clock)
    unlimited.start(as_token_provider(lambda: "t"))
    assert unlimited.deadline is None
    assert not unlimited.due()


def test_manual_clock_notifies_and_refuses_to_go_back() -> None:
    clock = ManualClock(T0)
    seen: list[datetime] = []
    clock.on_advance(seen.append)
    clock.advance(timedelta(hours=1))
    assert seen == [T0 + timedelta(hours=1)]
    with pytest.raises(ValueError):
        clock.advance(-1)


@pytest.mark.parametrize(
    "exc",
    [
        TokenError("refresh failed", retryable=True),
        TokenRevokedError(),
        AuthenticationFailed(
            "rejected",
            protocol="imap",
            mechanism="XOAUTH2",
            status="400",
            scope="https://mail.google.com/",
            server_text="NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
        ),
        ConnectionLost("gone", outcome_unknown=True),
        DeliveryUnknown("after the dot"),
        Timeout("no answer", outcome_unknown=True),
        InsecureTokenFile("/tmp/token.json"),
    ],
)
def test_errors_pickle_with_their_fields(exc: Exception) -> None:
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is type(exc)
    assert str(clone) == str(exc)
    assert clone.__dict__ == exc.__dict__


def test_revoked_message_gives_the_testing_mode_advice() -> None:
    text = str(TokenRevokedError())
    assert "invalid_grant" in text
    assert "7 days" in text
    assert "Testing" in text
    assert "gmail-xoauth2 authorize" in text


def test_builtin_mixins() -> None:
    assert issubclass(ConnectionLost, ConnectionError)
    assert issubclass(InsecureTokenFile, PermissionError)
    assert "chmod 600 /x/t.json" in str(InsecureTokenFile("/x/t.json"))
    assert DeliveryUnknown("x").outcome_unknown
