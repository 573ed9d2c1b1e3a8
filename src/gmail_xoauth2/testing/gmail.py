"""``FakeGmail``: the fake Google plus IMAP, POP3 and SMTP servers on loopback."""

from __future__ import annotations

import functools
import itertools
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._tokens import Clock, utcnow
from ._control import control_reply
from ._google_http import CONTROL_PREFIX
from ._mailstore import INBOX, MailStore
from ._pki import PKI, make_pki
from ._server import Backend, FaultAction, LineServer, TranscriptLine
from .google import FakeGoogle
from .imap_server import FakeIMAPServer
from .pop_server import FakePOPServer
from .smtp_server import FakeSMTPServer

if TYPE_CHECKING:
    from ..auth import GoogleTokenProvider

__all__ = ["FakeGmail"]


class FakeGmail:
    """Gmail on loopback: OAuth endpoints, IMAP (993-style), POP3 (995-style),
    SMTP (465-style implicit TLS) and submission (587-style STARTTLS).

    Every port is chosen by the OS; a CA and a server certificate are made at
    start-up in a private temporary directory, removed on :meth:`close`.
    Tokens are minted and checked by the fake Google (:attr:`google`), so an
    unknown, expired, revoked, wrong-scope or other-user token is refused
    exactly as Gmail refuses a bad one.

    Args:
        users: the accounts (each gets Gmail's folders).
        clock: the time; a ``ManualClock`` ends sessions the moment it passes
            their token's expiry. None means the real clock.
        host: the loopback address to bind (``127.0.0.1``, ``::1``).
        aliases: per user, the other From addresses Gmail lets them send as;
            any other From is rewritten to the user's address.
        port_base: listen on fixed ports instead: IMAP on ``port_base``, POP3
            on +1, SMTP on +2, submission on +3 and the fake Google on +4.

    Example::

        with FakeGmail() as gmail:
            token = gmail.mint_token("alice@example.com")
            smtp = smtplib.SMTP_SSL(gmail.host, gmail.smtp_port,
                                    context=gmail.ssl_context())
    """

    def __init__(
        self,
        users: Iterable[str] = ("alice@example.com", "bob@example.com"),
        *,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        aliases: Mapping[str, Iterable[str]] | None = None,
        port_base: int | None = None,
    ) -> None:
        if port_base is not None and not 0 < port_base <= 65535 - 4:
            raise ValueError("port_base must leave room for five ports below 65536")
        self._port_base = port_base
        self.users: tuple[str, ...] = tuple(users)
        self.clock: Clock = clock if clock is not None else utcnow
        self.host = host
        self._aliases = {user: tuple(addrs) for user, addrs in (aliases or {}).items()}
        self._lock = threading.Lock()
        self._files = itertools.count(1)
        self._tempdir: Path | None = None
        self._pki: PKI | None = None
        self._google: FakeGoogle | None = None
        self._backend: Backend | None = None
        self._servers: dict[str, LineServer] = {}

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakeGmail:
        """Make the certificates, bind every port and start serving; return self."""
        with self._lock:
            if self._backend is not None:
                raise RuntimeError("FakeGmail is already started")
            try:
                self._start()
            except BaseException:
                self._stop()
                raise
        return self

    def _start(self) -> None:
        self._tempdir = Path(tempfile.mkdtemp(prefix="fake-gmail-"))
        self._pki = make_pki(self._tempdir, hosts=(self.host,))
        self._google = FakeGoogle(
            clock=self.clock, host=self.host, port=self._port(4)
        ).start()
        for user in self.users:
            self._google.add_user(user)
        self._google._control = functools.partial(control_reply, self)
        store = MailStore(self.users, clock=self.clock)
        self._backend = Backend(
            self._google, store, clock=self.clock, aliases=self._aliases
        )
        context = self._pki.server_context()
        self._servers["imap"] = FakeIMAPServer(
            self._backend, ssl_context=context, host=self.host, port=self._port(0)
        )
        self._servers["pop"] = FakePOPServer(
            self._backend, ssl_context=context, host=self.host, port=self._port(1)
        )
        self._servers["smtp"] = FakeSMTPServer(
            self._backend, ssl_context=context, host=self.host, port=self._port(2)
        )
        self._servers["submission"] = FakeSMTPServer(
            self._backend,
            ssl_context=context,
            implicit_tls=False,
            host=self.host,
            port=self._port(3),
        )
        for server in self._servers.values():
            server.start()

    def _port(self, offset: int) -> int:
        return 0 if self._port_base is None else self._port_base + offset

    def close(self) -> None:
        """Stop every server, join every thread and remove the certificates.

        Raises:
            Exception: the first error raised inside a server, if any, so
                tests see failures of the fake itself.
        """
        with self._lock:
            errors = self._stop()
        if errors:
            raise errors[0]

    def _stop(self) -> list[BaseException]:
        errors: list[BaseException] = []
        if self._backend is not None:
            self._backend.close()
        for server in self._servers.values():
            try:
                server.close()
            except Exception as exc:
                errors.append(exc)
        self._servers = {}
        if self._google is not None:
            self._google.close()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
        self._backend = None
        self._google = None
        self._pki = None
        self._tempdir = None
        return errors

    def __enter__(self) -> FakeGmail:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._backend is None:
            return f"FakeGmail(users={list(self.users)}, not started)"
        ports = ", ".join(f"{name}={s.port}" for name, s in self._servers.items())
        return f"FakeGmail({self.host}, {ports})"

    # -- where things are ----------------------------------------------------------

    def _server(self, name: str) -> LineServer:
        server = self._servers.get(name)
        if server is None:
            if self._backend is None:
                raise RuntimeError("FakeGmail is not started; call start() first")
            raise RuntimeError(f"the fake {name} server is not available")
        return server

    @property
    def backend(self) -> Backend:
        """The state the servers share (mail store, faults, transcript)."""
        if self._backend is None:
            raise RuntimeError("FakeGmail is not started; call start() first")
        return self._backend

    @property
    def google(self) -> FakeGoogle:
        """The fake Google OAuth endpoints."""
        if self._google is None:
            raise RuntimeError("FakeGmail is not started; call start() first")
        return self._google

    @property
    def imap_port(self) -> int:
        """IMAP over implicit TLS, like imap.gmail.com:993."""
        return self._server("imap").port

    @property
    def pop_port(self) -> int:
        """POP3 over implicit TLS, like pop.gmail.com:995."""
        return self._server("pop").port

    @property
    def smtp_port(self) -> int:
        """SMTP over implicit TLS, like smtp.gmail.com:465."""
        return self._server("smtp").port

    @property
    def submission_port(self) -> int:
        """SMTP with STARTTLS, like smtp.gmail.com:587."""
        return self._server("submission").port

    @property
    def token_uri(self) -> str:
        """The fake Google's token endpoint."""
        return self.google.token_uri

    @property
    def control_url(self) -> str:
        """Where another process drives this fake (loopback only).

        ``POST <control_url>/expire-tokens``, ``/end-sessions`` or ``/deliver``
        with a JSON object; ``gmail-xoauth2 fake-gmail expire-tokens`` and its
        siblings do it from a shell.
        """
        return self.google.url + CONTROL_PREFIX.rstrip("/")

    @property
    def ca_file(self) -> str:
        """The CA certificate (PEM) that signed the servers' certificate."""
        if self._pki is None:
            raise RuntimeError("FakeGmail is not started; call start() first")
        return str(self._pki.ca_file)

    def ssl_context(self) -> ssl.SSLContext:
        """A new client TLS context that trusts the fake's CA (hostnames checked)."""
        if self._pki is None:
            raise RuntimeError("FakeGmail is not started; call start() first")
        return self._pki.client_context()

    # -- tokens ------------------------------------------------------------------

    def mint_token(self, user: str, ttl: float = 3599) -> str:
        """A new access token for ``user`` (mail scope), valid ``ttl`` seconds."""
        return self.google.mint_access_token(user, ttl=ttl)

    def expire_tokens(self, user: str) -> None:
        """Expire ``user``'s access tokens now; their sessions end at once."""
        self.google.expire_tokens(user)
        for conn in self.backend.live_connections():
            grant = conn.grant
            if grant is not None and grant.user == user.lower():
                conn.end_session("expired")

    def revoke(self, user: str) -> None:
        """Revoke ``user``'s tokens (refresh and access); open sessions go on."""
        self.google.revoke(user)

    def token_provider(self, user: str, **kwargs: Any) -> GoogleTokenProvider:
        """A real ``GoogleTokenProvider`` for ``user`` against the fake Google.

        The fake writes a new authorized-user file (client id and secret, a
        new refresh token, token URI) in its private directory for each call;
        ``kwargs`` go to the provider, whose clock is the fake's unless given.
        """
        from ..auth import GoogleTokenProvider

        if self._tempdir is None:
            raise RuntimeError("FakeGmail is not started; call start() first")
        path = self._tempdir / f"authorized-user-{next(self._files)}.json"
        self.google.write_authorized_user_file(path, user)
        kwargs.setdefault("clock", self.clock)
        return GoogleTokenProvider.from_authorized_user_file(path, **kwargs)

    # -- sessions, mail, faults, transcript --------------------------------------------

    def end_sessions(self, user: str, protocol: str | None = None) -> int:
        """End ``user``'s sessions (Gmail's session-expired close); return how many.

        Args:
            user: whose sessions.
            protocol: ``"imap"``, ``"pop"`` or ``"smtp"``; None for all.
        """
        return self.backend.end_sessions(user, protocol)

    def deliver(self, user: str, message: bytes, mailbox: str = INBOX) -> int:
        """Deliver a raw message to ``user``'s ``mailbox``; return its UID there."""
        return self.backend.store.deliver(user, message, mailbox)

    def messages(self, user: str, mailbox: str = INBOX) -> list[bytes]:
        """The raw messages in ``user``'s ``mailbox``, in UID order."""
        return self.backend.store.messages(user, mailbox)

    def fail_next(
        self,
        protocol: str,
        command: str,
        action: FaultAction,
        *,
        line: str | bytes | None = None,
        count: int = 1,
    ) -> None:
        """Make the next ``count`` matching commands fail.

        ``action`` is ``"drop_before"`` (hang up on receiving the command),
        ``"drop_after"`` (run it fully, then hang up without replying) or
        ``"reply"`` (answer ``line`` instead, e.g. ``"* BYE System Error"``
        or ``"NO [ALERT] Too many simultaneous connections. (Failure)"``).
        ``command`` is the verb (``"AUTHENTICATE"``, ``"DATA"``, ``"RETR"``),
        ``"GREETING"`` or ``"*"``. See :meth:`Faults.fail_next`.
        """
        self.backend.faults.fail_next(protocol, command, action, line=line, count=count)

    def hold_next(self, protocol: str, command: str) -> threading.Event:
        """Hold the reply to the next matching command until the event is set."""
        return self.backend.faults.hold_next(protocol, command)

    def transcript(
        self, protocol: str | None = None, conn_id: int | None = None
    ) -> list[TranscriptLine]:
        """Every line on the wire so far (without CRLF), both ways, in order."""
        return self.backend.transcript(protocol, conn_id)

    def connection_count(self, protocol: str | None = None) -> int:
        """How many connections were accepted so far (for ``protocol``, or all)."""
        return self.backend.connection_count(protocol)
