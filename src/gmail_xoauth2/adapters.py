"""imap_tools' MailBox API on :class:`gmail_xoauth2.IMAP4`: OAuth login and reconnects.

:class:`GmailMailBox` is an ``imap_tools.BaseMailBox`` whose connection is an
:class:`~gmail_xoauth2.IMAP4`, so imap_tools' whole API (``fetch``,
``folder.set``, ``flag``, ``move``, ``delete``, ``idle``...) runs on a
connection that refreshes its token and replaces the session when Gmail ends
it. imap_tools is an optional dependency (``pip install
'gmail-xoauth2[imap-tools]'``): this module imports it when it is itself
imported, and ``import gmail_xoauth2`` never does.

IMAPClient has no adapter: it sends FETCH, SEARCH, EXPUNGE and IDLE through
imaplib's private ``_command``/``send``, past the command boundary where
IMAP4 reconnects, and replaces the connection's debug logger with its own
(see ``docs/recipes/imapclient.rst``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, Unpack

from ._backoff import Backoff
from ._constants import GMAIL_IMAP_HOST
from ._limits import Limits
from ._tokens import Clock, TokenSource
from .errors import ConfigurationError
from .imap import IMAP4

if TYPE_CHECKING:
    import ssl

__all__ = ["GmailIdleManager", "GmailMailBox", "IMAP4Options"]

_INSTALL = "pip install 'gmail-xoauth2[imap-tools]'"


class _MissingImapTools:
    """Stands in for imap_tools' classes when it is not installed."""

    def __init__(self, *args: object, **kwargs: object) -> NoReturn:
        raise ConfigurationError(
            f"{type(self).__name__} needs imap_tools, which is not installed: "
            f"run `{_INSTALL}`"
        )


if TYPE_CHECKING:
    from imap_tools import BaseMailBox
    from imap_tools.idle import IdleManager
else:
    try:
        from imap_tools import BaseMailBox
        from imap_tools.idle import IdleManager
    except ImportError:  # the [imap-tools] extra is not installed
        BaseMailBox = IdleManager = _MissingImapTools


class IMAP4Options(TypedDict, total=False):
    """What :class:`GmailMailBox` passes on to :class:`~gmail_xoauth2.IMAP4`.

    Each keyword means what it means there; the defaults are IMAP4's.
    """

    starttls: bool
    ssl_context: ssl.SSLContext | None
    timeout: float | None
    mechanism: str
    reconnect: bool
    clock: Clock | None
    backoff: Backoff | None
    limits: Limits | None
    compress: bool


class GmailIdleManager(IdleManager):
    """imap_tools' ``mailbox.idle`` on :meth:`IMAP4.idle <gmail_xoauth2.IMAP4.idle>`.

    imap_tools' own manager reads the socket itself, which bypasses IMAP4's
    buffer and reconnects; this one runs each wait as one IDLE exchange of
    IMAP4's, which renews IDLE, replaces a session the server ended and reports
    mail that arrived meanwhile. ``poll()`` and ``wait()`` return the untagged
    responses as imap_tools does, as raw lines (``[b'* 7 EXISTS']``).
    ``start()`` and ``stop()`` only mark the span in which ``poll()`` may be
    called: IDLE is on the wire during ``poll()`` alone, so a session is never
    left idling between two polls.
    """

    def start(self) -> bytes:
        """Begin an IDLE span (nothing is sent until :meth:`poll`)."""
        return b"+ idling"

    def stop(self) -> tuple[tuple[str, list[Any]], list[bytes]]:
        """End the IDLE span."""
        return ("OK", [b"IDLE terminated"]), []

    def poll(self, timeout: float | None) -> list[bytes]:
        """The responses that arrive within ``timeout`` seconds (None: until one does).

        Returns the first response and those that follow it within a tenth of
        a second, or ``[]`` when none came in time.
        """
        if timeout is not None and timeout > 29 * 60:
            # imap_tools' own bound (RFC 2177's 29 minutes), kept for parity.
            raise ValueError("timeout must be at most 29 minutes (RFC 2177)")
        client: IMAP4 = self.mailbox.client
        with client.idle(duration=timeout) as idler:
            return [_raw_line(typ, data) for typ, data in idler.burst()]


def _raw_line(typ: str, data: list[Any]) -> bytes:
    """An untagged response as imap_tools' IDLE returns it (``b'* 7 EXISTS'``)."""
    parts: list[bytes] = []
    for fragment in data:
        if isinstance(fragment, tuple):  # (b'1 (BODY[] {3}', b'abc')
            parts.extend(fragment)
        elif fragment:
            parts.append(fragment)
    text = b"".join(parts)
    head, _, rest = text.partition(b" ")
    if head.isdigit():  # "* 7 EXISTS", "* 3 FETCH (FLAGS ...)" (RFC 3501 7.3, 7.4)
        return b" ".join(p for p in (b"*", head, typ.encode(), rest) if p)
    return b" ".join(p for p in (b"*", typ.encode(), text) if p)


