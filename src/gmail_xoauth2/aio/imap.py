"""aio.IMAP4: imaplib's commands as coroutines, with the sync IMAP4's guarantees.

Same constructor as :class:`gmail_xoauth2.IMAP4`; creating one does no I/O:
``await imap.connect()`` or ``async with imap:`` connects (TLS always verified,
STARTTLS required when asked for) and authenticates (SASL-IR, Gmail's error
challenge answered, one refreshed-token retry). Commands return imaplib's
shapes (``typ, data``) and raise its exception types (the ``IMAP*`` classes are
``imaplib.IMAP4.error``/``abort``), so code ports line by line::

    async with aio.IMAP4(user, provider) as imap:
        await imap.select("INBOX")
        typ, data = await imap.uid("SEARCH", "UNSEEN")

A session that ends (Gmail ends each OAuth session with its token) is
replaced before the next command; a command cut off by a lost connection is
sent again only when that cannot do harm (never APPEND, COPY, MOVE, EXPUNGE),
and only in the same mailbox state, exactly as the sync class decides.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import secrets
import ssl
import string
from typing import Any

from .._backoff import Backoff
from .._constants import GMAIL_IMAP_HOST, IMAP_SESSION_LIMIT
from .._imap_policy import (
    SESSION_COMMANDS,
    MailboxState,
    after_lost,
    classify,
    stores_flags,
)
from .._limits import DEFAULT_LIMITS, Limits, ReplyMeter
from .._redact import get_logger, scrub_bytes, scrub_exception
from .._session import SessionDeadline
from .._tokens import Clock
from ..errors import (
    ConfigurationError,
    ConnectionLost,
    Error,
    ProtocolError,
    Timeout,
)
from ._imap_session import AsyncSession, raise_as_imap
from ._stream import Stream
from ._tokens import AsyncTokens, AsyncTokenSource, as_async_tokens

__all__ = ["IMAP4"]

_log = get_logger("gmail_xoauth2.imap")
_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
Data = list[Any]
Response = tuple[str, Data]
# Any line end in an APPENDed message becomes CRLF (RFC 5322), as imaplib does.
_LINE_ENDS = re.compile(rb"\r\n|\r(?!\n)|\n")


class IMAP4(AsyncSession):
    """An asyncio IMAP4 client for Gmail with OAuth 2.0.

    Args:
        user: the Gmail address to log in as.
        tokens: a token provider (``GoogleTokenProvider``: awaited through
            ``token_async()``), a sync provider or callable (run in a worker
            thread), or an ``async def`` callable.
        host: the server.
        port: 993 (implicit TLS), or 143 with ``starttls=True``.
        starttls: connect in clear and require STARTTLS before anything is sent.
        ssl_context: TLS settings (default: verified against the system CAs).
        timeout: seconds of silence allowed on each read, and for connecting.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        reconnect: replace ended sessions and repeat safe commands.
        clock: the time, for session deadlines (tests inject a manual clock).
        backoff: waits between reconnect attempts.
        limits: bounds on what the server may send.
        handshakes: a semaphore shared by many connections to bound how many
            connect, handshake and authenticate at once (a mass reconnect of
            a thousand mailboxes would otherwise spike the CPU).
        compress: ask for COMPRESS=DEFLATE (RFC 4978) when the server offers
            it (Gmail does): one more round trip at login, fewer bytes and TLS
            records for every reply. Off by default, unlike the sync class:
            zlib's state (the server's 32 KiB window among it) would cost an
            idle connection more than everything else it holds; turn it on
            for bulk transfers over slow links.
    """

    error = imaplib.IMAP4.error
    abort = imaplib.IMAP4.abort
    readonly = imaplib.IMAP4.readonly

    def __init__(
        self,
        user: str,
        tokens: AsyncTokenSource | AsyncTokens,
        host: str = GMAIL_IMAP_HOST,
        port: int = 993,
        *,
        starttls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = 60.0,
        mechanism: str = "XOAUTH2",
        reconnect: bool = True,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        limits: Limits | None = None,
        handshakes: asyncio.Semaphore | None = None,
        compress: bool = False,
    ) -> None:
        mech = mechanism.upper()
        if mech not in _MECHANISMS:
            raise ConfigurationError(
                f"mechanism must be one of {', '.join(_MECHANISMS)}, not {mechanism!r}"
            )
        if not user:
            raise ConfigurationError("user must be the Gmail address to log in as")
        if limits is not None and not isinstance(limits, Limits):
            raise ConfigurationError(
                f"limits must be a gmail_xoauth2.Limits, not {type(limits).__name__}"
            )
        self._user = user
        self._tokens = as_async_tokens(tokens)
        self._server = (host, port)
        self._use_starttls = starttls
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._timeout = timeout
        self._mechanism = mech
        self._reconnect_enabled = reconnect
        self._deadline = SessionDeadline(clock=clock, session_limit=IMAP_SESSION_LIMIT)
        self._backoff = backoff or Backoff()
        self._limits = limits or DEFAULT_LIMITS
        self._meter = ReplyMeter(self._limits, where=f"{host}:{port}")
        self._handshakes = handshakes
        self._compress = compress
        self._stream: Stream | None = None
        self._dead = True
        self._mailbox: tuple[str, bool] | None = None
        self._box = MailboxState()
        self._selecting = False
        self._enabled: list[str] = []
        self._sends = 0
        self._tagnum = 0
        self._tagpre = "".join(
            secrets.choice(string.ascii_uppercase) for _ in range(4)
        ).encode("ascii")
        self._idle_queue: list[tuple[str, Data]] | None = None
        self._stop: asyncio.Event | None = None
        self._busy: asyncio.Lock | None = None
        self.state = "LOGOUT"
        self.capabilities: tuple[str, ...] = ()
        self.untagged_responses: dict[str, Data] = {}
        self.reconnects = 0
        """How many times the connection was replaced (for monitoring)."""

    # --- opening and closing -----------------------------------------------

    async def connect(self) -> IMAP4:
        """Connect and authenticate (no-op when connected).

        Raises:
            IMAPAuthenticationFailed: the token was refused (after one refresh).
            IMAPInsecureConnection: TLS could not be had; no token was sent.
            IMAPConnectionLost, IMAPTimeout: the server could not be reached.
        """
        if not self._dead:
            return self
        try:
            await self._open_session()
        except BaseException as exc:
            scrub_exception(exc)
            raise_as_imap(exc)
        return self

    async def __aenter__(self) -> IMAP4:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.logout()

    async def logout(self) -> Response:
        """LOGOUT; a session the server already ended is just closed."""
        self._mailbox = None
        if self._dead:
            self.state = "LOGOUT"
            return "BYE", [b"connection already closed"]
        try:
            async with self._lock():
                _, data = await self._exchange("LOGOUT", ())
        except (Error, OSError) as exc:
            self.state = "LOGOUT"
            return "BYE", [str(exc).encode("ascii", "replace")]
        finally:
            self._drop()
            self.state = "LOGOUT"
        byes = self.untagged_responses.pop("BYE", None)
        return "BYE", byes or data

    # --- the public surface -------------------------------------------------

    @property
    def user(self) -> str:
        """The address this connection logs in as."""
        return self._user

    @property
    def mechanism(self) -> str:
        """The SASL mechanism in use."""
        return self._mechanism

    @property
    def limits(self) -> Limits:
        """The bounds on what the server may send on this connection."""
        return self._limits

    @property
    def compressed(self) -> bool:
        """Whether this session is compressed (the server accepted COMPRESS)."""
        return self._stream is not None and self._stream.compressed

    @property
    def host(self) -> str:
        return self._server[0]

    @property
    def port(self) -> int:
        return self._server[1]

    def __repr__(self) -> str:
        return (
            f"<gmail_xoauth2.aio.IMAP4 {self._user} at {self._where} "
            f"{self._mechanism} state={self.state}>"
        )

    async def capability(self) -> Response:
        return await self._command("CAPABILITY", untagged="CAPABILITY")

    async def noop(self) -> Response:
        return await self._command("NOOP")

    async def select(self, mailbox: str = "INBOX", readonly: bool = False) -> Response:
        """SELECT (EXAMINE when ``readonly``); selected again after a reconnect."""
        name = "EXAMINE" if readonly else "SELECT"
        self._box = MailboxState()
        self._selecting = True
        try:
            typ, data = await self._command(name, mailbox, raw=True)
        finally:
            self._selecting = False
        if typ != "OK":
            self.state = "AUTH"
            self._mailbox = None
            return typ, data
        self.state = "SELECTED"
        self._mailbox = (mailbox, readonly)
        return self._untagged(typ, data, "EXISTS")

    async def examine(self, mailbox: str = "INBOX") -> Response:
        return await self.select(mailbox, readonly=True)

    async def close(self) -> Response:
        try:
            return await self._command("CLOSE")
        finally:
            self.state = "AUTH"

    async def unselect(self) -> Response:
        try:
            return await self._command("UNSELECT")
        finally:
            self.state = "AUTH"

    async def search(self, charset: str | None, *criteria: Any) -> Response:
        args = ("CHARSET", charset, *criteria) if charset else criteria
        return await self._command("SEARCH", *args, untagged="SEARCH")

    async def fetch(self, message_set: Any, message_parts: Any) -> Response:
        return await self._command(
            "FETCH", message_set, message_parts, untagged="FETCH"
        )

    async def store(self, message_set: Any, command: Any, flags: Any) -> Response:
        if isinstance(flags, str) and not flags.startswith("("):
            flags = f"({flags})"
        return await self._command(
            "STORE", message_set, command, flags, untagged="FETCH"
        )

    async def copy(self, message_set: Any, new_mailbox: Any) -> Response:
        return await self._command("COPY", message_set, new_mailbox)

    async def expunge(self) -> Response:
        return await self._command("EXPUNGE", untagged="EXPUNGE")

    async def uid(self, command: str, *args: Any) -> Response:
        """UID FETCH/SEARCH/STORE/COPY/MOVE/EXPUNGE..., as imaplib's ``uid()``."""
        sub = command.upper()
        untagged = sub if sub in ("SEARCH", "SORT", "THREAD") else "FETCH"
        return await self._command("UID", sub, *args, untagged=untagged)

    async def list(self, directory: str = '""', pattern: str = "*") -> Response:
        return await self._command("LIST", directory, pattern, untagged="LIST")

    async def lsub(self, directory: str = '""', pattern: str = "*") -> Response:
        return await self._command("LSUB", directory, pattern, untagged="LSUB")

    async def status(self, mailbox: str, names: str) -> Response:
        return await self._command("STATUS", mailbox, names, untagged="STATUS")

    async def create(self, mailbox: str) -> Response:
        return await self._command("CREATE", mailbox)

    async def delete(self, mailbox: str) -> Response:
        return await self._command("DELETE", mailbox)

    async def rename(self, oldmailbox: str, newmailbox: str) -> Response:
        return await self._command("RENAME", oldmailbox, newmailbox)

    async def subscribe(self, mailbox: str) -> Response:
        return await self._command("SUBSCRIBE", mailbox)

    async def namespace(self) -> Response:
        return await self._command("NAMESPACE", untagged="NAMESPACE")

    async def enable(self, capability: str) -> Response:
        typ, data = await self._command("ENABLE", capability, untagged="ENABLED")
        if typ == "OK":
            self._enabled.append(capability)
        return typ, data

    async def append(
        self, mailbox: str, flags: str | None, date_time: Any, message: bytes
    ) -> Response:
        """APPEND (never sent twice: a lost connection after it is outcome-unknown)."""
        args: Data = [mailbox]
        if flags:
            args.append(flags if flags.startswith("(") else f"({flags})")
        if date_time:
            args.append(imaplib.Time2Internaldate(date_time))
        body = _LINE_ENDS.sub(b"\r\n", message)
        return await self._command("APPEND", *args, literal=body)

    async def xatom(self, name: str, *args: Any) -> Response:
        """Any other command (sent at most once unless it is known to be safe)."""
        return await self._command(name.upper(), *args, untagged=name.upper())

    def idle(self, duration: float | None = None) -> Any:
        """IDLE as an async context manager and iterator (see :class:`AsyncIdler`)."""
        from ._imap_idle import AsyncIdler

        return AsyncIdler(self, duration)

    def watch(
        self,
        mailbox: str = "INBOX",
        *,
        since_uid: int | None = None,
        uidvalidity: int | None = None,
        backoff: Backoff | None = None,
        poll: float = 60.0,
        stop: asyncio.Event | None = None,
    ) -> Any:
        """New messages in ``mailbox``, each once, in UID order (see the sync
        :meth:`gmail_xoauth2.IMAP4.watch`); an async iterator."""
        from ._imap_idle import AsyncWatcher

        return AsyncWatcher(
            self,
            mailbox,
            since_uid=since_uid,
            uidvalidity=uidvalidity,
            backoff=backoff,
            poll=poll,
            stop=stop,
        )

    # --- running a command ----------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        if self._busy is None:
            self._busy = asyncio.Lock()
        return self._busy

    async def _command(
        self,
        name: str,
        *args: Any,
        literal: bytes | None = None,
        untagged: str | None = None,
        raw: bool = False,
    ) -> Response:
        if self.state == "LOGOUT" and self._tagnum:
            raise self.error(f"command {name} illegal in state LOGOUT")
        try:
            async with self._lock():
                try:
                    typ, data = await self._guarded(name, args, literal)
                except asyncio.CancelledError:
                    # Cut off mid-exchange (wait_for, a task cancelled): its
                    # reply may still come, so the connection is out of step.
                    self._drop()
                    raise
        except BaseException as exc:
            scrub_exception(exc)
            if isinstance(exc, ProtocolError):
                self._drop()  # a malformed or oversized reply: out of step
            raise_as_imap(exc)
        if typ == "BAD":
            raise self.error(f"{name} command error: {typ} {data!r}")
        data = [scrub_bytes(d) if isinstance(d, bytes) else d for d in data]
        if raw or untagged is None:
            return typ, data
        return self._untagged(typ, data, untagged)

    def _untagged(self, typ: str, data: Data, name: str) -> Response:
        """imaplib's rule: NO gives the tagged text, else the untagged ``name``."""
        if typ == "NO":
            return typ, data
        found = self.untagged_responses.pop(name, None)
        return typ, found if found is not None else [None]

    async def _guarded(
        self, name: str, args: tuple[Any, ...], literal: bytes | None
    ) -> Response:
        """One command, with the session replaced before or after it as needed."""
        if name in SESSION_COMMANDS:
            raise self.error(f"{name} is managed by the connection itself")
        kind = classify(name, args)
        known = self._box
        restore = None if name in ("SELECT", "EXAMINE") else self._mailbox
        await self._before_command(name, kind, known, restore)
        sends = self._sends
        try:
            return await self._run(name, args, literal)
        except Timeout as exc:
            self._drop()
            once = self._sends > sends and not kind.repeatable
            raise _timed_out(name, exc, unknown=once) from exc
        except ConnectionLost as exc:
            sent = self._sends > sends
            self._drop()
            plan = after_lost(
                name, kind, sent=sent, reconnect=self._reconnect_enabled, cause=exc
            )
            if plan.forget_mailbox:
                restore = self._mailbox = None
            if plan.action == "raise":
                raise ConnectionLost(
                    plan.message, outcome_unknown=plan.unknown
                ) from exc
            if plan.action == "reconnect_then_raise":
                try:
                    await self._replace(f"{name} was cut off: {exc}", restore=restore)
                except Error as again:
                    _log.info(
                        "could not reconnect after %s was cut off: %s", name, again
                    )
                raise ConnectionLost(plan.message, outcome_unknown=True) from exc
            await self._replace(plan.message, restore=restore)
            self._check_unchanged(
                name, kind, known, sent=sent, stores=stores_flags(name, args)
            )
        sends = self._sends
        try:
            return await self._run(name, args, literal)
        except Timeout as exc:
            self._drop()
            once = self._sends > sends and not kind.repeatable
            raise _timed_out(name, exc, unknown=once) from exc
        except ConnectionLost as exc:
            self._drop()
            raise ConnectionLost(
                f"connection lost again while retrying {name}: {exc}",
                outcome_unknown=self._sends > sends and not kind.repeatable,
            ) from exc

    async def _run(
        self, name: str, args: tuple[Any, ...], literal: bytes | None
    ) -> Response:
        if name in ("SELECT", "EXAMINE"):
            self._box = MailboxState()
        result = await self._exchange(name, args, literal)
        if name in ("CLOSE", "UNSELECT"):
            self._mailbox = None
        return result

    async def _prepare_idle(self) -> None:
        """The command-boundary checks, before IDLE starts."""
        if self.state not in ("AUTH", "SELECTED"):
            raise self.error(
                f"command IDLE illegal in state {self.state}, "
                "only allowed in states AUTH, SELECTED"
            )
        await self._before_command(
            "IDLE", classify("NOOP", ()), self._box, self._mailbox
        )


def _timed_out(name: str, exc: Timeout, *, unknown: bool) -> Timeout:
    """The sync class's timeout: the connection is closed, and whether ``name``
    may have been carried out (it had been sent and must not run twice)."""
    outcome = (
        f"; {name} had been sent, so the server may or may not have carried "
        "it out: check the mailbox before repeating it"
        if unknown
        else ""
    )
    return Timeout(
        f"{exc}; the connection was closed (the next command reconnects){outcome}",
        outcome_unknown=unknown,
    )
