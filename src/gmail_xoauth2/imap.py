"""imaplib.IMAP4 that logs in with OAuth 2.0 and outlives Gmail's session ends.

:class:`IMAP4` is an :class:`imaplib.IMAP4`: every stdlib method works as
documented. On top it authenticates with XOAUTH2 or OAUTHBEARER in one round
trip (SASL-IR, RFC 4959), answers Gmail's error challenge as Google's XOAUTH2
page prescribes, and replaces the connection when the session ends (Gmail ends
an OAuth session when its access token expires): proactively at the next
command boundary, or after a ``* BYE``/EOF, restoring the selected mailbox and
repeating the command only when that is safe. This is the only public module
that imports :mod:`imaplib` (its private helpers are ``_imap_*.py``).
"""

from __future__ import annotations

import imaplib
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

from ._backoff import Backoff
from ._constants import GMAIL_IMAP_HOST, IMAP_SESSION_LIMIT
from ._imap_errors import raise_as_imap
from ._imap_gmail import GmailCommands
from ._imap_idle import Idler
from ._imap_policy import (
    SESSION_COMMANDS,
    TRACKED,
    Kind,
    MailboxState,
    after_lost,
    classify,
    observed,
    stores_flags,
    text,
)
from ._imap_sasl import authenticate
from ._imap_session import SessionLifecycle
from ._imap_signatures import TypedCommands
from ._imap_transport import BufferedTransport
from ._imap_watch import NewMessage, UIDValidityChanged, Watcher
from ._limits import DEFAULT_LIMITS, Limits, ReplyMeter
from ._redact import get_logger, scrub, scrub_bytes, scrub_exception
from ._session import SessionDeadline
from ._tokens import Clock, TokenSource, as_token_provider
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionLost,
    Error,
    InsecureConnection,
    ProtocolError,
    TooManyConnections,
)

__all__ = [
    "IMAP4",
    "IMAPConnectionLost",
    "Idler",
    "NewMessage",
    "UIDValidityChanged",
    "Watcher",
]

_log = get_logger(__name__)

_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")

Response = tuple[str, list[Any]]

_DEATH: tuple[type[BaseException], ...] = (imaplib.IMAP4.abort, OSError)
"""What a dead connection looks like: imaplib's abort (BYE, EOF) or a socket error."""


def _stdlib(name: str) -> Callable[..., Any]:
    """imaplib.IMAP4's own implementation of a private method we extend."""
    return cast(Callable[..., Any], vars(imaplib.IMAP4)[name])


# Looked up once: these run for every line or response of every reply.
_APPEND_UNTAGGED = _stdlib("_append_untagged")
_GET_RESPONSE = _stdlib("_get_response")
_SIMPLE_COMMAND = _stdlib("_simple_command")
_NEW_TAG = _stdlib("_new_tag")
_STD_LOG = _stdlib("_log") if __debug__ else None
# The untagged responses that change what we know of the selected mailbox.
_TRACKED = TRACKED
# imaplib's aborts for a reply it cannot parse (not for a lost connection).
_MALFORMED = ("unexpected", "socket error: unterminated")


def _default_debug() -> int:
    """imaplib.Debug, the level imaplib gives every new connection."""
    return int(vars(imaplib).get("Debug", 0))


class IMAPConnectionLost(ConnectionLost, imaplib.IMAP4.abort):
    """The IMAP connection died and the operation could not be finished.

    It is both :class:`gmail_xoauth2.ConnectionLost` and
    :class:`imaplib.IMAP4.abort`, so code written for imaplib
    (``except M.abort:``) keeps working. ``outcome_unknown`` is True when a
    command that must not run twice (APPEND, COPY, MOVE, EXPUNGE...) had been
    sent: the server may or may not have carried it out, and it was not sent
    again. The connection itself has been replaced when possible, so the
    object stays usable.
    """