class GmailMailBox(BaseMailBox):
    """imap_tools' ``MailBox`` on an :class:`~gmail_xoauth2.IMAP4`.

    The constructor connects and logs in with OAuth (one AUTHENTICATE, the
    token from ``tokens``), then selects ``initial_folder`` as imap_tools'
    ``login()`` does. Every ``MailBox`` method works; behind them, the
    connection is IMAP4's: the token is refreshed before it expires, and when
    Gmail ends the session the connection is replaced, the folder selected
    again and the command repeated when that is safe (searches, fetches, flag
    stores). So a loop over ``fetch()`` goes on across a session end and sees
    every message once. MOVE, COPY, EXPUNGE, APPEND and folder changes are
    never sent twice: when the session ends while one is in flight,
    :class:`~gmail_xoauth2.IMAPConnectionLost` (``outcome_unknown=True``) is
    raised and the mailbox stays usable.

    ``login()``, ``xoauth2()`` and ``login_utf8()`` are kept so code written
    for ``MailBox`` runs unchanged: the connection is already authenticated,
    so they send nothing but the SELECT of ``initial_folder`` (the password or
    token given is not used), and refuse another user.

    ::

        with GmailMailBox("you@gmail.com", tokens) as mailbox:
            for msg in mailbox.fetch(AND(seen=False), mark_seen=False):
                print(msg.subject)

    Args:
        user: the Gmail address.
        tokens: a token provider or a zero-argument callable returning a token.
        host: the server.
        port: the port; 993 is implicit TLS.
        initial_folder: the folder to select after login; None selects none.
        options: :class:`~gmail_xoauth2.IMAP4`'s keyword arguments
            (``ssl_context``, ``timeout``, ``mechanism``, ``backoff``...).

    Raises:
        ConfigurationError: imap_tools is not installed.
        AuthenticationFailed: the token was rejected, also after one refresh
            (an ``imaplib.IMAP4.error`` too); and the rest of what
            :class:`~gmail_xoauth2.IMAP4` raises.
    """

    idle_manager_class = GmailIdleManager
    client: IMAP4

    def __init__(
        self,
        user: str,
        tokens: TokenSource,
        host: str = GMAIL_IMAP_HOST,
        port: int = 993,
        *,
        initial_folder: str | None = "INBOX",
        **options: Unpack[IMAP4Options],
    ) -> None:
        self._connect = functools.partial(IMAP4, user, tokens, host, port, **options)
        super().__init__()
        # imap_tools keeps the login's tagged reply; IMAP4 logged in already.
        self.login_result = (  # type: ignore[assignment]  # imap_tools says None
            "OK",
            [f"{self.client.user} authenticated ({self.client.mechanism})".encode()],
        )
        if initial_folder is not None:
            self.folder.set(initial_folder)

    def _get_mailbox_client(self) -> IMAP4:
        # How imap_tools chooses the connection: its MailBox, MailBoxStartTls
        # and MailBoxUnencrypted override this method and only this one.
        return self._connect()

    def __repr__(self) -> str:
        return f"<gmail_xoauth2.adapters.GmailMailBox on {self.client!r}>"

    def login(
        self, username: str, password: str, initial_folder: str | None = "INBOX"
    ) -> GmailMailBox:
        """Select ``initial_folder``; the constructor logged in with OAuth already."""
        return self._logged_in(username, initial_folder)

    def login_utf8(
        self, username: str, password: str, initial_folder: str | None = "INBOX"
    ) -> GmailMailBox:
        """Select ``initial_folder``; the constructor logged in with OAuth already."""
        return self._logged_in(username, initial_folder)

    def xoauth2(
        self, username: str, access_token: str, initial_folder: str | None = "INBOX"
    ) -> GmailMailBox:
        """Select ``initial_folder``; the constructor logged in with OAuth already.

        The token given is not sent: IMAP4 gets its tokens from ``tokens``
        (and a fresh one after each session end).
        """
        return self._logged_in(username, initial_folder)

    def _logged_in(self, username: str, initial_folder: str | None) -> GmailMailBox:
        if username.lower() != self.client.user.lower():
            raise ConfigurationError(
                f"this GmailMailBox is logged in as {self.client.user}, not "
                f"{username}; open another GmailMailBox for {username}"
            )
        if initial_folder is not None:
            self.folder.set(initial_folder)
        return self
