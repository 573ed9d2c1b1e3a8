"""SMTP decisions free of I/O, shared by the sync and asyncio SMTP classes.

What a server's reply means for the connection (the session ended, a refusal
for too many connections), what a lost connection means at each stage of a
send, and the errors that say so. Neither driver decides any of this itself:

- before a message's final dot, a connection that died or a session the server
  ended (421, Gmail's ``451 4.4.2 ... closing connection``) means "try once
  more on a new connection" (internal :class:`Dead`); twice is
  :class:`ConnectionLost` and the message was not sent;
- after the final dot, the server's reply is the verdict on the message (an
  error reply is the I/O library's own refusal, never retried), and a lost
  connection or a broken, too large or too slow reply is
  :class:`DeliveryUnknown`: the message is never sent again.
"""

from __future__ import annotations

from ._mailconn import Dead, too_many_message
from ._redact import scrub
from ._rejection import one_line
from ._smtp_errors import (
    SMTPConnectionLost,
    SMTPDeliveryUnknown,
    SMTPInsecureConnection,
    SMTPTimeout,
    SMTPTooManyConnections,
)
from .errors import ProtocolError

__all__ = [
    "after_lost",
    "bad_certificate",
    "delivery_unknown",
    "ends_session",
    "is_too_many",
    "no_starttls",
    "not_sent",
    "quote",
    "refusal",
    "starttls_refused",
    "timed_out",
]

# Gmail: "421 4.7.0 Try again later, closing connection. (... too many
# simultaneous connections ...)"; the IMAP and POP texts say the same.
_TOO_MANY = "too many simultaneous connections"
# The most of a server's text an exception or a log line quotes.
_QUOTED = 1000


def quote(value: bytes | str) -> str:
    """A server's text as an exception or a log line may quote it: decoded,
    scrubbed of every secret (a refusal may quote the AUTH line), on one line
    (a reply's lines are joined), cut short."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = one_line(scrub(text))
    return text if len(text) <= _QUOTED else text[:_QUOTED] + "..."


def is_too_many(text: str) -> bool:
    """True when ``text`` is Gmail's refusal for too many connections."""
    return _TOO_MANY in text.lower()


def ends_session(code: int, message: bytes | str) -> bool:
    """True when a reply says the server is closing the connection.

    421: the server is closing the channel (RFC 5321 section 3.8); Gmail's idle
    close is ``451 4.4.2 Timeout - closing connection.``.
    """
    return code == 421 or (code == 451 and "closing connection" in quote(message))


def refusal(code: int, message: bytes | str, doing: str) -> Exception:
    """What a refusal of the greeting, EHLO or AUTH means: too many
    connections, else a server that is unavailable for now (Dead)."""
    text = quote(message)
    if is_too_many(text):
        return SMTPTooManyConnections(too_many_message("SMTP", text))
    return Dead(f"the server answered {doing} with {code} {text}")


def no_starttls(where: str) -> SMTPInsecureConnection:
    return SMTPInsecureConnection(
        f"{where} does not offer STARTTLS, so the connection cannot be "
        "encrypted; no token was sent. Use the implicit-TLS port (465)."
    )


def starttls_refused(
    where: str, code: int, message: bytes | str
) -> SMTPInsecureConnection:
    return SMTPInsecureConnection(
        f"{where} refused STARTTLS ({code} {quote(message)}); no token was sent"
    )


def bad_certificate(where: str, reason: object) -> SMTPInsecureConnection:
    return SMTPInsecureConnection(
        f"the certificate of {where} did not verify ({reason}); no token was sent"
    )


def timed_out(where: str, doing: str, seconds: float | None) -> SMTPTimeout:
    return SMTPTimeout(f"{where} did not answer {doing} within {seconds} s")


def delivery_unknown(server: str, what: str) -> SMTPDeliveryUnknown:
    """The error for a send cut off after its final dot, before the verdict."""
    return SMTPDeliveryUnknown(
        f"{what} after the message's final dot was sent to {server} and before "
        "the server's verdict: it may or may not have been accepted, so it was "
        "not sent again. Look in Sent Mail before sending it by hand."
    )


def after_lost(exc: BaseException, *, dot_sent: bool, server: str) -> BaseException:
    """What a send raises when its connection or a reply broke with ``exc``.

    The driver calls it for a lost connection (its library's disconnect, an
    OSError, internal Dead) or a reply refused (ProtocolError, Timeout), never
    for a reply that is a verdict. Before the final dot: ``exc`` itself (Dead
    means "once more on a new connection"). After it:
    :class:`DeliveryUnknown`, whatever broke.
    """
    if not dot_sent or isinstance(exc, SMTPDeliveryUnknown):
        return exc
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        why = "timed out"
    elif isinstance(exc, ProtocolError):
        why = f"was closed, the reply refused ({exc})"
    else:
        why = "closed"
    return delivery_unknown(server, f"the connection {why}")


def not_sent(exc: BaseException, *, reconnect: bool) -> SMTPConnectionLost:
    """The error for a send whose connection died before the final dot and
    which will not be tried again: the message was not sent."""
    if reconnect:
        return SMTPConnectionLost(
            f"{exc}, again after reconnecting; the message was not sent"
        )
    return SMTPConnectionLost(f"{exc}; the message was not sent (reconnect=False)")
