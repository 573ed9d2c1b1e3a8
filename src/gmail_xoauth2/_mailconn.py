"""Plumbing shared by the protocol wrappers: SASL strings, liveness, reconnects."""

from __future__ import annotations

import base64
import logging
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Generator
from typing import NamedTuple

from . import sasl
from ._backoff import Backoff, sleep_async
from ._reconnect import Attempts
from ._redact import get_logger, remember
from ._tokens import TokenProvider
from .errors import (
    AuthenticationFailed,
    ChallengeDecodeError,
    ConnectionLost,
    Timeout,
)

__all__ = [
    "Dead",
    "decode_challenge",
    "initial_response",
    "login",
    "login_async",
    "login_plan",
    "peer_closed",
    "readable",
    "reconnect",
    "reconnect_async",
    "too_many_message",
]

_log = get_logger("gmail_xoauth2")  # shared by POP and SMTP, which pass their own

# What answers an error challenge: the empty response (XOAUTH2, Google's "OAuth
# 2.0 Mechanism" page) or ^A (OAUTHBEARER, RFC 7628 section 3.2.3), base64.
ABORT = {"XOAUTH2": b"", "OAUTHBEARER": base64.b64encode(sasl.OAUTHBEARER_ABORT)}
MECHANISMS = tuple(ABORT)


class Dead(Exception):
    """Internal: the connection died, or the server ended the session."""


def initial_response(
    mechanism: str, user: str, token: str, *, host: str, port: int
) -> bytes:
    """The base64 initial client response for ``mechanism``.

    The token and the response are registered with the scrubber first, so no
    exception, log record or debug line can show them, even when a server
    quotes them back.
    """
    if mechanism == "XOAUTH2":
        raw = sasl.xoauth2_response(user, token)
    else:
        raw = sasl.oauthbearer_response(user, token, host=host, port=port)
    encoded = base64.b64encode(raw)
    remember(token, encoded, raw)
    return encoded


def decode_challenge(data: bytes) -> sasl.ErrorChallenge | None:
    """Gmail's error challenge decoded, or None when it is not base64 JSON."""
    try:
        return sasl.decode_error_challenge(data)
    except ChallengeDecodeError:
        _log.debug("error challenge is not base64 JSON; answering it anyway")
        return None


def too_many_message(protocol: str, text: str) -> str:
    """What to tell a user whom Gmail refused another connection."""
    return (
        f"the {protocol} server refused another connection ({text}): Gmail "
        "allows about 15 simultaneous connections per user, shared by every mail "
        "client of the account; close some and try again"
    )


def readable(socks: list[socket.socket], wait: float | None) -> set[int]:
    """The descriptors of ``socks`` readable within ``wait`` seconds (None: forever).

    poll() where the platform has it: select() refuses descriptors from 1,024
    up, which a process holding hundreds of connections reaches.
    """
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        ready, _, _ = select.select(socks, [], [], wait)
        return {sock.fileno() for sock in ready}
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN)
    timeout_ms = None if wait is None else max(0, int(wait * 1000 + 0.999))
    return {fd for fd, _ in poller.poll(timeout_ms)}