class IMAP4(SessionLifecycle, BufferedTransport, GmailCommands, TypedCommands):
    """An :class:`imaplib.IMAP4` that authenticates with OAuth 2.0 and reconnects.

    The constructor connects (implicit TLS, or STARTTLS when ``starttls`` is
    True), authenticates and returns an object in the ``AUTH`` state. Commands
    are imaplib's. When the access token is about to expire, the next command
    first replaces the session (LOGOUT, new connection, fresh token, same
    mailbox). When the server ends the session, the connection is replaced and
    the command is sent again if that is safe: reads, searches, fetches, flag
    stores, and UID commands while UIDVALIDITY is unchanged. APPEND, COPY,
    MOVE, EXPUNGE, CREATE, DELETE and RENAME are never sent twice: if the
    connection died after one was sent, :class:`IMAPConnectionLost` is raised
    with ``outcome_unknown=True``.

    Args:
        user: the Gmail address.
        tokens: a token provider (``token(*, force_refresh=False) -> str``,
            optionally ``expiry``) or a zero-argument callable returning a token.
        host: the server.
        port: the port; 993 is implicit TLS.
        starttls: connect in plain text and upgrade with STARTTLS; the token
            is never sent if the server does not offer it.
        ssl_context: certificates and host names are always verified; pass a
            context to trust another CA.
        timeout: socket timeout in seconds for every network operation.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        reconnect: False turns every reconnect off: a lost session raises.
        clock: the clock for the proactive reconnect and IDLE renewal
            (aware UTC datetimes); tests pass a manual one.
        backoff: the waits between reconnect attempts.
        limits: bounds on what the server may send (line, literal and reply
            sizes, and how long a reply may take); see :class:`Limits`.
        compress: ask for COMPRESS=DEFLATE (RFC 4978) after login when the
            server offers it (Gmail does), on every new session: several times
            fewer bytes for text mail. ``limits`` bound the inflated bytes.
            False keeps the session uncompressed.

    Raises:
        AuthenticationFailed: the token was rejected, also after one refresh.
        TooManyConnections: Gmail's per-user connection limit is reached.
        InsecureConnection: no TLS (STARTTLS not offered or refused, PREAUTH
            in clear, bad certificate); no token was sent.
        ProtocolError: the server sent something that is not IMAP, or
            (LimitExceeded) more than ``limits`` allow.
        ConnectionLost: the server could not be reached.
        Timeout: the server did not answer in time.

    After login, commands raise the same types, or imaplib's own
    ``IMAP4.error`` when the server answers the command itself with ``BAD``
    (as imaplib does); the connection is closed, and replaced on the next
    command, after a ProtocolError or a Timeout.
    """

    def __init__(
        self,
        user: str,
        tokens: TokenSource,
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
        compress: bool = True,
    ) -> None:
        mech = mechanism.upper()
        if mech not in _MECHANISMS:
            raise ConfigurationError(
                f"mechanism must be one of {', '.join(_MECHANISMS)}, not {mechanism!r}"
            )
        if not user:
            raise ConfigurationError("user must be the Gmail address to log in as")
        self._user = user
        self._tokens = as_token_provider(tokens)
        self._server = (host, port)
        self._use_starttls = starttls
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._timeout = timeout
        self._mechanism = mech
        self._reconnect_enabled = reconnect
        self._deadline = SessionDeadline(clock=clock, session_limit=IMAP_SESSION_LIMIT)
        self._backoff = backoff or Backoff()
        self._limits = limits or DEFAULT_LIMITS
        self._compress = compress
        self._meter = ReplyMeter(self._limits, where=f"{host}:{port}")
        self._rbuf, self._rpos = b"", 0
        self._sends = 0
        self._raw_depth = 0
        self._dead = True
        self._debug_level = _default_debug()
        self._mailbox: tuple[str, bool] | None = None  # (name, readonly)
        self._selecting = False
        self._box = MailboxState()
        self._enabled: list[str] = []
        self._idle_queue: list[tuple[str, Any]] | None = None
        self._wake = None
        self._death = _DEATH
        self.reconnects = 0
        """How many times the connection was replaced (for monitoring)."""
        try:
            self._open_session()
        except Error as exc:
            scrub_exception(exc)
            raise_as_imap(exc)
        except _DEATH as exc:
            lost = _lost(f"could not connect to {host}:{port}: {exc}")
            scrub_exception(exc)
            scrub_exception(lost)
            raise lost from exc

    # --- public surface -----------------------------------------------------

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
        """Whether this session is compressed (the server accepted COMPRESS DEFLATE)."""
        return self._deflater is not None

    def __repr__(self) -> str:
        host, port = self._server
        return (
            f"<gmail_xoauth2.IMAP4 {self._user} at {host}:{port} "
            f"{self._mechanism} state={getattr(self, 'state', '?')}>"
        )

    def select(self, mailbox: str = "INBOX", readonly: bool = False) -> Any:
        """imaplib's SELECT/EXAMINE; the mailbox is re-selected after a reconnect."""
        self._box = MailboxState()
        self._selecting = True
        try:
            typ, data = super().select(mailbox, readonly)
        except imaplib.IMAP4.readonly:
            self._mailbox = (mailbox, readonly)
            raise
        finally:
            self._settle()  # the EXISTS of the SELECT reply is the count, not growth
            self._selecting = False
        self._mailbox = (mailbox, readonly) if typ == "OK" else None
        return typ, data

    def logout(self) -> Any:
        """imaplib's LOGOUT; a session the server already ended is just closed."""
        self._mailbox = None
        if self._dead:
            self.state = "LOGOUT"
            return "BYE", [b"connection already closed"]
        try:
            with self._raw():
                return super().logout()
        except _DEATH as exc:
            self.state = "LOGOUT"
            return "BYE", [str(exc).encode("ascii", "replace")]
        finally:
            self._drop()

    def idle(self, duration: float | None = None) -> Idler:
        """IMAP IDLE (RFC 2177) with Python 3.14's interface, on every Python.

        Returns an iterable context manager: entering sends ``IDLE``, iterating
        yields untagged responses as ``(type, data)`` (``('EXISTS', [b'3'])``),
        and leaving sends ``DONE``. ``duration`` (seconds, None for no limit)
        ends the iteration; ``burst(interval=0.1)`` yields a batch of responses
        that arrive close together. IDLE is renewed every 27 minutes (RFC 2177
        asks for less than 29), and a session the server ends is replaced and
        IDLE resumed; an ``EXISTS`` is yielded when the mailbox grew meanwhile.
        """
        return Idler(self, duration)

    def watch(
        self,
        mailbox: str = "INBOX",
        *,
        since_uid: int | None = None,
        uidvalidity: int | None = None,
        backoff: Backoff | None = None,
        poll: float = 60.0,
        stop: threading.Event | None = None,
    ) -> Watcher:
        """New messages in ``mailbox``, each once, in UID order, for days on end.

        Selects ``mailbox`` and yields a :class:`NewMessage` (``uid``,
        ``uidvalidity``) for every message that arrives from now on (or
        after ``since_uid``, to resume where a previous run stopped: pass the
        saved ``last_uid`` and ``uidvalidity``), across session ends, token
        refreshes and outages of any length, mail that came while
        disconnected included. If the mailbox's UIDs are renumbered
        (UIDVALIDITY changes), a :class:`UIDValidityChanged` is yielded and
        the watch goes on from the new numbering. Waits with IDLE when the
        server offers it (renewed every 27 minutes), else with NOOP every
        ``poll`` seconds.

        While watching, reconnects wait as ``backoff`` says, by default
        :meth:`Backoff.forever`: an outage never ends the watch. Between two
        items the connection may be used for anything (fetch the message,
        label it). ``stop`` (a :class:`threading.Event`) or the watcher's
        ``stop()`` ends the iteration from another thread within a second.

        ::

            with imap.watch("INBOX") as watcher:
                for event in watcher:
                    if isinstance(event, NewMessage):
                        typ, data = imap.uid("FETCH", str(event.uid), "(RFC822)")
        """
        return Watcher(
            self,
            mailbox,
            since_uid=since_uid,
            uidvalidity=uidvalidity,
            backoff=backoff,
            poll=poll,
            stop=stop,
        )

    # --- imaplib overrides ---------------------------------------------------

    def open(
        self, host: str = "", port: int = 993, timeout: float | None = None
    ) -> None:
        """Connect (implicit TLS unless STARTTLS was asked for)."""
        # imaplib.IMAP4.__init__ resets ``debug`` before calling open();
        # keep the level the caller chose for this object.
        self.debug = self._debug_level
        super().open(host, port, timeout)

    def _get_capabilities(self) -> None:
        if self.state != "NONAUTH" and not isinstance(self.sock, ssl.SSLSocket):
            # PREAUTH in clear (RFC 3501 section 7.1.4) leaves no chance to
            # start TLS: a downgrade, whoever sent it. Nothing more is sent.
            host, port = self._server
            raise InsecureConnection(
                f"{host}:{port} greeted with PREAUTH in clear, so STARTTLS "
                "cannot be used; refusing the connection (no token was sent)"
            )
        # imaplib always sends CAPABILITY after the greeting; a greeting with
        # [CAPABILITY ...] (RFC 3501 section 7.1) already answered it.
        caps = self.untagged_responses.pop("CAPABILITY", None)
        if not (caps and isinstance(caps[-1], bytes)):
            self._simple_command("CAPABILITY")
            caps = self.untagged_responses.pop("CAPABILITY", None)
            if not (caps and isinstance(caps[-1], bytes)):
                raise ProtocolError(
                    f"{self.host}:{self.port} sent no CAPABILITY response"
                )
        # Capabilities are ASCII atoms (RFC 3501 section 9); a server that
        # sends other bytes gets them replaced, not a UnicodeDecodeError.
        self.capabilities = tuple(caps[-1].decode("ascii", "replace").upper().split())

    def _new_tag(self) -> bytes:
        # Every command (ours and imaplib's) starts here: a new reply to meter.
        self._meter.start()
        return cast(bytes, _NEW_TAG(self))

    def _get_line(self) -> bytes:
        # imaplib's, with the line bounded by the transport, and a line that
        # does not end in CRLF treated as what it is: a malformed reply.
        line = self.readline()
        if not line:
            raise self.abort("socket error: EOF")
        if not line.endswith(b"\r\n"):
            if line.endswith(b"\n"):
                raise ProtocolError(
                    f"{self.host}:{self.port} ended a line with LF alone, not "
                    "CRLF; the connection was closed"
                )
            raise self.abort("socket error: EOF in the middle of a line")
        line = line[:-2]
        if __debug__:
            if self.debug >= 1:
                self._mesg(f"< {line!r}")
            else:
                _STD_LOG(self, f"< {line!r}")  # type: ignore[misc]
        return line

    def _get_response(self) -> Any:
        try:
            return _GET_RESPONSE(self)
        except self.abort as exc:
            message = str(exc)
            if not message.startswith(_MALFORMED):
                raise
            raise ProtocolError(
                f"{self.host}:{self.port} sent a reply that is not IMAP "
                f"({scrub(message)[:200]}); the connection was closed"
            ) from exc

    def _append_untagged(self, typ: str, dat: Any) -> None:
        # Runs for every untagged response: kept to a few cheap steps.
        meter = self._meter
        meter.lines += 1
        if meter.lines > meter.limits.response_lines:
            meter.count(0)  # raises LimitExceeded
        if typ in _TRACKED:
            if typ == "EXISTS":
                # Only the latest counts; _box works out the rest when read.
                self._exists_seen = dat
            else:
                self._track(typ, dat)
        queue = self._idle_queue
        if queue is not None:
            # As Python 3.14's IDLE: (type, [data]); a response with literals
            # arrives here one fragment at a time and is yielded as one item.
            if dat is None:
                dat = b""
            if queue and not isinstance(queue[-1][1][-1], bytes):
                queue[-1][1].append(dat)
            else:
                queue.append((typ, [dat]))
            return
        _APPEND_UNTAGGED(self, typ, dat)

    def _keep_untagged(self, typ: str, dat: Any) -> None:
        """Store a response as imaplib would, without tracking it again."""
        _APPEND_UNTAGGED(self, typ, dat)

    @property
    def _box(self) -> MailboxState:
        """What we know of the selected mailbox, EXISTS responses included."""
        if self._exists_seen is not None:
            self._settle()
        return self._box_state

    @_box.setter
    def _box(self, state: MailboxState) -> None:
        self._box_state = state
        self._exists_seen = None

    def _settle(self) -> None:
        """Apply the latest EXISTS (a busy mailbox sends them by the thousand)."""
        dat, self._exists_seen = self._exists_seen, None
        if dat is None:
            return
        self._box_state = observed(
            self._box_state, "EXISTS", dat, selecting=self._selecting
        )

    def _track(self, typ: str, dat: Any) -> None:
        self._box = observed(self._box, typ, dat)

    if __debug__:

        def _mesg(self, s: str, secs: float | None = None) -> None:
            # Debug output and print_log() (which prints imaplib's command log
            # through here): never a token or SASL string, even quoted back.
            _stdlib("_mesg")(self, scrub(s), secs)

    def _trace_out(self, data: bytes) -> None:
        """Record a line we send ourselves, as imaplib's _command would."""
        if __debug__:
            if self.debug >= 4:
                self._mesg(f"> {data!r}")
            else:
                self._log(f"> {data!r}")

    def _simple_command(self, name: str, *args: Any) -> Response:
        if self._raw_depth or name in SESSION_COMMANDS or self.state == "LOGOUT":
            # After logout() the object is closed: imaplib raises (illegal
            # state, or a socket error); a new session would only leak.
            return cast(Response, _SIMPLE_COMMAND(self, name, *args))
        try:
            typ, data = self._guarded_command(name, args)
        except BaseException as exc:
            scrub_exception(exc)
            if isinstance(exc, ProtocolError):
                # A malformed or oversized reply: the stream is out of step.
                self._drop()
            raise_as_imap(exc)
        # The tagged reply's text is the server's words, like an exception's:
        # one that quotes the SASL string back does not hand it on.
        return typ, [scrub_bytes(d) if isinstance(d, bytes) else d for d in data]

    def _guarded_command(self, name: str, args: tuple[Any, ...]) -> Response:
        """One command, with the session replaced before or after it as needed."""
        literal, self.literal = self.literal, None
        kind = classify(name, args)
        readonly = self.is_readonly
        known = self._box
        # SELECT replaces the mailbox: no restore. CLOSE and UNSELECT need the
        # mailbox selected again before they can be sent on a new session.
        restore = self._mailbox
        if name in ("SELECT", "EXAMINE"):
            restore = None
        self._before_command(name, kind, known, restore)
        self.is_readonly = readonly
        sends = self._sends
        try:
            self.literal = literal
            return self._run(name, args)
        except TimeoutError as exc:
            once = self._sends > sends and not kind.repeatable
            raise self._timed_out(name, exc, unknown=once) from exc
        except _DEATH as exc:
            if isinstance(exc, imaplib.IMAP4.readonly):
                raise
            sent = self._sends > sends
            self._drop()
            plan = after_lost(
                name, kind, sent=sent, reconnect=self._reconnect_enabled, cause=exc
            )
            if plan.forget_mailbox:
                # The mailbox is left either way (imaplib's close() says AUTH):
                # never select it again behind the caller's back.
                restore = self._mailbox = None
            if plan.action == "raise":
                raise _lost(plan.message, unknown=plan.unknown) from exc
            if plan.action == "reconnect_then_raise":
                self._replace_after_unknown(name, exc, restore)
                raise _lost(plan.message, unknown=True) from exc
            self._replace(plan.message, restore=restore)
            self._check_unchanged(
                name, kind, known, sent=sent, stores=stores_flags(name, args)
            )
        self.is_readonly = readonly
        sends = self._sends
        try:
            self.literal = literal
            return self._run(name, args)
        except TimeoutError as exc:
            once = self._sends > sends and not kind.repeatable
            raise self._timed_out(name, exc, unknown=once) from exc
        except _DEATH as exc:
            if isinstance(exc, imaplib.IMAP4.readonly):
                raise
            self._drop()
            raise _lost(
                f"connection lost again while retrying {name}: {exc}",
                unknown=self._sends > sends and not kind.repeatable,
            ) from exc
        finally:
            self.literal = None

    def _run(self, name: str, args: tuple[Any, ...]) -> Response:
        try:
            result = cast(Response, _SIMPLE_COMMAND(self, name, *args))
        finally:
            self.literal = None
        if name in ("CLOSE", "UNSELECT"):
            self._mailbox = None
        elif name == "ENABLE" and result[0] == "OK" and args:
            self._enabled.append(text(args[0]))
        return result

    # --- session steps that need imaplib (the rest: SessionLifecycle) -------

    @staticmethod
    def _lost(message: str, *, unknown: bool = False) -> IMAPConnectionLost:
        return _lost(message, unknown=unknown)

    def _prepare_idle(self) -> None:
        """The command-boundary checks, before IDLE starts."""
        if self.state not in ("AUTH", "SELECTED"):
            raise self.error(
                f"command IDLE illegal in state {self.state}, "
                "only allowed in states AUTH, SELECTED"
            )
        self._before_command("IDLE", Kind(True, "none"), self._box, self._mailbox)

    def _restore(self, mailbox: tuple[str, bool] | None) -> None:
        with self._raw():
            for capability in self._enabled:
                self.enable(capability)
            if mailbox is None:
                return
            name, readonly = mailbox
            try:
                typ, data = self.select(name, readonly)
            except imaplib.IMAP4.readonly:
                return
            if typ != "OK":
                self._mailbox = None
                raise _lost(
                    f"reconnected, but could not select {name} again: {data[-1]!r}"
                )

    def _greet(self) -> None:
        """Connect and read the greeting (and capabilities), as imaplib does."""
        host, port = self._server
        try:
            imaplib.IMAP4.__init__(self, host, port, self._timeout)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            welcome = exc.args[0] if exc.args else None
            if isinstance(welcome, bytes) and welcome.upper().startswith(b"* BYE"):
                # RFC 3501 section 7.1.5: a server that refuses the connection
                # greets with BYE. It is there but unavailable: back off.
                text = welcome.decode("utf-8", "replace")
                raise imaplib.IMAP4.abort(
                    f"{host}:{port} refused the connection: {text}"
                ) from exc
            # imaplib raises error(welcome) or error(None) for a greeting that is
            # not IMAP's, e.g. a POP3 "+OK" taken for a continuation.
            raise ProtocolError(
                f"{host}:{port} did not greet like an IMAP server ({exc}): is it "
                "the IMAP port, and is the TLS mode (starttls) right?"
            ) from exc

    # --- authentication -----------------------------------------------------

    def _login(self) -> None:
        """Authenticate; on a rejection refresh the token once and try again."""
        token = self._tokens.token()
        try:
            authenticate(self, token)
            return
        except TooManyConnections:
            raise
        except AuthenticationFailed as exc:
            first = exc
        fresh = self._tokens.token(force_refresh=True)
        if fresh == token:
            raise first
        _log.debug(
            "token for %s rejected (status %s); retrying with a refreshed token",
            self._user,
            first.status,
        )
        if self.server_hung_up() is not None:
            self._drop()
            self._greet()
            if self._use_starttls:
                self._negotiate_tls()
        authenticate(self, fresh)


def _lost(message: str, *, unknown: bool = False) -> IMAPConnectionLost:
    # The message may quote the server (a BYE's text): never a secret in it.
    return IMAPConnectionLost(scrub(message), outcome_unknown=unknown)
