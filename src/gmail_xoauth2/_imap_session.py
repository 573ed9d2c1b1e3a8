"""The session lifecycle of gmail_xoauth2.IMAP4: open, drop and replace a session.

A mixin placed before ``BufferedTransport`` and :class:`imaplib.IMAP4`. It
decides when a session must be replaced (dead, ending, or ended by the server),
replaces it (polite LOGOUT, new socket, fresh token, same mailbox) with backoff
between attempts, and checks that the mailbox a command depends on did not
change meanwhile. It never imports
:mod:`imaplib`: what it needs of it comes from ``imap.py``, the one module that
does, through the attributes and methods declared at the top of the class.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._backoff import Backoff
from ._imap_policy import Kind, MailboxState, unchanged_error
from ._reconnect import Attempts
from ._redact import get_logger
from ._session import SessionDeadline, replacement_due
from ._tokens import TokenProvider
from .errors import (
    ConnectionLost,
    Error,
    InsecureConnection,
    ProtocolError,
    Timeout,
)

__all__ = ["SessionLifecycle"]

# IMAP4's own logger: these lines (reconnecting, retrying, session ready) have
# always been logged as gmail_xoauth2.imap, and users filter on that name.
_log = get_logger("gmail_xoauth2.imap")


class SessionLifecycle:
    """Mixin for :class:`gmail_xoauth2.IMAP4`: the session's lifecycle.

    The state lives on the IMAP4 object (set in its ``__init__``); this class
    only holds the methods that open, drop and replace a session.
    """

    # Set by IMAP4.__init__ and kept up to date by IMAP4.
    reconnects: int
    _server: tuple[str, int]
    _user: str
    _tokens: TokenProvider
    _use_starttls: bool
    _timeout: float | None
    _reconnect_enabled: bool
    _deadline: SessionDeadline
    _backoff: Backoff
    _dead: bool
    _raw_depth: int
    _debug_level: int
    _mailbox: tuple[str, bool] | None
    _box: MailboxState
    _death: tuple[type[BaseException], ...]
    """What a dead connection looks like: imaplib's abort (BYE, EOF) or OSError."""
    _compress: bool
    """Whether to ask for COMPRESS=DEFLATE on each new session."""

    @property
    def _retryable(self) -> tuple[type[BaseException], ...]:
        """Failures of a reconnect attempt worth another attempt."""
        return (*self._death, Timeout)

    if TYPE_CHECKING:
        # imaplib.IMAP4's.
        state: str
        capabilities: tuple[str, ...]
        untagged_responses: dict[str, list[Any]]
        tagged_commands: dict[bytes, Any]
        debug: int
        error: Any  # imaplib.IMAP4.error

        def _simple_command(self, name: str, *args: Any) -> tuple[str, list[Any]]: ...
        def _get_capabilities(self) -> None: ...
        def _get_response(self) -> Any: ...
        def _check_bye(self) -> None: ...
        def _new_tag(self) -> bytes: ...

        # BufferedTransport's.
        def send(self, data: Any) -> None: ...
        def shutdown(self) -> None: ...
        def server_hung_up(self) -> str | None: ...
        def starttls_wrap(self, host: str) -> None: ...
        def start_compression(self) -> None: ...

        # IMAP4's: the greeting, login and re-SELECT, which use imaplib itself.
        @staticmethod
        def _lost(message: str, *, unknown: bool = False) -> ConnectionLost: ...
        def _greet(self) -> None: ...
        def _login(self) -> None: ...
        def _restore(self, mailbox: tuple[str, bool] | None) -> None: ...
        def _trace_out(self, data: bytes) -> None: ...

    @contextlib.contextmanager
    def _raw(self) -> Iterator[None]:
        """Run stdlib commands without the reconnect logic (we are managing it)."""
        self._raw_depth += 1
        try:
            yield
        finally:
            self._raw_depth -= 1

    def _drop(self) -> None:
        """Close the socket; the next command will reconnect."""
        self._dead = True
        with contextlib.suppress(OSError):
            self.shutdown()

    def _timed_out(
        self, name: str, exc: BaseException, *, unknown: bool = False
    ) -> Timeout:
        self._drop()
        host, port = self._server
        if isinstance(exc, Timeout):
            # The reply's deadline (Limits.response_seconds): its own message.
            return Timeout(str(exc), outcome_unknown=unknown)
        outcome = (
            f"; {name} had been sent, so the server may or may not have carried "
            "it out: check the mailbox before repeating it"
            if unknown
            else ""
        )
        return Timeout(
            f"{host}:{port} did not answer {name} within {self._timeout}s; the "
            f"connection was closed (the next command reconnects){outcome}",
            outcome_unknown=unknown,
        )

    def _before_command(
        self,
        name: str,
        kind: Kind,
        known: MailboxState,
        restore: tuple[str, bool] | None,
    ) -> None:
        """Replace the session first if it is dead, ending, or ended by the server."""
        due = replacement_due(dead=self._dead, deadline=self._deadline)
        if due is not None:
            why, polite = due
        else:
            hung_up = self.server_hung_up()
            if hung_up is None:
                return
            why, polite = f"the server ended the session ({hung_up})", False
        if not self._reconnect_enabled:
            self._drop()
            raise self._lost(f"cannot send {name}: {why} and reconnect is off")
        self._replace(why, restore=restore, polite=polite)
        self._check_unchanged(name, kind, known)

    def _check_unchanged(
        self,
        name: str,
        kind: Kind,
        known: MailboxState,
        *,
        sent: bool = False,
        stores: bool = False,
    ) -> None:
        if self._mailbox is None:
            return
        problem = unchanged_error(
            name, self._mailbox[0], known, self._box, kind, sent=sent, stores=stores
        )
        if problem is not None:
            message, unknown = problem
            raise self._lost(message, unknown=unknown)

    def _replace_after_unknown(
        self, name: str, exc: BaseException, restore: tuple[str, bool] | None
    ) -> None:
        """Reconnect so the object stays usable; the caller raises outcome-unknown."""
        try:
            self._replace(f"{name} was cut off: {exc}", restore=restore)
        except Error as again:
            _log.info("could not reconnect after %s was cut off: %s", name, again)

    def _replace(
        self,
        why: str,
        *,
        restore: tuple[str, bool] | None,
        polite: bool = False,
    ) -> None:
        """Replace the connection: new socket, fresh token, same mailbox."""
        host, port = self._server
        # Routine (Gmail ends every OAuth session within the hour): DEBUG.
        _log.debug("reconnecting %s to %s:%s: %s", self._user, host, port, why)
        state = self.state
        if polite and not self._dead:
            with self._raw(), contextlib.suppress(*self._death):
                self._simple_command("LOGOUT")
        self._drop()
        attempts = Attempts(
            self._backoff,
            f"IMAP server {host}:{port}",
            transient=self._retryable,
            logger=_log,
            lost=self._lost,
        )
        while True:
            try:
                self._open_session()
            except BaseException as exc:
                self._drop()
                self._next_attempt(attempts, exc, state)
                continue
            try:
                self._restore(restore)
            except Error:
                # The new session is up but the mailbox could not be selected
                # again: it stays in AUTH, as imaplib's select() left it.
                self.reconnects += 1
                raise
            except BaseException as exc:
                # A new session that dies before the mailbox is selected again
                # is a failed attempt like any other: try again.
                self._drop()
                self._next_attempt(attempts, exc, state)
                continue
            self.reconnects += 1
            return

    def _next_attempt(self, attempts: Attempts, exc: BaseException, state: str) -> None:
        """After a failed reconnect attempt: wait (logged), or give up."""
        try:
            if not isinstance(exc, Exception):
                raise exc
            delay = attempts.failed(exc)
        except BaseException:
            # Keep the logical state so the next command tries again.
            self.state = state
            raise
        self._backoff.sleep(delay)

    def _open_session(self) -> None:
        """Connect, secure, authenticate; on any failure the socket is closed."""
        host, port = self._server
        self._debug_level = getattr(self, "debug", self._debug_level)
        try:
            with self._raw():
                self._greet()
                if self._use_starttls:
                    self._negotiate_tls()
                self._tls_established = True
                self._login()
                if self._compress and "COMPRESS=DEFLATE" in self.capabilities:
                    self._negotiate_compress()
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            raise InsecureConnection(
                f"the TLS certificate of {host}:{port} could not be verified "
                f"({exc.verify_message}); no token was sent"
            ) from exc
        except Timeout:
            self._drop()
            raise
        except TimeoutError as exc:
            self._drop()
            raise Timeout(
                f"{host}:{port} did not answer within {self._timeout}s"
            ) from exc
        except BaseException:
            self._drop()
            raise
        self._dead = False
        self._deadline.start(self._tokens)
        _log.debug("IMAP session for %s on %s:%s ready", self._user, host, port)

    def _negotiate_compress(self) -> None:
        """COMPRESS DEFLATE (RFC 4978), after TLS and authentication.

        imaplib does not know the command, so it is sent as IDLE and
        AUTHENTICATE are. A NO or BAD (the server cannot, or will not) leaves
        the session as it was: uncompressed.
        """
        tag = self._new_tag()
        command = tag + b" COMPRESS DEFLATE"
        self._trace_out(command)
        self.send(command + b"\r\n")
        while self.tagged_commands.get(tag) is None:
            self._check_bye()
            if self._get_response() is None:  # imaplib's: a continuation
                host, port = self._server
                raise ProtocolError(
                    f"{host}:{port} sent a continuation request in answer to "
                    "COMPRESS; the connection was closed"
                )
        typ, data = self.tagged_commands.pop(tag)
        if typ != "OK":
            _log.debug("COMPRESS DEFLATE refused (%s %r); uncompressed", typ, data)
            return
        # The server compresses from the byte after its OK line; so do we.
        self.start_compression()
        _log.debug("COMPRESS DEFLATE on")

    def _negotiate_tls(self) -> None:
        host, port = self._server
        if "STARTTLS" not in self.capabilities:
            raise InsecureConnection(
                f"{host}:{port} does not offer STARTTLS, so the connection cannot be "
                "encrypted; refusing to send the token in clear (no token was sent). "
                "Use implicit TLS (port 993) or a server that offers STARTTLS"
            )
        # A session command: IMAP4 passes it straight to imaplib, never retried.
        try:
            typ, data = self._simple_command("STARTTLS")
        except self._death:
            raise
        except self.error as exc:
            # imaplib raises its error for BAD: a refusal like NO.
            typ, data = "BAD", [str(exc).encode("utf-8", "replace")]
        if typ != "OK":
            reply = data[-1] if data else b""
            raise InsecureConnection(
                f"{host}:{port} refused STARTTLS ({typ} {reply!r}); the connection "
                "cannot be encrypted, so no token was sent"
            )
        _log.debug("STARTTLS accepted; handshaking with %s", host)
        # Forget everything learned in clear (RFC 3501 section 6.2.1): bytes a
        # man in the middle may have injected, responses, capabilities.
        self.starttls_wrap(host)
        self.untagged_responses = {}
        self.capabilities = ()
        self._get_capabilities()
