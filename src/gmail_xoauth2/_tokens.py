"""The token-provider contract that protocol code depends on; no Google imports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from .errors import ConfigurationError, TokenError

__all__ = [
    "Clock",
    "ExpiringTokenProvider",
    "StaticTokenProvider",
    "TokenProvider",
    "TokenSource",
    "as_token_provider",
    "token_expiry",
    "utcnow",
]

Clock = Callable[[], datetime]
"""A callable returning the current time as an aware UTC datetime."""


def utcnow() -> datetime:
    """The real clock: the current time, aware, in UTC."""
    return datetime.now(UTC)


@runtime_checkable
class TokenProvider(Protocol):
    """Anything that hands out OAuth 2.0 access tokens.

    ``token()`` returns a token valid for a while yet; ``token(force_refresh=True)``
    returns a new one (after the server rejected the last).
    """

    def token(self, *, force_refresh: bool = False) -> str: ...


@runtime_checkable
class ExpiringTokenProvider(TokenProvider, Protocol):
    """A token provider that also knows when its current token expires."""

    @property
    def expiry(self) -> datetime | None: ...


TokenSource = TokenProvider | Callable[[], str]
"""What protocol classes accept: a provider or a zero-argument callable."""


class StaticTokenProvider:
    """A provider for a token obtained elsewhere; it cannot refresh.

    Args:
        token: the access token.
        expiry: when it expires (aware datetime), if known; connections use it
            to reconnect before the server ends the session.
    """

    def __init__(self, token: str, *, expiry: datetime | None = None) -> None:
        if not isinstance(token, str) or not token:
            raise ConfigurationError("StaticTokenProvider needs a non-empty token")
        if expiry is not None and expiry.tzinfo is None:
            raise ConfigurationError("expiry must be an aware datetime (use UTC)")
        self._token = token
        self._expiry = expiry

    @property
    def expiry(self) -> datetime | None:
        """When the token expires, or None when unknown."""
        return self._expiry

    def token(self, *, force_refresh: bool = False) -> str:
        """Return the token; ``force_refresh`` cannot give a new one here."""
        return self._token

    def __repr__(self) -> str:
        return f"StaticTokenProvider(token=<hidden>, expiry={self._expiry!r})"


class _CallableTokenProvider:
    """Adapts a zero-argument callable; it is called again for every token."""

    def __init__(self, func: Callable[[], str]) -> None:
        self._func = func
        # The name only: a repr (a functools.partial's) may show credentials.
        name = getattr(func, "__qualname__", None) or type(func).__qualname__
        self._source = f"token callable {name}"

    @property
    def expiry(self) -> datetime | None:
        return None

    def token(self, *, force_refresh: bool = False) -> str:
        try:
            value = self._func()
        except (TokenError, ConfigurationError):
            raise  # ours already: a TokenError keeps its retryable
        except Exception as exc:
            raise _source_failed(self._source, exc) from exc
        return _checked(self._source, value)

    def __repr__(self) -> str:
        return f"_CallableTokenProvider({self._source})"


class _GuardedTokenProvider:
    """Wraps a provider object so that whatever its ``token()`` raises is a TokenError.

    A token source's failure is not the mail server's: a provider that raises
    ``ConnectionError("secret manager down")`` must not be reported as a lost
    connection to the server, nor a ``RuntimeError`` escape raw.
    """

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider
        self._source = f"token provider {type(provider).__qualname__}"

    @property
    def expiry(self) -> datetime | None:
        expiry = getattr(self._provider, "expiry", None)
        return expiry if isinstance(expiry, datetime) else None

    def token(self, *, force_refresh: bool = False) -> str:
        try:
            value = self._provider.token(force_refresh=force_refresh)
        except (TokenError, ConfigurationError):
            raise  # ours already: a TokenError keeps its retryable
        except Exception as exc:
            raise _source_failed(self._source, exc) from exc
        return _checked(self._source, value)

    def __repr__(self) -> str:
        return f"_GuardedTokenProvider({self._source})"


def _source_failed(source: str, exc: Exception) -> TokenError:
    """The TokenError for a token source that raised ``exc``.

    ``retryable`` when the cause is transient (an OSError: a refused or reset
    connection, a timeout). A TokenError and a ConfigurationError (a token
    file to fix, say) are ours already: the callers pass them on as they are.
    """
    # The type only: the text of a source's error may quote a credential.
    what = (
        f"{source} raised {type(exc).__name__}, so no access token was obtained "
        "and no login was attempted"
    )
    if isinstance(exc, OSError):
        return TokenError(
            f"{what}; it looks transient (a network failure or a timeout on the "
            "way to the token source): try again later",
            retryable=True,
        )
    return TokenError(f"{what}; fix the token source (its error is the cause)")


def _checked(source: str, value: object) -> str:
    """``value`` if it is a token (a non-empty str); else a TokenError."""
    if not isinstance(value, str) or not value:
        raise TokenError(
            f"{source} returned {type(value).__name__}, not a non-empty str, so "
            "no login was attempted"
        )
    return value


def as_token_provider(source: TokenSource) -> TokenProvider:
    """Return ``source`` as a :class:`TokenProvider` whose every failure is a
    :class:`TokenError`.

    A provider's ``token()`` or a callable that raises gives a TokenError
    chained to what it raised (``retryable`` when that was an OSError, or a
    retryable TokenError); one that returns anything but a non-empty str
    gives a TokenError too. The provider's ``expiry`` is passed on.

    Raises:
        ConfigurationError: ``source`` is neither a provider nor a callable.
    """
    if isinstance(source, _GuardedTokenProvider | _CallableTokenProvider):
        return source
    if isinstance(source, TokenProvider):
        return _GuardedTokenProvider(source)
    if callable(source):
        return _CallableTokenProvider(source)
    raise ConfigurationError(
        "tokens must be a token provider (with a token() method) or a "
        f"zero-argument callable returning a token, not {type(source).__name__}"
    )


def token_expiry(provider: TokenProvider) -> datetime | None:
    """The provider's current expiry (aware), or None if it does not say."""
    expiry = getattr(provider, "expiry", None)
    if not isinstance(expiry, datetime):
        return None
    if expiry.tzinfo is None:
        # google-auth keeps naive UTC datetimes.
        expiry = expiry.replace(tzinfo=UTC)
    return expiry
