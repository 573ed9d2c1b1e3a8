"""The POP3 AUTH exchange (RFC 5034) for XOAUTH2 and OAUTHBEARER over line I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from . import sasl
from ._limits import SASL_ROUNDS
from ._mailconn import ABORT, Dead, decode_challenge, too_many_message
from ._pop_reader import shown
from ._redact import get_logger, scrub
from ._rejection import one_line, rejection_message
from .errors import AuthenticationFailed, ProtocolError, TooManyConnections

__all__ = ["SESSION_ENDED", "TOO_MANY", "authenticate"]

_log = get_logger("gmail_xoauth2.pop")

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
    user: str,
    host: str,
    port: int,
    two_line: bool,
) -> bool:
    """Log in with ``AUTH <mechanism>``; return whether to use the two-line form.

    Gmail's form puts the initial response on the AUTH line (one round trip).
    A server that refuses that syntax with ``-ERR`` (not the credentials) gets
    ``AUTH <mechanism>``, a ``+`` and then the response, and keeps getting
    that form. At most ``SASL_ROUNDS`` continuations are answered.

    Args:
        send_command: sends a command line.
        send_line: sends a raw line (a SASL response).
        read_line: reads one reply line, without CRLF.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        initial: the base64 initial response.
        user: the address logging in, for messages.
        host: the server, for messages.
        port: its port, for messages.
        two_line: this server refused the one-line form before.

    Raises:
        AuthenticationFailed: the token (or the mechanism) was refused.
        TooManyConnections: Gmail refused another connection for this user.
        ProtocolError: the server broke the exchange (a reply that is not
            ``+OK``, ``-ERR`` or ``+``, or too many continuations).
    """
    exchange = _Exchange(mechanism, user, host, port, send_line, read_line)
    if not two_line:
        send_command(f"AUTH {mechanism} {initial.decode('ascii')}")
        reply = read_line()
        if not (reply.startswith(b"-ERR") and _is_syntax_refusal(reply)):
            exchange.finish(reply)
            return False
        _log.debug("server refused the one-line AUTH; using the two-line form")
    send_command(f"AUTH {mechanism}")
    reply = read_line()
    if reply.startswith(b"-ERR"):
        exchange.fail(reply, None)
    if reply.rstrip() != b"+":
        raise exchange.broken(reply, "instead of '+' to AUTH")
    exchange.answer(initial)
    exchange.finish(read_line())
    return True


class _Exchange:
    """One AUTH exchange: counts the continuations answered, raises the right error."""

    def __init__(
        self,
        mechanism: str,
        user: str,
        host: str,
        port: int,
        send_line: Callable[[bytes], None],
        read_line: Callable[[], bytes],
    ) -> None:
        self.mechanism = mechanism
        self.user = user
        self.host = host
        self.port = port
        self.send_line = send_line
        self.read_line = read_line
        self.rounds = 0

    def answer(self, response: bytes) -> None:
        """Answer a continuation; asking for more than SASL_ROUNDS is broken."""
        if self.rounds >= SASL_ROUNDS:
            raise ProtocolError(
                f"the POP3 server {self.host} asked for more than {SASL_ROUNDS} "
                f"{self.mechanism} responses in one AUTH exchange; the connection "
                "was closed"
            )
        self.rounds += 1
        self.send_line(response)

    def finish(self, reply: bytes) -> None:
        """Read the exchange to its end from ``reply``: +OK returns, -ERR raises."""
        if reply.startswith(b"+OK"):
            return
        challenge: sasl.ErrorChallenge | None = None
        if _is_continuation(reply):
            # poplib would take this for +OK: it is Gmail's error challenge, which
            # must be answered (empty line, or ^A for OAUTHBEARER) before the -ERR.
            challenge = decode_challenge(reply[1:])
            self.answer(ABORT[self.mechanism])
            reply = self.read_line()
            if reply.startswith(b"+OK"):
                return
            if _is_continuation(reply):
                raise ProtocolError(
                    f"the POP3 server {self.host} sent another challenge after an "
                    "error; the connection was closed"
                )
        if not reply.startswith(b"-ERR"):
            raise self.broken(reply, "to AUTH")
        self.fail(reply, challenge)

    def fail(self, reply: bytes, challenge: sasl.ErrorChallenge | None) -> NoReturn:
        """Raise the error for a refused exchange (``reply`` is a ``-ERR`` line)."""
        text = one_line(scrub(reply.decode("utf-8", "replace")))
        if TOO_MANY in reply.upper():
            raise TooManyConnections(too_many_message("POP3", text))
        if challenge is None and any(code in reply.upper() for code in _TEMPORARY):
            raise Dead(f"the POP3 server {self.host} refused the login for now: {text}")
        status = challenge.status if challenge else None
        scope = challenge.scope if challenge else None
        raise AuthenticationFailed(
            rejection_message(
                protocol="pop",
                server=f"{self.host}:{self.port}",
                user=self.user,
                mechanism=self.mechanism,
                server_text=text,
                status=status,
                scope=scope,
            ),
            protocol="pop",
            mechanism=self.mechanism,
            status=status,
            scope=scope,
            server_text=text,
        )

    def broken(self, reply: bytes, where: str) -> ProtocolError:
        return ProtocolError(
            f"the POP3 server {self.host} answered {shown(reply)} {where}, which is "
            "neither +OK, -ERR nor a '+' continuation; the connection was closed"
        )


def _is_continuation(reply: bytes) -> bool:
    return reply == b"+" or reply.startswith(b"+ ")


def _is_syntax_refusal(reply: bytes) -> bool:
    """A ``-ERR`` to the one-line AUTH that refuses its syntax, not the token.

    A response code (``-ERR [SYS/PERM] ...``, ``[IN-USE]``, ``[LOGIN-DELAY]``:
    RFC 2449 section 8, RFC 3206) refuses the login itself, never the syntax.
    """
    upper = reply.upper()
    if upper.startswith(b"-ERR ["):
        return False
    return not any(m in upper for m in (*_AUTH_REFUSED, TOO_MANY, *SESSION_ENDED))
