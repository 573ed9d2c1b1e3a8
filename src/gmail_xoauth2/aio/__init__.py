"""asyncio twins of IMAP4, POP3 and SMTP, with the same guarantees as the sync classes.

Creating one does no I/O; ``await x.connect()`` or ``async with x:`` connects
and authenticates. Commands are coroutines named as in imaplib and poplib and
return the same shapes, so code ports line by line. ``SMTP`` is an
``aiosmtplib.SMTP`` (extra ``[aio]``). Token sources may be awaited
(``GoogleTokenProvider.token_async()``), plain, or ``async def`` callables.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._tokens import AsyncTokenProvider, AsyncTokenSource
    from .imap import IMAP4
    from .pop import POP3
    from .smtp import SMTP

_LAZY = {
    "AsyncTokenProvider": "._tokens",
    "AsyncTokenSource": "._tokens",
    "IMAP4": ".imap",
    "POP3": ".pop",
    "SMTP": ".smtp",
}

__all__ = ["IMAP4", "POP3", "SMTP", "AsyncTokenProvider", "AsyncTokenSource"]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
