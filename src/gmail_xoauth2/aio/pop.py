"""POP3 for asyncio with OAuth 2.0 that reconnects when a session or token expires."""

from __future__ import annotations

import asyncio
import poplib
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

from .._backoff import Backoff
from .._constants import GMAIL_POP_HOST, POP_SESSION_LIMIT
from .._limits import DEFAULT_LIMITS, Limits
from .._mailconn import (
    MECHANISMS,
    Dead,
    initial_response,
    login_async,
    reconnect_async,
)
from .._pop_errors import leaving_pop3
from .._pop_policy import REPEATABLE, Boundary, Rules
from .._pop_reader import scan_listing, unique_id
from .._pop_sasl import exchange
from .._pop_wire import Capabilities, LongResp, refused_greeting
from .._redact import get_logger
from .._session import SessionDeadline
from .._tokens import Clock
from ..errors import (
    ConfigurationError,
    ConnectionLost,
    ProtocolError,
    Timeout,
)
from ._pop_wire import Wire
from ._tokens import AsyncTokens, AsyncTokenSource, as_async_tokens

__all__ = ["POP3"]

_log = get_logger("gmail_xoauth2.pop")

_T = TypeVar("_T")


class POP3:
    """The asyncio twin of :class:`gmail_xoauth2.POP3`: same arguments, same rules.

    Creating one does no I/O: ``await pop.connect()`` or ``async with pop:``
    connects (TLS always verified; with ``starttls=True`` plain text, then
    STLS, and no token ever sent in clear) and logs in with XOAUTH2 or
    OAUTHBEARER, answering Gmail's error challenge and refreshing a rejected
    token once. Commands are coroutines named as in :mod:`poplib` and return
    the same shapes (``await pop.stat()``, ``await pop.retr(1)``...).

    The guarantees are the sync class's, decided by the same code
    (:mod:`gmail_xoauth2._pop_policy`): an expiring session is replaced
    before a command (never while deletions are pending); reads that find the
    connection dead reconnect (with ``backoff``) and run once more, after
    checking that the message numbers still name the same messages; DELE
    marks lost with a session raise :class:`ConnectionLost`, and
    :meth:`quit` reports success only on the server's ``+OK``. Every reply is
    bounded by ``limits``; the errors are the sync class's POP classes
    (:class:`POPTimeout`, :class:`POPConnectionLost`...), each a
    :class:`poplib.error_proto` too, and hold no secret.

    Args:
        user: the Gmail address.
        tokens: a token source: a provider with ``token_async()`` or
            ``token()``, or a callable (``async def`` too) returning a token.
        host: the server.
        port: the port (995: implicit TLS).
        starttls: connect in plain text and upgrade with STLS (RFC 2595).
        ssl_context: TLS settings; by default :func:`ssl.create_default_context`.
        timeout: how long to wait for the server, in seconds.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        reconnect: replace dead or expiring connections transparently.
        clock: the time source for the proactive reconnect (tests inject one).
        backoff: the delays between reconnect attempts (awaited, not slept).
        limits: bounds on what the server may send; see :class:`Limits`.
    """

    def __init__(
        self,
        user: str,
        tokens: AsyncTokenSource | AsyncTokens,
        host: str = GMAIL_POP_HOST,
        port: int = poplib.POP3_SSL_PORT,
        *,
        starttls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 60.0,
        mechanism: str = "XOAUTH2",
        reconnect: bool = True,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        limits: Limits | None = None,
    ) -> None:
        mechanism = mechanism.upper()
        if mechanism not in MECHANISMS:
            raise ConfigurationError(
                f"mechanism must be 'XOAUTH2' or 'OAUTHBEARER', not {mechanism!r}"
            )
        self.host = host
        self.port = port
        self._user = user
        self._tokens = as_async_tokens(tokens)
        self._starttls = starttls
        self._context = ssl_context or ssl.create_default_context()
        self._timeout = timeout
        self._mechanism = mechanism
        self._deadline = SessionDeadline(clock=clock, session_limit=POP_SESSION_LIMIT)
        self._backoff = backoff or Backoff()
        self._limits = limits or DEFAULT_LIMITS
        self._where = f"the POP3 server {host}:{port}"
        self._rules = Rules(reconnect=reconnect, user=user, logger=_log)
        self._maildrop = self._rules.maildrop
        self._conn: Wire | None = None
        self._welcome = b""
        self._two_line = False

    @property
    def limits(self) -> Limits:
        """The bounds on what the server may send on this connection."""
        return self._limits

    @property
    def connected(self) -> bool:
        """True while a connection is open (it may have been closed by the server)."""
        return self._conn is not None and self._conn.stream is not None

    def getwelcome(self) -> bytes:
        """The server's greeting on the current (or last) connection."""
        return self._welcome

    # -- connection and authentication -------------------------------------------

    async def connect(self) -> None:
        """Connect and log in, refreshing the token once if it is rejected.

        Raises:
            AuthenticationFailed: the token was rejected, also after one refresh.
            TooManyConnections: Gmail refused another connection for this user.
            InsecureConnection: STLS missing or broken, or the certificate
                did not verify; no token was sent.
            ProtocolError: the server sent something that is not POP3.
            ConnectionLost: the server could not be reached.
            Timeout: the server did not answer in time.
            TokenError: the token source failed; no token was sent.
        """
        with leaving_pop3():
            try:
                await self._connect()
            except Dead as exc:
                self._abandon()
                raise ConnectionLost(
                    f"could not connect to {self._where}: {exc}"
                ) from exc
            except BaseException:
                self._abandon()
                raise

    async def _open(self) -> Wire:
        """Connect, read the greeting and start TLS; no token is sent."""
        _log.debug("connecting to POP3 server %s:%s", self.host, self.port)
        self._abandon()
        conn = self._conn = Wire(
            host=self.host,
            port=self.port,
            limits=self._limits,
            timeout=self._timeout,
            context=self._context,
            where=self._where,
        )
        try:
            await conn.open(starttls=self._starttls)
        except poplib.error_proto as exc:
            # A -ERR greeting: the server is there but will not serve us now.
            conn.abandon()
            raise refused_greeting(exc) from exc
        self._welcome = conn.welcome
        return conn

    async def _connect(self) -> None:
        """Open a connection and log in (the shared plan: a rejected token is
        refreshed once, on the same connection if the server kept it open)."""

        async def authenticate(token: str) -> None:
            conn = self._conn
            if conn is None:
                raise Dead("the connection was closed")
            await self._authenticate(conn, token)

        await login_async(
            lambda force: self._tokens.token(force_refresh=force),
            open_connection=self._open,
            authenticate=authenticate,
            peer_closed=self._peer_closed,
            abandon=self._abandon,
            where=self._where,
            logger=_log,
        )
        self._deadline.start(expiry=self._tokens.expiry)
        self._rules.logged_in()

    async def _authenticate(self, conn: Wire, token: str) -> None:
        """Run the SASL exchange of :mod:`.._pop_sasl` on the open connection."""
        initial = initial_response(
            self._mechanism, self._user, token, host=self.host, port=self.port
        )
        conn.secrets = [initial, token.encode()]
        steps = exchange(
            mechanism=self._mechanism,
            initial=initial,
            user=self._user,
            host=self.host,
            port=self.port,
            two_line=self._two_line,
        )
        with conn.translated("AUTH"):
            self._two_line = await conn.authenticate(steps)
        _log.debug("POP3 %s login accepted for %s", self._mechanism, self._user)

    async def _peer_closed(self) -> bool:
        """True when the server hung up or spoke unasked (costs no round trip).

        The stream learns of what arrived only when the loop runs its I/O
        callbacks: two turns of the loop (one polls the sockets, the next runs
        what they delivered) let a goodbye that already arrived be seen, as
        the sync class's select() sees it.
        """
        conn = self._conn
        if conn is None or conn.peer_closed():
            return True
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return conn.peer_closed()

    def _abandon(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.abandon()

    # -- reconnecting --------------------------------------------------------------

    async def _reestablish(self, reason: str) -> None:
        """Replace the connection, backing off (awaited) while the server is away."""
        # Routine (Gmail ends every OAuth session within the hour): DEBUG.
        _log.debug(
            "reconnecting to POP3 server %s:%s for %s: %s",
            self.host,
            self.port,
            self._user,
            reason,
        )
        self._abandon()
        await reconnect_async(
            self._connect, self._abandon, self._backoff, where=self._where, logger=_log
        )
        # A new session numbers the messages afresh (RFC 1939 section 5).
        self._rules.replaced()

    async def _retire(self) -> None:
        """End a healthy session politely before replacing it (nothing pending)."""
        conn = self._conn
        if conn is not None:
            try:
                with conn.translated("QUIT"):
                    await conn.command("QUIT")
            except (Dead, Timeout, ProtocolError, poplib.error_proto):
                pass
        self._abandon()

    async def _before_command(self) -> None:
        """At a command boundary: replace a dead or expiring connection."""
        closed = await self._peer_closed()
        if closed:
            self._abandon()
        due = self._deadline.due() if self._rules.reconnect else False
        boundary = self._rules.at_boundary(closed=closed, due=due)
        if boundary is Boundary.RETIRE:
            await self._retire()
        if boundary is not Boundary.KEEP:
            await self._reestablish(self._rules.reason)

    def _live(self) -> Wire:
        conn = self._conn
        if conn is None:
            raise Dead("not connected")
        return conn

    async def _run(
        self,
        what: str,
        call: Callable[[Wire], Awaitable[_T]],
        *,
        number: Any = None,
    ) -> _T:
        """Run a command, once more on a new connection if this one died.

        Whether it may run again is the verb's (``REPEATABLE``). Every
        exception leaving a command passes here, scrubbed, as its POP class.
        """
        with leaving_pop3():
            repeat = what.split(" ", 1)[0] in REPEATABLE
            await self._before_command()
            try:
                conn = self._live()
                with conn.translated(what):
                    await self._check_numbering(conn, number)
                    return await call(conn)
            except Dead as exc:
                self._rules.died(what, exc, repeat=repeat)
                await self._reestablish(self._rules.reason)
            try:
                conn = self._live()
                with conn.translated(what):
                    await self._check_numbering(conn, number)
                    return await call(conn)
            except Dead as exc:
                raise self._rules.died_again(what, exc) from exc

    async def _check_numbering(self, conn: Wire, which: Any) -> None:
        check = self._maildrop.to_check(which)
        if check is None:
            return
        now: bytes | tuple[int, int]
        if check.uid is None:
            now = await self._stat_command(conn)
        else:
            try:
                now = (await self._uidl_one(conn, check.number))[1].partition(b" ")[2]
            except poplib.error_proto:
                now = b""
        self._maildrop.checked(check, now)

    # -- commands ----------------------------------------------------------------
    # Replies are checked inside the command, so a malformed one closes the
    # connection (a ProtocolError) instead of being half-used.

    async def _stat_command(self, conn: Wire) -> tuple[int, int]:
        return scan_listing(await conn.command("STAT"), self._where, "STAT")

    async def _uidl_one(self, conn: Wire, which: Any) -> tuple[bytes, bytes]:
        resp = await conn.command(f"UIDL {which}")
        return resp, unique_id(resp, self._where)

    async def _list_one(self, conn: Wire, which: Any) -> bytes:
        resp = await conn.command(f"LIST {which}")
        scan_listing(resp, self._where, "LIST")
        return resp

    async def stat(self) -> tuple[int, int]:
        """STAT: ``(messages, octets)``; repeated once on a new connection."""
        result = await self._run("STAT", self._stat_command)
        self._maildrop.saw_stat(result)
        return result

    @overload
    async def list(self) -> LongResp: ...
    @overload
    async def list(self, which: Any) -> bytes: ...
    async def list(self, which: Any | None = None) -> LongResp | bytes:
        """LIST (all: poplib's triple; one: its ``+OK n size`` line)."""
        if which is not None:
            return await self._run(
                f"LIST {which}", lambda c: self._list_one(c, which), number=which
            )
        result = await self._run("LIST", lambda c: c.long_command("LIST"))
        self._maildrop.saw_listing(result[1])
        return result

    async def retr(self, which: Any) -> LongResp:
        """RETR: ``(resp, lines, octets)``; repeated once on a new connection."""
        return await self._run(
            f"RETR {which}", lambda c: c.long_command(f"RETR {which}"), number=which
        )

    async def top(self, which: Any, howmuch: int) -> LongResp:
        """TOP: the headers and ``howmuch`` body lines; repeated once if needed."""
        return await self._run(
            f"TOP {which}",
            lambda c: c.long_command(f"TOP {which} {howmuch}"),
            number=which,
        )

    @overload
    async def uidl(self) -> LongResp: ...
    @overload
    async def uidl(self, which: Any) -> bytes: ...
    async def uidl(self, which: Any | None = None) -> LongResp | bytes:
        """UIDL (all: poplib's triple; one: its ``+OK n uid`` line)."""
        if which is None:
            full = await self._run("UIDL", lambda c: c.long_command("UIDL"))
            self._maildrop.saw_uids(full[1], complete=True)
            return full
        one, uid = await self._run(
            f"UIDL {which}", lambda c: self._uidl_one(c, which), number=which
        )
        self._maildrop.saw_uids([uid], complete=False)
        return one

    async def noop(self) -> bytes:
        """NOOP, repeated once on a new connection if this one died."""
        return await self._run("NOOP", lambda c: c.command("NOOP"))

    async def capa(self) -> Capabilities:
        """CAPA as poplib's dict, repeated once on a new connection."""
        return await self._run("CAPA", lambda c: c.capa())

    async def stls(self) -> bytes:
        """Always refused: the connection is already encrypted (as poplib says)."""
        raise poplib.error_proto("-ERR TLS session already established")

    # Login commands (connect() has logged in) and UTF8: never repeated.

    async def user(self, user: str) -> bytes:
        """USER (RFC 1939); not needed: connect() logged in."""
        return await self._run("USER", lambda c: c.command(f"USER {user}"))

    async def pass_(self, pswd: str) -> bytes:
        """PASS (RFC 1939); not needed: connect() logged in."""
        return await self._run("PASS", lambda c: c.command(f"PASS {pswd}"))

    async def utf8(self) -> bytes:
        """UTF8 (RFC 6856), never repeated on a new connection."""
        return await self._run("UTF8", lambda c: c.command("UTF8"))

    async def dele(self, which: Any) -> bytes:
        """Mark a message for deletion; it is deleted when quit() succeeds.

        Raises:
            ConnectionLost: the connection died; earlier marks were not applied.
        """
        resp = await self._run(
            f"DELE {which}", lambda c: c.command(f"DELE {which}"), number=which
        )
        self._rules.marked(which)
        return resp

    async def rset(self) -> bytes:
        """Unmark every pending deletion (a lost session unmarks them too)."""
        self._maildrop.pending.clear()
        return await self._run("RSET", lambda c: c.command("RSET"))

    async def quit(self) -> bytes:
        """Commit pending deletions and close; success only on the server's +OK.

        Raises:
            ConnectionLost: deletions were pending and the server did not
                confirm QUIT (``outcome_unknown`` is True when QUIT was sent).
            poplib.error_proto: the server answered QUIT with ``-ERR``.
        """
        with leaving_pop3():
            return await self._quit()

    async def _quit(self) -> bytes:
        pending = bool(self._maildrop.pending)
        conn = self._conn
        if conn is None or await self._peer_closed():
            self._abandon()
            return self._rules.quit_on_closed()
        try:
            with conn.translated("QUIT"):
                resp = await conn.command("QUIT")
        except poplib.error_proto:
            # The server's verdict on the deletions, and the end of the session
            # all the same (RFC 1939 section 6): nothing is pending any more.
            self._maildrop.forget()
            self._abandon()
            raise
        except (Dead, Timeout, ProtocolError) as exc:
            # No +OK (nothing, or no POP3 answer): the marks may or may not
            # have been applied.
            self._abandon()
            return self._rules.quit_unanswered(pending, exc)
        self._maildrop.forget()
        self._abandon()
        return resp

    def close(self) -> None:
        """Close the connection without QUIT; pending deletions are not applied."""
        self._abandon()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc_type is None:
            await self.quit()
            return False
        if self._rules.block_failed() or not issubclass(exc_type, Exception):
            # A failed block's deletions are not applied; a cancelled task
            # does not wait for a goodbye.
            self._abandon()
            return False
        try:
            await self.quit()
        except (ConnectionLost, poplib.error_proto):
            self._abandon()
        return False

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return (
            f"<gmail_xoauth2.aio.POP3 {self._user} at {self.host}:{self.port} "
            f"{self._mechanism} {state}>"
        )
