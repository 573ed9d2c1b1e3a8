"""The errors gmail_xoauth2.POP3 raises: ours, and poplib's too.

Each class is the library's error (``except gmail_xoauth2.Timeout``) and a
:class:`poplib.error_proto`, the one exception poplib has, so code written for
poplib keeps catching what this library raises.

Inside POP3 the plain classes are raised: its code, and poplib's, tell a
``-ERR`` (``poplib.error_proto``) from a broken connection by type. Every
exception leaving POP3 passes :func:`leaving_pop3` once, on its way out.
"""

from __future__ import annotations

import poplib
from collections.abc import Iterator
from contextlib import contextmanager

from ._redact import scrub_exception
from .errors import (
    AuthenticationFailed,
    ConnectionLost,
    Error,
    InsecureConnection,
    LimitExceeded,
    ProtocolError,
    Timeout,
    TooManyConnections,
    recast,
)

__all__ = [
    "POPAuthenticationFailed",
    "POPConnectionLost",
    "POPInsecureConnection",
    "POPLimitExceeded",
    "POPProtocolError",
    "POPTimeout",
    "POPTooManyConnections",
    "as_pop_error",
    "leaving_pop3",
]


class POPAuthenticationFailed(AuthenticationFailed, poplib.error_proto):
    """The POP3 server rejected the token."""


class POPTooManyConnections(TooManyConnections, poplib.error_proto):
    """Gmail refused another POP3 connection for this user."""


class POPInsecureConnection(InsecureConnection, poplib.error_proto):
    """STLS was missing, refused or broken, or the certificate did not verify;
    no token was sent."""


class POPProtocolError(ProtocolError, poplib.error_proto):
    """The POP3 server sent something that is not POP3; the connection was closed."""


class POPLimitExceeded(LimitExceeded, POPProtocolError):
    """A POP3 reply passed one of the Limits; the connection was closed."""


class POPConnectionLost(ConnectionLost, poplib.error_proto):
    """The POP3 connection died (``outcome_unknown`` for an unanswered QUIT)."""


class POPTimeout(Timeout, poplib.error_proto):
    """The POP3 server did not answer in time; the connection was closed."""


_POP_CLASSES: dict[type[BaseException], type[Error]] = {
    AuthenticationFailed: POPAuthenticationFailed,
    TooManyConnections: POPTooManyConnections,
    InsecureConnection: POPInsecureConnection,
    ProtocolError: POPProtocolError,
    LimitExceeded: POPLimitExceeded,
    ConnectionLost: POPConnectionLost,
    Timeout: POPTimeout,
}


def as_pop_error(exc: BaseException) -> BaseException:
    """``exc`` as POP3 raises it: one of the classes above, else itself.

    A copy (see :func:`~gmail_xoauth2.errors.recast`); raise it ``from`` its
    ``__cause__``. Token and configuration errors stay as they are.
    """
    cls = _POP_CLASSES.get(type(exc))
    if cls is None or not isinstance(exc, Error):
        return exc
    return recast(exc, cls)


@contextmanager
def leaving_pop3() -> Iterator[None]:
    """Around POP3's public methods: what leaves is scrubbed, as its POP class."""
    try:
        yield
    except BaseException as exc:
        scrub_exception(exc)
        error = as_pop_error(exc)
        if error is exc:
            raise
        raise error from error.__cause__
