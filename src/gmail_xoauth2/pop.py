"""POP3 over TLS with OAuth 2.0 that reconnects when a session or token expires."""

from __future__ import annotations

import poplib
import socket
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

from ._backoff import Backoff
from ._constants import GMAIL_POP_HOST, POP_SESSION_LIMIT
from ._limits import DEFAULT_LIMITS, Limits
from ._mailconn import (
    MECHANISMS,
    Dead,
    initial_response,
    login,
    peer_closed,
    reconnect,
)
from ._pop_errors import leaving_pop3
from ._pop_policy import REPEATABLE, Boundary, Rules
from ._pop_reader import ReplyReader, scan_listing, unique_id
from ._pop_sasl import authenticate
from ._pop_wire import Capabilities, LongResp, PopWire, refused_greeting
from ._redact import get_logger
from ._session import SessionDeadline
from ._tokens import Clock, TokenSource, as_token_provider
from .errors import (
    ConfigurationError,
    ConnectionLost,
    ProtocolError,
    Timeout,
)

__all__ = ["POP3"]

_log = get_logger(__name__)

_T = TypeVar("_T")


class POP3(PopWire, poplib.POP3):
    """A :class:`poplib.POP3` that logs in with OAuth 2.0 and survives session ends.

    The constructor connects (implicit TLS, or plain + STLS with
    ``starttls=True``) and authenticates with Gmail's one-line
    ``AUTH XOAUTH2 <initial response>``, falling back to the two-line form when
    a server refuses the one-line syntax. Every :class:`poplib.POP3` method
    keeps working; ``-ERR`` replies still raise :class:`poplib.error_proto`.

    Whatever a server sends, every method ends in bounded time and memory
    with one of the exceptions below: each line, multi-line reply (RETR, TOP,
    LIST, UIDL, CAPA) and reply time is bounded by ``limits``, and a reply that
    is not POP3 closes the connection (the next command opens a new one).

    Sessions end (Gmail's OAuth sessions last as long as the access token), so:

    * before each command, when the token is about to expire, the connection is
      replaced with a new one and a fresh token (never while deletions are
      pending: see below);
    * reads (STAT, LIST, UIDL, RETR, TOP, NOOP, CAPA) that find the connection
      dead reconnect and run once more, after checking that the message numbers
      still name the same messages;
    * deletions: POP applies DELE marks only when the server answers QUIT with
      ``+OK`` (RFC 1939 section 6). While marks are pending, the connection is
      never replaced on purpose; if it dies, :class:`ConnectionLost` says the
      deletions were *not* applied. :meth:`quit` reports success only after the
      server's ``+OK``.

    Args:
        user: the Gmail address.
        tokens: a token provider, or a zero-argument callable returning a token.
        host: the server.
        port: the port (995: implicit TLS).
        starttls: connect in plain text and upgrade with STLS (RFC 2595).
        ssl_context: TLS settings; by default :func:`ssl.create_default_context`
            (certificates and host names verified).
        timeout: socket timeout, in seconds.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        reconnect: replace dead or expiring connections transparently.
        clock: the time source for the proactive reconnect (tests inject one).
        backoff: the delays between reconnect attempts.
        limits: bounds on what the server may send (line and multi-line reply
            sizes, and how long a reply may take); see :class:`Limits`.

    Raises:
        AuthenticationFailed: the token was rejected, also after one refresh.
        TooManyConnections: Gmail refused another connection for this user.
        InsecureConnection: STLS was asked for but not offered, refused or
            answered oddly, or the certificate did not verify; no token was
            sent.
        ProtocolError: the server sent something that is not POP3, or
            (LimitExceeded) more than ``limits`` allow.
        ConnectionLost: the server could not be reached.
        Timeout: the server did not answer in time, or did not finish a reply
            within ``limits.response_seconds``.
        TokenError: the token provider failed (``retryable`` when that was
            transient); no token was sent.

    After login, commands raise the same types, or :class:`poplib.error_proto`
    when the server answers the command itself with ``-ERR``; the connection is
    closed after a ProtocolError or a Timeout. Each of the library's errors
    above but a TokenError is raised as its POP class (:class:`POPTimeout`,
    :class:`POPConnectionLost`...), a :class:`poplib.error_proto` too, so code
    written for poplib catches them as it always did.
    """

    def __init__(
        self,
        user: str,
        tokens: TokenSource,
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
        self._tokens = as_token_provider(tokens)
        self._starttls = starttls
        self._context = ssl_context or ssl.create_default_context()
        self._timeout = timeout
        self._mechanism = mechanism
        self._deadline = SessionDeadline(clock=clock, session_limit=POP_SESSION_LIMIT)
        self._backoff = backoff or Backoff()
        self._limits = limits or DEFAULT_LIMITS
        self._where = f"the POP3 server {host}:{port}"
        self._reader: ReplyReader | None = None
        self._debugging = 0
        self._connected = False
        self._secrets: list[bytes] = []
        self._two_line = False
        self._rules = Rules(reconnect=reconnect, user=user, logger=_log)
        self._maildrop = self._rules.maildrop
        self._capabilities: Capabilities = {}
        with leaving_pop3():
            try:
                self._connect()
            except Dead as exc:
                self._abandon()
                raise ConnectionLost(
                    f"could not connect to {self._where}: {exc}"
                ) from exc
            except BaseException:
                self._abandon()
                raise

    @property
    def limits(self) -> Limits:
        """The bounds on what the server may send on this connection."""
        return self._limits

    # -- connection and authentication -------------------------------------

    def _create_socket(self, timeout: float | None) -> socket.socket:
        # Called by poplib.POP3.__init__; implicit TLS wraps the socket here.
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")
        sock = socket.create_connection((self.host, self.port), timeout)
        if self._starttls:
            return sock
        try:
            tls = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        # poplib.POP3.stls() refuses to run on an implicit-TLS connection.
        self._tls_established = True
        return tls

    def _open(self) -> None:
        """Connect, read the greeting and start TLS; no token is sent."""
        debugging = self._debugging
        _log.debug("connecting to POP3 server %s:%s", self.host, self.port)
        try:
            with self._wire("the greeting"):
                poplib.POP3.__init__(self, self.host, self.port, self._timeout)
        except poplib.error_proto as exc:
            # A -ERR greeting: the server is there but will not serve us now.
            self._abandon()
            raise refused_greeting(exc) from exc
        self._debugging = debugging
        self._connected = True
        self._capabilities = {}
        if self._starttls:
            self._start_tls()

    def _connect(self) -> None:
        """Open a connection and log in, refreshing the token once if rejected."""
        login(
            self._tokens,
            open_connection=self._open,
            authenticate=self._authenticate,
            peer_closed=self._peer_closed,
            abandon=self._abandon,
            where=f"the POP3 server {self.host}:{self.port}",
            logger=_log,
        )
        self._deadline.start(self._tokens)
        self._rules.logged_in()

    def _authenticate(self, token: str) -> None:
        """Run the SASL exchange on the open connection."""
        initial = initial_response(
            self._mechanism, self._user, token, host=self.host, port=self.port
        )
        self._secrets = [initial, token.encode()]
        with self._wire("AUTH"):
            self._two_line = authenticate(
                send_command=self._putcmd,
                send_line=self._putline,
                read_line=self._read_line,
                mechanism=self._mechanism,
                initial=initial,
                user=self._user,
                host=self.host,
                port=self.port,
                two_line=self._two_line,
            )
        _log.debug("POP3 %s login accepted for %s", self._mechanism, self._user)

    def _peer_closed(self) -> bool:
        if not self._connected:
            return True
        reader = self._reader
        # Anything the server sent unasked is a goodbye (or out of step).
        return (reader is not None and reader.pending > 0) or peer_closed(self.sock)

    # -- reconnecting --------------------------------------------------------

    def _reestablish(self, reason: str) -> None:
        """Replace the connection, backing off while the server is unavailable."""
        # Routine (Gmail ends every OAuth session within the hour): DEBUG.
        _log.debug(
            "reconnecting to POP3 server %s:%s for %s: %s",
            self.host,
            self.port,
            self._user,
            reason,
        )
        self._abandon()
        reconnect(
            self._connect,
            self._abandon,
            self._backoff,
            where=f"the POP3 server {self.host}:{self.port}",
            logger=_log,
        )
        # A new session numbers the messages afresh (RFC 1939 section 5).
        self._rules.replaced()

    def _retire(self) -> None:
        """End a healthy session politely before replacing it (nothing pending)."""
        try:
            with self._wire("QUIT"):
                self._shortcmd("QUIT")
        except (Dead, Timeout, ProtocolError, poplib.error_proto):
            pass
        self._abandon()

    def _before_command(self) -> None:
        """At a command boundary: replace a dead or expiring connection."""
        closed = self._peer_closed()
        if closed:
            self._abandon()
        due = self._deadline.due() if self._rules.reconnect else False
        boundary = self._rules.at_boundary(closed=closed, due=due)
        if boundary is Boundary.RETIRE:
            self._retire()
        if boundary is not Boundary.KEEP:
            self._reestablish(self._rules.reason)

    def _run(
        self,
        what: str,
        call: Callable[[], _T],
        *,
        number: Any = None,
    ) -> _T:
        """Run a command, once more on a new connection if this one died.

        Whether it may run again is the verb's (``REPEATABLE``).

        Every exception leaving a command passes here, scrubbed of secrets, as
        its POP class (a :class:`poplib.error_proto` too).
        """
        with leaving_pop3():
            repeat = what.split(" ", 1)[0] in REPEATABLE
            return self._run_on_session(what, call, number, repeat)

    def _run_on_session(
        self, what: str, call: Callable[[], _T], number: Any, repeat: bool
    ) -> _T:
        self._before_command()
        try:
            with self._wire(what):
                self._check_numbering(number)
                return call()
        except Dead as exc:
            self._rules.died(what, exc, repeat=repeat)
            self._reestablish(self._rules.reason)
        try:
            self._check_numbering(number)
            with self._wire(what):
                return call()
        except Dead as exc:
            raise self._rules.died_again(what, exc) from exc

    def _check_numbering(self, which: Any) -> None:
        def uid_now(n: int) -> bytes:
            try:
                return self._uidl_one(n)[1].partition(b" ")[2]
            except poplib.error_proto:
                return b""

        with self._wire("UIDL"):
            self._maildrop.check_number(which, uid_now, self._stat_command)

    # -- the stdlib commands, made to survive session ends --------------------
    # Replies are checked inside the command, so a malformed one closes the
    # connection (a ProtocolError from _wire) instead of being half-used.

    def _stat_command(self) -> tuple[int, int]:
        resp = self._shortcmd("STAT")
        if self._debugging:
            print("*stat*", repr(self._redact(resp)))
        return scan_listing(resp, self._where, "STAT")

    def _uidl_one(self, which: Any) -> tuple[bytes, bytes]:
        """UIDL n: the reply, and its ``n uid``."""
        resp = self._shortcmd(f"UIDL {which}")
        return resp, unique_id(resp, self._where)

    def _list_one(self, which: Any) -> bytes:
        resp = self._shortcmd(f"LIST {which}")
        scan_listing(resp, self._where, "LIST")
        return resp

    def stat(self) -> tuple[int, int]:
        """STAT, repeated once on a new connection if this one died."""
        result = self._run("STAT", self._stat_command)
        self._maildrop.saw_stat(result)
        return result

    def list(self, which: Any | None = None) -> LongResp:
        """LIST, repeated once on a new connection if this one died."""
        if which is not None:
            # The scan listing, bytes (as poplib; its stubs say LongResp).
            one: Any = self._run(
                f"LIST {which}", lambda: self._list_one(which), number=which
            )
            return one  # type: ignore[no-any-return]
        result = self._run("LIST", lambda: self._longcmd("LIST"))
        self._maildrop.saw_listing(result[1])
        return result

    def retr(self, which: Any) -> LongResp:
        """RETR, repeated once on a new connection if this one died."""
        return self._run(
            f"RETR {which}", lambda: poplib.POP3.retr(self, which), number=which
        )

    def top(self, which: Any, howmuch: int) -> LongResp:
        """TOP, repeated once on a new connection if this one died."""
        return self._run(
            f"TOP {which}", lambda: poplib.POP3.top(self, which, howmuch), number=which
        )

    @overload
    def uidl(self) -> LongResp: ...
    @overload
    def uidl(self, which: Any) -> bytes: ...
    def uidl(self, which: Any | None = None) -> LongResp | bytes:
        """UIDL, repeated once on a new connection if this one died."""
        if which is None:
            full = self._run("UIDL", lambda: self._longcmd("UIDL"))
            self._maildrop.saw_uids(full[1], complete=True)
            return full
        one, uid = self._run(
            f"UIDL {which}", lambda: self._uidl_one(which), number=which
        )
        self._maildrop.saw_uids([uid], complete=False)
        return one

    def noop(self) -> bytes:
        """NOOP, repeated once on a new connection if this one died."""
        return self._run("NOOP", lambda: poplib.POP3.noop(self))

    def capa(self) -> Capabilities:
        """CAPA, repeated once on a new connection if this one died."""
        return self._run("CAPA", self._capa_command)

    # Login commands (the constructor has logged in) and UTF8: never repeated.

    def user(self, user: str) -> bytes:
        """USER (RFC 1939); not needed: the constructor logged in."""
        return self._run("USER", lambda: poplib.POP3.user(self, user))

    def pass_(self, pswd: str) -> bytes:
        """PASS (RFC 1939); not needed: the constructor logged in."""
        return self._run("PASS", lambda: poplib.POP3.pass_(self, pswd))

    def apop(self, user: str, password: str) -> bytes:
        """APOP (RFC 1939); not needed: the constructor logged in."""
        return self._run("APOP", lambda: poplib.POP3.apop(self, user, password))

    def rpop(self, user: str) -> bytes:
        """RPOP; not needed: the constructor logged in."""
        return self._run("RPOP", lambda: poplib.POP3.rpop(self, user))

    def utf8(self) -> bytes:
        """UTF8 (RFC 6856), never repeated on a new connection."""
        return self._run("UTF8", lambda: poplib.POP3.utf8(self))

    def dele(self, which: Any) -> bytes:
        """Mark a message for deletion; it is deleted when quit() succeeds.

        Raises:
            ConnectionLost: the connection died; earlier marks were not applied.
        """
        resp = self._run(
            f"DELE {which}", lambda: poplib.POP3.dele(self, which), number=which
        )
        self._rules.marked(which)
        return resp

    def rset(self) -> bytes:
        """Unmark every pending deletion (a lost session unmarks them too)."""
        self._maildrop.pending.clear()
        return self._run("RSET", lambda: poplib.POP3.rset(self))

    def quit(self) -> bytes:
        """Commit pending deletions and close; success only on the server's +OK.

        Raises:
            ConnectionLost: deletions were pending and the server did not
                confirm QUIT (``outcome_unknown`` is True when QUIT was sent).
            poplib.error_proto: the server answered QUIT with ``-ERR``.
        """
        with leaving_pop3():
            return self._quit()

    def _quit(self) -> bytes:
        pending = bool(self._maildrop.pending)
        if self._peer_closed():
            self._abandon()
            return self._rules.quit_on_closed()
        try:
            with self._wire("QUIT"):
                resp = self._shortcmd("QUIT")
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc_type is None:
            self.quit()
            return False
        if self._rules.block_failed():
            self._abandon()
            return False
        try:
            self.quit()
        except (ConnectionLost, poplib.error_proto):
            self._abandon()
        return False

    def __repr__(self) -> str:
        state = "connected" if self._connected else "closed"
        return (
            f"<gmail_xoauth2.POP3 {self._user} at {self.host}:{self.port} "
            f"{self._mechanism} {state}>"
        )
