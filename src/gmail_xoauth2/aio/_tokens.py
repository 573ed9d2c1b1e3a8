"""Token sources for asyncio code: awaited, never blocking the event loop.

Accepted wherever the asyncio classes take ``tokens``: a provider with
``token_async()`` (:class:`~gmail_xoauth2.GoogleTokenProvider`), any sync
provider or callable (run in a worker thread), or an ``async def`` callable.
Whatever a source raises becomes a :class:`~gmail_xoauth2.TokenError`, as with
the sync classes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from .._tokens import TokenProvider, _checked, _source_failed, token_expiry
from ..errors import ConfigurationError, TokenError

__all__ = ["AsyncTokenProvider", "AsyncTokenSource", "AsyncTokens", "as_async_tokens"]


@runtime_checkable
class AsyncTokenProvider(Protocol):
    """A provider asyncio code can await: ``await provider.token_async()``."""

    async def token_async(self, *, force_refresh: bool = False) -> str: ...


AsyncTokenSource = (
    AsyncTokenProvider
    | TokenProvider
    | Callable[[], str]
    | Callable[[], Awaitable[str]]
)
"""What the asyncio classes accept as ``tokens``."""


class AsyncTokens:
    """One token source, awaited; its failures are TokenErrors."""

    def __init__(self, source: AsyncTokenSource) -> None:
        self._source = source
        if isinstance(source, AsyncTokenProvider):
            self._what = f"token provider {type(source).__qualname__}"
        elif isinstance(source, TokenProvider):
            self._what = f"token provider {type(source).__qualname__}"
        elif callable(source):
            self._what = f"token callable {getattr(source, '__qualname__', '?')}"
        else:
            raise ConfigurationError(
                "tokens must be a token provider (token() or token_async()) or a "
                f"callable returning a token, not {type(source).__name__}"
            )

    @property
    def expiry(self) -> datetime | None:
        """The source's current expiry, if it tells."""
        source = self._source
        return token_expiry(source) if isinstance(source, TokenProvider) else None

    async def token(self, *, force_refresh: bool = False) -> str:
        """A token; a new one with ``force_refresh`` (the last was rejected)."""
        source = self._source
        try:
            if isinstance(source, AsyncTokenProvider):
                value: object = await source.token_async(force_refresh=force_refresh)
            elif isinstance(source, TokenProvider):
                value = await asyncio.to_thread(
                    source.token, force_refresh=force_refresh
                )
            elif inspect.iscoroutinefunction(source):
                value = await source()
            else:
                value = await asyncio.to_thread(source)
                if inspect.isawaitable(value):
                    value = await value
        except (TokenError, ConfigurationError):
            raise
        except Exception as exc:
            raise _source_failed(self._what, exc) from exc
        return _checked(self._what, value)

    def __repr__(self) -> str:
        return f"AsyncTokens({self._what})"


def as_async_tokens(source: AsyncTokenSource | AsyncTokens) -> AsyncTokens:
    """``source`` as :class:`AsyncTokens` (unchanged if it is one already)."""
    return source if isinstance(source, AsyncTokens) else AsyncTokens(source)
