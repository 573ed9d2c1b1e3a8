"""The POP3 AUTH exchange (RFC 5034) for XOAUTH2 and OAUTHBEARER over line I/O."""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import sasl
from ._mailconn import ABORT, Dead, decode_challenge, too_many_message
from .errors import AuthenticationFailed, ProtocolError, TooManyConnections

__all__ = ["SESSION_ENDED", "TOO_MANY", "authenticate"]

_log = logging.getLogger(__name__)

# RFC 3206 codes and texts that end the session, not just the command.
SESSION_ENDED = (b"[SYS/TEMP]", b"SESSION EXPIRED", b"SHUTTING DOWN")
# ...and those that refuse the credentials, not the syntax of the command.
_AUTH_REFUSED = (b"[AUTH]", b"CREDENTIALS", b"AUTHENTICATION FAILED")
TOO_MANY = b"TOO MANY SIMULTANEOUS CONNECTIONS"
# RFC 2449/3206 codes that refuse the login for now, whatever the token: the
# server is unavailable, so back off and reconnect instead of refreshing.
_TEMPORARY = (b"[SYS/TEMP]", b"[IN-USE]", b"[LOGIN-DELAY]")


def authenticate(
    *,
    send_command: Callable[[str], None],
    send_line: Callable[[bytes], None],
    read_line: Callable[[], bytes],
    mechanism: str,
    initial: bytes,
    host: str,
    two_line: bool,
) -> bool:
    """Log in with ``AUTH <mechanism>``; return whether to use the two-line form.

    Gmail's form puts the initial response on the AUTH line (one round trip).
    A server that refuses that syntax with ``-ERR`` (not the credentials) gets
    ``AUTH <mechanism>``, a ``+`` and then the response, and keeps getting
    that form.

    Args:
        send_command: sends a command line.
        send_line: sends a raw line (a SASL response).
        read_line: reads one line, without CRLF.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        initial: the base64 initial response.
        host: the server, for messages.
        two_line: this server refused the one-line form before.

    Raises:
        AuthenticationFailed: the token (or the mechanism) was refused.
        TooManyConnections: Gmail refused another connection for this user.
        ProtocolError: the server broke the exchange.
    """
    fail = _Failure(mechanism, host)
    if not two_line:
        send_command(f"AUTH {mechanism} {initial.decode('ascii')}")
        reply = read_line()
        if not (reply.startswith(b"-ERR") and _is_syntax_refusal(reply)):
            _finish(reply, send_line, read_line, mechanism, fail)
            return False
        _log.debug("server refused the one-line AUTH; using the two-line form")
    send_command(f"AUTH {mechanism}")
    reply = read_line()
    if reply.rstrip() != b"+":
        fail(reply, None)
    send_line(initial)
    _finish(read_line(), send_line, read_line, mechanism, fail)
    return True


class _Failure:
    """Raises the right error for a refused exchange."""

    def __init__(self, mechanism: str, host: str) -> None:
        self.mechanism = mechanism
        self.host = host

    def __call__(self, reply: bytes, challenge: sasl.ErrorChallenge | None) -> None:
        text = reply.decode("utf-8", "replace")
        if TOO_MANY in reply.upper():
            raise TooManyConnections(too_many_message("POP3", text))
        if challenge is None and any(code in reply.upper() for code in _TEMPORARY):
            raise Dead(f"the POP3 server {self.host} refused the login for now: {text}")
        status = challenge.status if challenge else None
        raise AuthenticationFailed(
            f"POP3 server {self.host} rejected {self.mechanism}: {text}"
            + (f" (status {status})" if status else ""),
            protocol="pop",
            mechanism=self.mechanism,
            status=status,
            scope=challenge.scope if challenge else None,
            server_text=text,
        )


def _finish(
    reply: bytes,
    send_line: Callable[[bytes], None],
    read_line: Callable[[], bytes],
    mechanism: str,
    fail: _Failure,
) -> None:
    if reply.startswith(b"+OK"):
        return
    challenge: sasl.ErrorChallenge | None = None
    if reply == b"+" or reply.startswith(b"+ "):
        # poplib would take this for +OK: it is Gmail's error challenge, which
        # must be answered (empty line, or ^A for OAUTHBEARER) before the -ERR.
        challenge = decode_challenge(reply[1:])
        send_line(ABORT[mechanism])
        reply = read_line()
        if reply.startswith(b"+OK"):
            return
        if reply.startswith(b"+"):
            raise ProtocolError("POP3 server sent another challenge after an error")
    fail(reply, challenge)


def _is_syntax_refusal(reply: bytes) -> bool:
    """A ``-ERR`` to the one-line AUTH that refuses its syntax, not the token.

    A response code (``-ERR [SYS/PERM] ...``, ``[IN-USE]``, ``[LOGIN-DELAY]``:
    RFC 2449 section 8, RFC 3206) refuses the login itself, never the syntax.
    """
    upper = reply.upper()
    if upper.startswith(b"-ERR ["):
        return False
    return not any(m in upper for m in (*_AUTH_REFUSED, TOO_MANY, *SESSION_ENDED))
