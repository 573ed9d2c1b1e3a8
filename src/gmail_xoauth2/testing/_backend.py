"""The state the fake servers share: token checks, sessions, faults, transcript.

One :class:`Backend` serves the IMAP, POP3 and SMTP servers. It checks SASL
responses against the fake Google, keeps the registry of authenticated
sessions (ending them when their token expires on the clock), holds the fault
controls tests arm, and records every line both ways.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

from .. import sasl
from .._tokens import Clock, utcnow
from ..errors import ProtocolError
from ._mailstore import MailStore

if TYPE_CHECKING:
    from ._server import Connection

__all__ = [
    "AuthFailure",
    "Backend",
    "FaultAction",
    "Faults",
    "Grant",
    "TokenInfoLike",
    "TokenLookup",
    "TranscriptLine",
]

FaultAction = Literal["drop_before", "drop_after", "reply"]
_ACTIONS = ("drop_before", "drop_after", "reply")


@dataclass(frozen=True)
class TranscriptLine:
    """One line on the wire.

    Attributes:
        protocol: ``"imap"``, ``"pop"`` or ``"smtp"`` (465 and 587 alike).
        conn_id: the connection's number, unique across the backend, from 1.
        direction: ``"C"`` (client to server) or ``"S"`` (server to client).
        data: the line without its CRLF, or the raw bytes of a literal.
    """

    protocol: str
    conn_id: int
    direction: Literal["C", "S"]
    data: bytes


class TokenInfoLike(Protocol):
    """What the backend needs to know about an access token."""

    @property
    def email(self) -> str: ...

    @property
    def scopes(self) -> Collection[str]: ...

    @property
    def expires_at(self) -> datetime: ...


class TokenLookup(Protocol):
    """The fake Google, as the backend sees it."""

    def lookup(self, token: str) -> TokenInfoLike | None: ...


@dataclass(frozen=True)
class Grant:
    """A successful SASL authentication.

    Attributes:
        user: the mailbox owner, as the store spells it (lower case).
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        expires_at: when the token expires; the session ends then.
    """

    user: str
    mechanism: str
    expires_at: datetime | None


@dataclass(frozen=True)
class AuthFailure:
    """A failed SASL authentication. Never shown on the wire beyond Gmail's lines.

    Attributes:
        reason: why, for test diagnostics (``"unknown token"``, ``"expired"``,
            ``"wrong scope"``, ``"other user"``, ``"no such user"``,
            ``"malformed"``, ``"unsupported mechanism"``).
        malformed: the response could not be decoded at all (SMTP answers
            ``501 5.5.2 Cannot Decode response`` to that).
    """

    reason: str
    malformed: bool = False


@dataclass
class _Fault:
    protocol: str
    command: str
    action: FaultAction
    line: bytes | None
    remaining: int


def _matches(armed: str, verb: str) -> bool:
    # "*" is any command; the greeting is not a command.
    return armed == verb or (armed == "*" and verb != "GREETING")


class Faults:
    """Faults armed by tests and consulted by the servers before every command.

    Commands are matched case-insensitively on the verb the protocol server
    names (``"AUTH"``, ``"DATA"``, ``"RETR"``, ``"APPEND"``, ``"UID FETCH"``...),
    or the pseudo-command ``"GREETING"`` for the server's first line; ``"*"``
    matches any command but the greeting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._holds: list[tuple[str, str, threading.Event]] = []
        self._released = False

    def fail_next(
        self,
        protocol: str,
        command: str,
        action: FaultAction,
        *,
        line: str | bytes | None = None,
        count: int = 1,
    ) -> None:
        """Arm a fault for the next ``count`` matching commands.

        Args:
            protocol: ``"imap"``, ``"pop"`` or ``"smtp"``.
            command: the command verb, ``"GREETING"`` or ``"*"``.
            action: ``"drop_before"`` closes the connection on receiving the
                command, without running it; ``"drop_after"`` runs it fully
                (continuation lines included) and closes without sending its
                reply; ``"reply"`` answers ``line`` instead of running it.
            line: the reply for ``"reply"``, without CRLF (IMAP adds the tag
                unless it starts with ``*``).
            count: how many commands it applies to.

        Raises:
            ValueError: an unknown action, or ``"reply"`` without a line.
        """
        if action not in _ACTIONS:
            raise ValueError(f"action must be one of {_ACTIONS}, not {action!r}")
        if action == "reply" and line is None:
            raise ValueError('action "reply" needs the line to answer')
        if count < 1:
            raise ValueError("count must be at least 1")
        data = line.encode() if isinstance(line, str) else line
        with self._lock:
            self._faults.append(
                _Fault(protocol.lower(), command.upper(), action, data, count)
            )

    def hold_next(self, protocol: str, command: str) -> threading.Event:
        """Hold the reply to the next matching command until the event is set.

        The command runs, and continuation lines go out, but its reply waits.
        Closing the server sets every event still held.
        """
        event = threading.Event()
        with self._lock:
            if self._released:
                event.set()
            self._holds.append((protocol.lower(), command.upper(), event))
        return event

    def take(
        self, protocol: str, command: str
    ) -> tuple[_Fault | None, threading.Event | None]:
        """Consume the fault and the hold (if any) armed for this command."""
        verb = command.upper()
        fault: _Fault | None = None
        hold: threading.Event | None = None
        with self._lock:
            for armed in self._faults:
                if armed.protocol == protocol and _matches(armed.command, verb):
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._faults.remove(armed)
                    fault = armed
                    break
            for entry in self._holds:
                if entry[0] == protocol and _matches(entry[1], verb):
                    self._holds.remove(entry)
                    hold = entry[2]
                    break
        return fault, hold

    def release_all(self) -> None:
        """Set every held event and forget every armed fault."""
        with self._lock:
            self._released = True
            holds = [event for _, _, event in self._holds]
            self._holds.clear()
            self._faults.clear()
        for event in holds:
            event.set()


