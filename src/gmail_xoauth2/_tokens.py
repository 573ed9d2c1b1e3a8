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
        self._name = getattr(func, "__qualname__", None) or type(func).__qualname__

    @property
    def expiry(self) -> datetime | None:
        return None

    def token(self, *, force_refresh: bool = False) -> str:
        try:
            value = self._func()
        except Exception as exc:
            raise TokenError(
                f"token callable {self._name} raised {type(exc).__name__}",
                retryable=False,
            ) from exc
        if not isinstance(value, str) or not value:
            raise TokenError(
                f"token callable {self._name} returned "
                f"{type(value).__name__}, not a non-empty str"
            )
        return value

    def __repr__(self) -> str:
        return f"_CallableTokenProvider({self._name})"


def as_token_provider(source: TokenSource) -> TokenProvider:
    """Return ``source`` as a :class:`TokenProvider`.

    Raises:
        ConfigurationError: ``source`` is neither a provider nor a callable.
    """
    if isinstance(source, TokenProvider):
        return source
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
