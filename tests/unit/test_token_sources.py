"""A token source that fails is a TokenError, on IMAP, POP and SMTP alike.

Whatever a token callable or a provider's ``token()`` raises reaches the caller
as :class:`gmail_xoauth2.TokenError`, chained to what was raised, ``retryable``
when that was transient, and never as a network error about the mail server:
at login, and when a session is replaced later.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gmail_xoauth2 import (
    IMAP4,
    POP3,
    SMTP,
    ConfigurationError,
    ConnectionLost,
    TokenError,
    TokenRevokedError,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._tokens import as_token_provider, token_expiry
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
SECRET = "1//refresh-token-in-the-error-text"


class Secrets:
    """A provider object fetching tokens from a "secret manager" that can fail."""

    def __init__(self, gmail: FakeGmail) -> None:
        self.gmail = gmail
        self.failure: Exception | None = None
        self.calls = 0

    def token(self, *, force_refresh: bool = False) -> str:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return self.gmail.mint_token(ALICE)


def failing_function() -> str:
    raise ValueError(f"no token in the vault for {SECRET}")


# The three shapes: (what the source is, what it raises, retryable).
SHAPES = {
    "function": (None, ValueError, False),
    "provider-runtime-error": (RuntimeError(f"bug near {SECRET}"), RuntimeError, False),
    "provider-connection-error": (
        ConnectionError("secret manager down"),
        ConnectionError,
        True,
    ),
}


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail() as fake:
        yield fake


def open_connection(gmail: FakeGmail, protocol: str, tokens: object) -> Any:
    cls: Callable[..., Any]
    cls, port = {
        "imap": (IMAP4, gmail.imap_port),
        "pop": (POP3, gmail.pop_port),
        "smtp": (SMTP, gmail.smtp_port),
    }[protocol]
    return cls(
        ALICE,
        tokens,
        gmail.host,
        port,
        ssl_context=gmail.ssl_context(),
        timeout=10,
        backoff=Backoff(attempts=2, sleep=lambda _: None),
    )


def use(protocol: str, connection: Any) -> object:
    """One ordinary command."""
    if protocol == "imap":
        return connection.noop()
    if protocol == "pop":
        return connection.stat()
    return connection.noop()


def check(error: TokenError, raised: type[Exception], retryable: bool) -> None:
    assert type(error) is TokenError
    assert not isinstance(error, ConnectionLost | OSError)
    assert isinstance(error.__cause__, raised)
    assert error.retryable is retryable
    message = str(error)
    assert raised.__name__ in message
    assert "no access token was obtained" in message
    assert "could not connect" not in message
    assert SECRET not in message  # the cause's text is not quoted


@pytest.mark.parametrize("protocol", ["imap", "pop", "smtp"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_failing_token_source_at_login_is_a_token_error(
    gmail: FakeGmail, protocol: str, shape: str
) -> None:
    failure, raised, retryable = SHAPES[shape]
    source: object
    if failure is None:
        source = failing_function
    else:
        source = Secrets(gmail)
        source.failure = failure
    with pytest.raises(TokenError) as info:
        open_connection(gmail, protocol, source)
    check(info.value, raised, retryable)
    where = "failing_function" if failure is None else "Secrets"
    assert where in str(info.value)


@pytest.mark.parametrize("protocol", ["imap", "pop", "smtp"])
@pytest.mark.parametrize(
    "shape", ["provider-runtime-error", "provider-connection-error"]
)
def test_a_failing_token_source_at_a_reconnect_is_a_token_error(
    gmail: FakeGmail, protocol: str, shape: str
) -> None:
    failure, raised, retryable = SHAPES[shape]
    secrets = Secrets(gmail)
    connection = open_connection(gmail, protocol, secrets)
    try:
        use(protocol, connection)
        # Gmail ends the session; the new one needs a token, which fails.
        assert gmail.end_sessions(ALICE, protocol) == 1
        secrets.failure = failure
        with pytest.raises(TokenError) as info:
            use(protocol, connection)
        check(info.value, raised, retryable)
        # The source works again: so does the connection.
        secrets.failure = None
        use(protocol, connection)
    finally:
        connection.close() if protocol != "imap" else connection.logout()


@pytest.mark.parametrize("protocol", ["imap", "pop", "smtp"])
def test_a_token_error_from_a_provider_is_passed_on_as_it_is(
    gmail: FakeGmail, protocol: str
) -> None:
    secrets = Secrets(gmail)
    secrets.failure = TokenRevokedError()
    with pytest.raises(TokenRevokedError) as info:
        open_connection(gmail, protocol, secrets)
    assert info.value is secrets.failure
    assert secrets.calls == 1  # not retried: a revoked grant stays revoked


# --- the adapter itself --------------------------------------------------------


def test_a_retryable_token_error_stays_retryable() -> None:
    down = TokenError("token endpoint answered 503", retryable=True)

    class Provider:
        def token(self, *, force_refresh: bool = False) -> str:
            raise down

    with pytest.raises(TokenError) as info:
        as_token_provider(Provider()).token()
    assert info.value is down and info.value.retryable


def test_a_configuration_error_from_a_provider_is_passed_on() -> None:
    class Provider:
        def token(self, *, force_refresh: bool = False) -> str:
            raise ConfigurationError("token file t.json is missing; authorize")

    with pytest.raises(ConfigurationError, match="authorize"):
        as_token_provider(Provider()).token()


@pytest.mark.parametrize("value", [None, "", b"ya29.bytes", 42])
def test_a_provider_returning_no_token_is_a_token_error(value: object) -> None:
    class Provider:
        def token(self, *, force_refresh: bool = False) -> object:
            return value

    with pytest.raises(TokenError, match=r"Provider returned \w+, not a non-empty str"):
        as_token_provider(Provider()).token()  # type: ignore[arg-type]


def test_the_provider_is_asked_with_force_refresh_and_its_expiry_passed_on() -> None:
    expiry = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    asked: list[bool] = []

    class Provider:
        expiry = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)

        def token(self, *, force_refresh: bool = False) -> str:
            asked.append(force_refresh)
            return "ya29.t"

    guarded = as_token_provider(Provider())
    assert guarded.token(force_refresh=True) == "ya29.t"
    assert guarded.token() == "ya29.t"
    assert asked == [True, False]
    assert token_expiry(guarded) == expiry
    # Wrapped once: a connection wrapping it again keeps the same object.
    assert as_token_provider(guarded) is guarded


def test_a_timeout_of_the_source_is_retryable() -> None:
    def slow() -> str:
        raise TimeoutError("vault did not answer")

    with pytest.raises(TokenError) as info:
        as_token_provider(functools.partial(slow)).token()
    assert info.value.retryable
    assert "partial" in str(info.value)
    assert isinstance(info.value.__cause__, TimeoutError)


def test_no_expiry_when_the_provider_says_nothing_usable() -> None:
    class Provider:
        expiry = "tomorrow"

        def token(self, *, force_refresh: bool = False) -> str:
            return "t"

    assert token_expiry(as_token_provider(Provider())) is None