class Backend:
    """What the IMAP, POP and SMTP servers share.

    Args:
        google: the fake Google (anything with ``lookup(token)``).
        store: the mailboxes.
        clock: the time; a clock with ``on_advance`` (``ManualClock``) ends
            sessions the moment it passes their token's expiry.
        aliases: extra From addresses each user may send as.
        session_limits: the most authenticated sessions per user, by protocol
            (Gmail allows 15 IMAP connections per account).
    """

    def __init__(
        self,
        google: TokenLookup,
        store: MailStore,
        *,
        clock: Clock = utcnow,
        aliases: Mapping[str, Iterable[str]] | None = None,
        session_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.google = google
        self.store = store
        self.clock = clock
        self.faults = Faults()
        self.aliases: dict[str, frozenset[str]] = {
            user.lower(): frozenset(a.lower() for a in addrs)
            for user, addrs in (aliases or {}).items()
        }
        self.session_limits = dict(
            session_limits if session_limits is not None else {"imap": 15}
        )
        self.error_challenge = sasl.encode_error_challenge()
        self._lock = threading.Lock()
        self._transcript: list[TranscriptLine] = []
        self._conn_ids = 0
        self._counts: dict[str, int] = {}
        self._live: list[Connection] = []
        self._closed = False
        on_advance = getattr(clock, "on_advance", None)
        if callable(on_advance):
            on_advance(self._on_clock)

    # -- authentication ---------------------------------------------------------

    def authenticate(
        self, mechanism: str, response: bytes | str
    ) -> Grant | AuthFailure:
        """Check a base64 SASL initial response against the fake Google.

        Unknown, expired, revoked, wrong-scope and other-user tokens all fail
        alike; the reason is only for tests.
        """
        mech = mechanism.upper()
        if mech not in ("XOAUTH2", "OAUTHBEARER"):
            return AuthFailure("unsupported mechanism")
        try:
            parsed = sasl.parse_client_response(mech, response)
        except ProtocolError:
            return AuthFailure("malformed", malformed=True)
        info = self.google.lookup(parsed.token)
        if info is None:
            return AuthFailure("unknown token")
        if info.email.lower() != parsed.user.lower():
            return AuthFailure("other user")
        scopes = info.scopes.split() if isinstance(info.scopes, str) else info.scopes
        if sasl.MAIL_SCOPE not in scopes:
            return AuthFailure("wrong scope")
        expires_at = info.expires_at
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= self.clock():
            return AuthFailure("expired")
        if not self.store.has_user(parsed.user):
            return AuthFailure("no such user")
        return Grant(parsed.user.lower(), mech, expires_at)

    def can_send_as(self, user: str, address: str) -> bool:
        """Whether ``user`` may send with From ``address`` (itself or an alias)."""
        address = address.lower()
        return address == user.lower() or address in self.aliases.get(
            user.lower(), frozenset()
        )

    # -- connections and sessions -------------------------------------------------

    def _connection_opened(self, conn: Connection) -> int:
        with self._lock:
            self._conn_ids += 1
            self._counts[conn.protocol] = self._counts.get(conn.protocol, 0) + 1
            self._live.append(conn)
            return self._conn_ids

    def _connection_closed(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._live:
                self._live.remove(conn)

    def connection_count(self, protocol: str | None = None) -> int:
        """How many connections were accepted so far (for ``protocol``, or all)."""
        with self._lock:
            if protocol is None:
                return sum(self._counts.values())
            return self._counts.get(protocol, 0)

    def live_connections(self, protocol: str | None = None) -> list[Connection]:
        """The connections open now."""
        with self._lock:
            return [c for c in self._live if protocol in (None, c.protocol)]

    def open_session(self, conn: Connection, grant: Grant) -> bool:
        """Register an authenticated session; False when the user has too many."""
        limit = self.session_limits.get(conn.protocol)
        with self._lock:
            if limit is not None:
                count = sum(
                    1
                    for c in self._live
                    if c.protocol == conn.protocol
                    and c.grant is not None
                    and c.grant.user == grant.user
                )
                if count >= limit:
                    return False
            conn.grant = grant
        return True

    def end_sessions(
        self, user: str, protocol: str | None = None, *, text: str | None = None
    ) -> int:
        """End every session of ``user`` as Gmail ends expired ones; return how many."""
        ended = 0
        for conn in self.live_connections(protocol):
            grant = conn.grant
            if grant is not None and grant.user == user.lower():
                conn.end_session("ended", text)
                ended += 1
        return ended

    def _on_clock(self, now: datetime) -> None:
        if self._closed:
            return
        for conn in self.live_connections():
            conn.check_time(now)

    # -- transcript -------------------------------------------------------------

    def record(
        self, protocol: str, conn_id: int, direction: Literal["C", "S"], data: bytes
    ) -> None:
        """Add one line to the transcript."""
        with self._lock:
            self._transcript.append(TranscriptLine(protocol, conn_id, direction, data))

    def transcript(
        self, protocol: str | None = None, conn_id: int | None = None
    ) -> list[TranscriptLine]:
        """Every line so far, in order, optionally for one protocol or connection."""
        with self._lock:
            return [
                line
                for line in self._transcript
                if protocol in (None, line.protocol) and conn_id in (None, line.conn_id)
            ]

    def close(self) -> None:
        """Release held replies and stop reacting to the clock."""
        self._closed = True
        self.faults.release_all()
