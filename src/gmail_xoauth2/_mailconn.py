"""Plumbing shared by the protocol wrappers: SASL strings, liveness, reconnects."""

from __future__ import annotations

import base64
import logging
import select
import socket
import ssl
from collections.abc import Callable

from . import sasl
from ._backoff import Backoff
from ._reconnect import Attempts
from ._redact import get_logger, remember
from ._tokens import TokenProvider
from .errors import (
    AuthenticationFailed,
    ChallengeDecodeError,
    Timeout,
)

__all__ = [
    "Dead",
    "decode_challenge",
    "initial_response",
    "login",
    "peer_closed",
    "reconnect",
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
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


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
    """Open a connection and log in; a rejected token is refreshed once.

    The second attempt runs on the same connection when the server kept it
    open, else on a new one. A second rejection is raised: a token just
    refreshed and still refused will not be accepted by trying again.

    Raises:
        AuthenticationFailed: the refreshed token was rejected too.
    """
    open_connection()
    try:
        authenticate(tokens.token())
        return
    except AuthenticationFailed as exc:
        logger.debug(
            "%s rejected the token (status %s); refreshing it and trying once more",
            where,
            exc.status,
        )
    token = tokens.token(force_refresh=True)
    if peer_closed():
        abandon()
        open_connection()
    try:
        authenticate(token)
    except Dead:
        # The server closed the connection after the first rejection.
        abandon()
        open_connection()
        authenticate(token)


def reconnect(
    connect: Callable[[], None],
    abandon: Callable[[], None],
    backoff: Backoff,
    *,
    where: str,
    logger: logging.Logger = _log,
) -> None:
    """Call ``connect`` until it succeeds, backing off while the server is away.

    A rejected token or an insecure server is raised at once; too many
    connections too, unless ``backoff.too_many_connections`` says to wait it
    out; an unreachable or refusing server is tried again as ``backoff``
    allows. Every wait is logged once, at WARNING.

    Raises:
        ConnectionLost: the backoff gave up on an unavailable server.
        TooManyConnections: Gmail refused another connection for the user.
    """
    attempts = Attempts(backoff, where, transient=(Dead, Timeout), logger=logger)
    while True:
        try:
            connect()
            return
        except BaseException as exc:
            abandon()
            if not isinstance(exc, Exception):
                raise
            backoff.sleep(attempts.failed(exc))