def peer_closed(sock: socket.socket | None) -> bool:
    """True when the server sent something unasked or hung up.

    Between commands neither POP3 nor SMTP servers speak, except to say goodbye
    (Gmail's ``451 4.4.2 Timeout - closing connection.``), so readable data
    means the connection is over. Costs no round trip.
    """
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        ready = readable([sock], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


# The steps of a login plan: the driver performs each and sends back its result.
OPEN = "open a connection"
PEER_CLOSED = "did the server close it?"
ABANDON = "abandon the connection"


class Token(NamedTuple):
    """Step: get a token (a fresh one with ``force_refresh``)."""

    force_refresh: bool


class Authenticate(NamedTuple):
    """Step: run the SASL exchange with ``token`` (raises AuthenticationFailed)."""

    token: str


Step = str | Token | Authenticate


def login_plan(where: str, logger: logging.Logger) -> Generator[Step, object, None]:
    """How POP3 and SMTP log in, free of I/O; a rejected token is refreshed once.

    The second attempt runs on the same connection when the server kept it
    open, else on a new one. A second rejection is raised: a token just
    refreshed and still refused will not be accepted by trying again.
    Driven by :func:`login` (sync) and :func:`login_async`.
    """
    yield OPEN
    token = yield Token(force_refresh=False)
    try:
        yield Authenticate(str(token))
        return
    except AuthenticationFailed as exc:
        logger.debug(
            "%s rejected the token (status %s); refreshing it and trying once more",
            where,
            exc.status,
        )
    token = yield Token(force_refresh=True)
    if (yield PEER_CLOSED):
        yield ABANDON
        yield OPEN
    try:
        yield Authenticate(str(token))
    except Dead:
        # The server closed the connection after the first rejection.
        yield ABANDON
        yield OPEN
        yield Authenticate(str(token))


def login(
    tokens: TokenProvider,
    *,
    open_connection: Callable[[], None],
    authenticate: Callable[[str], None],
    peer_closed: Callable[[], bool],
    abandon: Callable[[], None],
    where: str,
    logger: logging.Logger = _log,
) -> None:
    """Run :func:`login_plan` with blocking I/O.

    Raises:
        AuthenticationFailed: the refreshed token was rejected too.
    """

    def perform(step: Step) -> object:
        if isinstance(step, Token):
            return tokens.token(force_refresh=step.force_refresh)
        if isinstance(step, Authenticate):
            authenticate(step.token)
        elif step == OPEN:
            open_connection()
        elif step == PEER_CLOSED:
            return peer_closed()
        else:
            abandon()
        return None

    plan = login_plan(where, logger)
    result: object = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(result) if error is None else plan.throw(error)
        except StopIteration:
            return
        finally:
            error = None
        try:
            result = perform(step)
        except BaseException as exc:
            result, error = None, exc


async def login_async(
    token: Callable[[bool], Awaitable[str]],
    *,
    open_connection: Callable[[], Awaitable[object]],
    authenticate: Callable[[str], Awaitable[None]],
    peer_closed: Callable[[], Awaitable[bool]],
    abandon: Callable[[], object],
    where: str,
    logger: logging.Logger = _log,
) -> None:
    """Run :func:`login_plan` on the event loop (the asyncio POP3 and SMTP).

    Raises:
        AuthenticationFailed: the refreshed token was rejected too.
    """

    async def perform(step: Step) -> object:
        if isinstance(step, Token):
            return await token(step.force_refresh)
        if isinstance(step, Authenticate):
            await authenticate(step.token)
        elif step == OPEN:
            await open_connection()
        elif step == PEER_CLOSED:
            return await peer_closed()
        else:
            abandon()
        return None

    plan = login_plan(where, logger)
    result: object = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(result) if error is None else plan.throw(error)
        except StopIteration:
            return
        finally:
            error = None
        try:
            result = await perform(step)
        except BaseException as exc:
            result, error = None, exc


def reconnect(
    connect: Callable[[], None],
    abandon: Callable[[], None],
    backoff: Backoff,
    *,
    where: str,
    logger: logging.Logger = _log,
    lost: Callable[[str], Exception] = ConnectionLost,
) -> None:
    """Call ``connect`` until it succeeds, backing off while the server is away.

    What each failure leads to is :class:`~gmail_xoauth2._reconnect.Attempts`'
    decision: a rejected token or an insecure server is raised at once; too
    many connections too, unless ``backoff.too_many_connections`` says to wait
    it out; an unreachable or refusing server is tried again as ``backoff``
    allows. Every wait is logged once, at WARNING.

    Raises:
        ConnectionLost: the backoff gave up on an unavailable server.
        TooManyConnections: Gmail refused another connection for the user.
    """
    attempts = Attempts(
        backoff, where, transient=(Dead, Timeout), logger=logger, lost=lost
    )
    while True:
        try:
            connect()
            return
        except BaseException as exc:
            abandon()
            if not isinstance(exc, Exception):
                raise
            delay = attempts.failed(exc)
        backoff.sleep(delay)


async def reconnect_async(
    connect: Callable[[], Awaitable[None]],
    abandon: Callable[[], object],
    backoff: Backoff,
    *,
    where: str,
    logger: logging.Logger = _log,
    lost: Callable[[str], Exception] = ConnectionLost,
) -> None:
    """:func:`reconnect` on the event loop: the waits are awaited."""
    attempts = Attempts(
        backoff, where, transient=(Dead, Timeout), logger=logger, lost=lost
    )
    while True:
        try:
            await connect()
            return
        except BaseException as exc:
            abandon()
            if not isinstance(exc, Exception):
                raise
            delay = attempts.failed(exc)
        await sleep_async(backoff, delay)
