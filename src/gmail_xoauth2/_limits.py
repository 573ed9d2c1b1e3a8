"""How much a server may send: the bounds on every reply, and a meter for one reply.

Free of I/O: the protocol drivers (sync today) charge what they receive to a
:class:`ReplyMeter` and stop when a bound is passed, so a broken or hostile
server ends in bounded time and memory with a typed error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigurationError, LimitExceeded, Timeout

__all__ = ["DEFAULT_LIMITS", "SASL_ROUNDS", "Limits", "ReplyMeter"]

_MIB = 1024 * 1024

SASL_ROUNDS = 2
"""Continuations answered in one SASL exchange: the initial response when the
server asks for it, then the error challenge. A third ``+``/``334`` is a
ProtocolError: no mechanism this library speaks has more rounds."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a server may send, per connection.

    Every reply is bounded in bytes and in time, so a server that sends
    something endless, huge or trickling ends the command with
    :class:`~gmail_xoauth2.LimitExceeded` (a ProtocolError: too large) or
    :class:`~gmail_xoauth2.Timeout` (too slow) and the connection is closed
    (the next command opens a new one). The defaults are far above anything
    Gmail sends; pass a smaller value to bound memory more tightly.

    Attributes:
        line_bytes: the longest line of a reply. Default 16 MiB: the longest
            line Gmail sends is a SEARCH reply, and ``UID SEARCH ALL`` in a
            mailbox of 1,000,000 messages with 8-digit UIDs is about 9 MB.
        literal_bytes: the largest IMAP literal (one message body) and the
            largest POP3 multi-line reply (RETR, TOP, LIST, UIDL). Default
            64 MiB: Gmail receives messages of up to 50 MB and stores APPENDs
            of up to 35,651,584 bytes (``APPENDLIMIT``).
        response_bytes: everything one IMAP command receives (its untagged
            lines and literals), and an SMTP multi-line reply. Default 1 GiB;
            larger fetches must be split into batches.
        response_lines: the untagged responses of one IMAP command, and the
            lines of a POP3 multi-line or SMTP reply. Default 2,000,000:
            ``FETCH 1:* (FLAGS)`` in a mailbox of 1,000,000 messages sends
            1,000,000.
        response_seconds: how long one reply may take from its first byte to
            its last, however steadily bytes arrive (the socket ``timeout``
            only bounds silences). Default 900 s: a 64 MiB message at
            1 Mbit/s takes about 540 s. ``None`` disables it.
    """

    line_bytes: int = 16 * _MIB
    literal_bytes: int = 64 * _MIB
    response_bytes: int = 1024 * _MIB
    response_lines: int = 2_000_000
    response_seconds: float | None = 900.0

    def __post_init__(self) -> None:
        for name in ("line_bytes", "literal_bytes", "response_bytes", "response_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"Limits.{name} must be a positive int, not {value!r}"
                )
        seconds = self.response_seconds
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not seconds > 0
        ):
            raise ConfigurationError(
                "Limits.response_seconds must be a positive number of seconds or "
                f"None, not {seconds!r}"
            )


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class ReplyMeter:
    """What one reply has cost so far, against the connection's :class:`Limits`.

    ``start()`` when a command is sent (or a greeting awaited); ``charge()``
    every chunk received and ``count()`` every line or response stored;
    ``recv_timeout()`` is the socket timeout to use for the next read, so that
    the reply's deadline holds even while bytes keep arriving.
    """

    limits: Limits
    where: str = "the server"
    monotonic: Callable[[], float] = field(default=time.monotonic, repr=False)
    received: int = 0
    lines: int = 0
    deadline: float | None = None

    def start(self) -> None:
        """A new reply begins: reset the counters and the deadline."""
        self.received = 0
        self.lines = 0
        seconds = self.limits.response_seconds
        self.deadline = None if seconds is None else self.monotonic() + seconds

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` received for this reply."""
        self.received += nbytes
        if self.received > self.limits.response_bytes:
            raise self.too_large(
                f"a reply of more than {self.limits.response_bytes} bytes",
                "response_bytes",
            )

    def count(self, n: int = 1) -> None:
        """Count ``n`` lines or responses stored for this reply."""
        self.lines += n
        if self.lines > self.limits.response_lines:
            raise self.too_large(
                f"a reply of more than {self.limits.response_lines} lines",
                "response_lines",
            )

    def check_line(self, length: int) -> None:
        """Raise if a line of ``length`` bytes (so far) is over the bound."""
        if length > self.limits.line_bytes:
            raise self.too_large(
                f"a line of more than {self.limits.line_bytes} bytes", "line_bytes"
            )

    def check_literal(self, size: int) -> None:
        """Raise if a literal or message announced as ``size`` bytes is too large."""
        if size > self.limits.literal_bytes:
            raise self.too_large(
                f"a literal of {size} bytes (more than {self.limits.literal_bytes})",
                "literal_bytes",
            )

    def recv_timeout(self, timeout: float | None) -> float | None:
        """The socket timeout for the next read: ``timeout`` or less.

        Raises:
            Timeout: the reply's deadline has passed.
        """
        deadline = self.deadline
        if deadline is None:
            return timeout
        left = deadline - self.monotonic()
        if left <= 0:
            raise self.too_slow()
        return left if timeout is None or left < timeout else timeout

    def expired(self) -> bool:
        """True when the reply's deadline has passed."""
        return self.deadline is not None and self.monotonic() >= self.deadline

    def too_large(self, what: str, knob: str) -> LimitExceeded:
        return LimitExceeded(
            f"{self.where} sent {what} (Limits.{knob}); the connection was closed"
        )

    def too_slow(self) -> Timeout:
        return Timeout(
            f"{self.where} did not finish its reply within "
            f"{self.limits.response_seconds}s (Limits.response_seconds); the "
            "connection was closed"
        )
