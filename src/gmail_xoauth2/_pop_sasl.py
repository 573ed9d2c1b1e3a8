"""The POP3 AUTH exchange (RFC 5034) for XOAUTH2 and OAUTHBEARER, free of I/O."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import NoReturn, TypeAlias

from . import sasl
from ._limits import SASL_ROUNDS
from ._mailconn import ABORT, Dead, decode_challenge, too_many_message
from ._pop_reader import shown
from ._redact import get_logger, scrub
from ._rejection import one_line, rejection_message
from .errors import AuthenticationFailed, ProtocolError, TooManyConnections

__all__ = [
    "READ",
    "SESSION_ENDED",
    "TOO_MANY",
    "Command",
    "Exchange",
    "Line",
    "Read",
    "Step",
    "authenticate",
    "exchange",
]

_log = get_logger("gmail_xoauth2.pop")

# RFC 3206 codes and texts that end the session, not just the command.
SESSION_ENDED = (b"[SYS/TEMP]", b"SESSION EXPIRED", b"SHUTTING DOWN")
# ...and those that refuse the credentials, not the syntax of the command.
_AUTH_REFUSED = (b"[AUTH]", b"CREDENTIALS", b"AUTHENTICATION FAILED")
TOO_MANY = b"TOO MANY SIMULTANEOUS CONNECTIONS"
# RFC 2449/3206 codes that refuse the login for now, whatever the token: the
# server is unavailable, so back off and reconnect instead of refreshing.
_TEMPORARY = (b"[SYS/TEMP]", b"[IN-USE]", b"[LOGIN-DELAY]")


@dataclass(frozen=True, slots=True)
class Command:
    """Send ``text`` as a command line (traced as a command)."""

    text: str


@dataclass(frozen=True, slots=True)
class Line:
    """Send ``data`` as a raw line (a SASL response)."""

    data: bytes


class Read:
    """Read one reply line (without CRLF) and send it into the exchange."""


READ = Read()

Step: TypeAlias = Command | Line | Read
Exchange: TypeAlias = Generator[Step, bytes | None, bool]


def exchange(
    *,
    mechanism: str,
    initial: bytes,
    user: str,
    host: str,
    port: int,
    two_line: bool,
) -> Exchange:
    """Log in with ``AUTH <mechanism>``, free of I/O; return whether to use two lines.

    A generator: it yields what to do next (send a :class:`Command` or a
    :class:`Line`, or :data:`READ` one reply line, sent back in), and returns
    whether the server needs the two-line form. The sync POP3 drives it with
    :func:`authenticate`, the asyncio one with its own loop.

    Gmail's form puts the initial response on the AUTH line (one round trip).
    A server that refuses that syntax with ``-ERR`` (not the credentials) gets
    ``AUTH <mechanism>``, a ``+`` and then the response, and keeps getting
    that form. At most ``SASL_ROUNDS`` continuations are answered.

    Args:
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
        Dead: the server refused the login for now (RFC 3206 codes).
    """
    state = _Exchange(mechanism, user, host, port)
    if not two_line:
        yield Command(f"AUTH {mechanism} {initial.decode('ascii')}")
        reply = yield READ
        assert reply is not None
        if not (reply.startswith(b"-ERR") and _is_syntax_refusal(reply)):
            yield from state.finish(reply)
            return False
        _log.debug("server refused the one-line AUTH; using the two-line form")
    yield Command(f"AUTH {mechanism}")
    reply = yield READ
    assert reply is not None
    if reply.startswith(b"-ERR"):
        state.fail(reply, None)
    if reply.rstrip() != b"+":
        raise state.broken(reply, "instead of '+' to AUTH")
    yield state.answer(initial)
    reply = yield READ
    assert reply is not None
    yield from state.finish(reply)
    return True


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
    """Drive :func:`exchange` over blocking line I/O; return whether to use two lines.

    Args:
        send_command: sends a command line.
        send_line: sends a raw line (a SASL response).
        read_line: reads one reply line, without CRLF.
        mechanism: see :func:`exchange`, as the rest.
        initial: the base64 initial response.
        user: the address logging in, for messages.
        host: the server, for messages.
        port: its port, for messages.
        two_line: this server refused the one-line form before.
    """
    steps = exchange(
        mechanism=mechanism,
        initial=initial,
        user=user,
        host=host,
        port=port,
        two_line=two_line,
    )
    reply: bytes | None = None
    try:
        while True:
            step = steps.send(reply)
            reply = None
            if isinstance(step, Read):
                reply = read_line()
            elif isinstance(step, Command):
                send_command(step.text)
            else:
                send_line(step.data)
    except StopIteration as done:
        return bool(done.value)


class _Exchange:
    """One AUTH exchange: counts the continuations answered, raises the right error."""

    def __init__(self, mechanism: str, user: str, host: str, port: int) -> None:
        self.mechanism = mechanism
        self.user = user
        self.host = host
        self.port = port
        self.rounds = 0

    def answer(self, response: bytes) -> Line:
        """Answer a continuation; asking for more than SASL_ROUNDS is broken."""
        if self.rounds >= SASL_ROUNDS:
            raise ProtocolError(
                f"the POP3 server {self.host} asked for more than {SASL_ROUNDS} "
                f"{self.mechanism} responses in one AUTH exchange; the connection "
                "was closed"
            )
        self.rounds += 1
        return Line(response)

    def finish(self, reply: bytes) -> Generator[Step, bytes | None, None]:
        """Read the exchange to its end from ``reply``: +OK returns, -ERR raises."""
        if reply.startswith(b"+OK"):
            return
        challenge: sasl.ErrorChallenge | None = None
        if _is_continuation(reply):
            # poplib would take this for +OK: it is Gmail's error challenge, which
            # must be answered (empty line, or ^A for OAUTHBEARER) before the -ERR.
            challenge = decode_challenge(reply[1:])
            yield self.answer(ABORT[self.mechanism])
            answered = yield READ
            assert answered is not None
            reply = answered
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
