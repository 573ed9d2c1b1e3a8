"""The exception tree of gmail-xoauth2: every error the library raises.

::

    Error
    ├── ConfigurationError (ValueError)      bad argument, file or setting
    │   ├── InsecureTokenFile (PermissionError)  token file readable by others
    │   └── UnsupportedFlow                  out-of-band or device flow asked for
    ├── TokenError                           a token could not be obtained (.retryable)
    │   └── TokenRevokedError                invalid_grant: authorize again
    ├── ProtocolError                        a peer sent something we cannot parse
    │   ├── ChallengeDecodeError (ValueError)
    │   ├── ModifiedUTF7Error (ValueError)   a name or label not in modified UTF-7
    │   └── LimitExceeded                    a reply passed one of the Limits
    ├── AuthenticationFailed                 the server rejected the SASL exchange
    ├── TooManyConnections                   Gmail's limit of 15 connections per user
    ├── InsecureConnection                   TLS missing or stripped; no token was sent
    ├── ConnectionLost (ConnectionError)     the connection died (.outcome_unknown)
    │   └── DeliveryUnknown                  SMTP: the message may or may not be sent
    └── Timeout (TimeoutError)               no answer in time (.outcome_unknown)

Connections raise these as their protocol's subclass, which is also the error of
the standard-library module they wrap, so code written for smtplib, poplib or
imaplib catches it too (``except smtplib.SMTPException``), and code written for
this library still does (``except gmail_xoauth2.ConnectionLost``). Each keeps its
fields, its message and its cause, and pickles with them::

    SMTP: every error is an smtplib.SMTPException (as well as the class on the right)
    ├── SMTPAuthenticationFailed   AuthenticationFailed, smtplib.SMTPAuthenticationError
    │                              (.smtp_code and .smtp_error: the server's reply)
    ├── SMTPTooManyConnections     TooManyConnections
    ├── SMTPInsecureConnection     InsecureConnection
    ├── SMTPProtocolError          ProtocolError
    │   └── SMTPLimitExceeded      LimitExceeded
    ├── SMTPConnectionLost         ConnectionLost, smtplib.SMTPServerDisconnected
    │   └── SMTPDeliveryUnknown    DeliveryUnknown
    └── SMTPTimeout                Timeout, smtplib.SMTPServerDisconnected

    POP: every error is a poplib.error_proto (as well as the class on the right)
    ├── POPAuthenticationFailed    AuthenticationFailed
    ├── POPTooManyConnections      TooManyConnections
    ├── POPInsecureConnection      InsecureConnection
    ├── POPProtocolError           ProtocolError
    │   └── POPLimitExceeded       LimitExceeded
    ├── POPConnectionLost          ConnectionLost
    └── POPTimeout                 Timeout

    IMAP: every error is an imaplib.IMAP4.error; those that closed the
    connection are IMAP4.abort, as imaplib's own are
    ├── IMAPAuthenticationFailed   AuthenticationFailed, imaplib.IMAP4.error
    ├── IMAPTooManyConnections     TooManyConnections, imaplib.IMAP4.error
    ├── IMAPInsecureConnection     InsecureConnection, imaplib.IMAP4.error
    ├── IMAPProtocolError          ProtocolError, imaplib.IMAP4.abort
    │   └── IMAPLimitExceeded      LimitExceeded
    ├── IMAPConnectionLost         ConnectionLost, imaplib.IMAP4.abort
    └── IMAPTimeout                Timeout, imaplib.IMAP4.abort

TokenError and ConfigurationError are not the protocol's: a token that could not
be obtained is no answer from the mail server. Catch the classes of the first tree
to handle a kind of failure whatever the protocol; all are importable from
``gmail_xoauth2``.

No message, repr or attribute of these exceptions holds an access token, a refresh
token, a client secret or a SASL string.
"""

from __future__ import annotations

# typing.TYPE_CHECKING without importing typing: this module is on the `token`
# command's fast path (mypy honours the name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    _E = TypeVar("_E", bound="Error")

__all__ = [
    "AuthenticationFailed",
    "ChallengeDecodeError",
    "ConfigurationError",
    "ConnectionLost",
    "DeliveryUnknown",
    "Error",
    "InsecureConnection",
    "InsecureTokenFile",
    "LimitExceeded",
    "ProtocolError",
    "Timeout",
    "TokenError",
    "TokenRevokedError",
    "TooManyConnections",
    "UnsupportedFlow",
]

_REAUTHORIZE_ADVICE = "run `gmail-xoauth2 authorize` again to get a new refresh token"


class Error(Exception):
    """Root of every exception raised by gmail-xoauth2."""

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt without calling __init__, whose keyword-only fields (and a
        # protocol subclass's own) are not in args: every field is restored.
        return (_rebuild, (type(self), self.args, dict(vars(self))))


class ConfigurationError(Error, ValueError):
    """An argument, file or setting is wrong; the message says how to fix it."""


class InsecureTokenFile(ConfigurationError, PermissionError):
    """A token file can be read by group or others; it is refused, not used."""

    def __init__(self, path: str) -> None:
        # Imported here: this module is on the `token` command's fast path.
        from shlex import quote

        self.path = path
        super().__init__(
            f"token file {path} is readable by group or others; "
            f"restrict it with `chmod 600 {quote(path)}` and try again"
        )

    def __reduce__(self) -> tuple[type[InsecureTokenFile], tuple[str]]:
        return (type(self), (self.path,))


class UnsupportedFlow(ConfigurationError):
    """An OAuth flow Google no longer allows for Gmail was asked for."""


class TokenError(Error):
    """An access token could not be obtained.

    Attributes:
        retryable: True when trying again later may succeed (network failure,
            5xx or 429 from the token endpoint).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TokenRevokedError(TokenError):
    """The refresh token was rejected with ``invalid_grant``: authorize again."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or (
                "refresh token rejected (invalid_grant): it was expired or revoked. "
                "If the OAuth consent screen is in Testing, Google expires refresh "
                "tokens after 7 days (publish the app to avoid this); "
                + _REAUTHORIZE_ADVICE
            ),
            retryable=False,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), self.args)


class ProtocolError(Error):
    """A server or endpoint sent something this library cannot understand."""


class ChallengeDecodeError(ProtocolError, ValueError):
    """A SASL error challenge was not base64 JSON of the expected shape."""


class LimitExceeded(ProtocolError):
    """A reply passed one of the connection's :class:`~gmail_xoauth2.Limits`.

    The server sent a line, literal or reply larger or longer than the bound
    allows; the connection was closed (the next command opens a new one).
    """


class AuthenticationFailed(Error):
    """The server rejected the SASL exchange.

    Attributes:
        protocol: ``"imap"``, ``"pop"`` or ``"smtp"``.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        status: the ``status`` of the decoded error challenge (``"400"``,
            ``"401"``, ``"invalid_token"``...), or None when there was none.
        scope: the ``scope`` the server asked for, or None.
        server_text: the server's final reply line (it never holds a secret).
    """

    def __init__(
        self,
        message: str,
        *,
        protocol: str,
        mechanism: str,
        status: str | None = None,
        scope: str | None = None,
        server_text: str = "",
    ) -> None:
        # Not super(): smtplib's SMTPAuthenticationError, mixed into the SMTP
        # subclass, takes a code and a reply and calls on no further; the
        # subclass sets those two itself.
        Exception.__init__(self, message)
        self.protocol = protocol
        self.mechanism = mechanism
        self.status = status
        self.scope = scope
        self.server_text = server_text


class TooManyConnections(Error):
    """Gmail refused the login: the user already has too many connections.

    Gmail allows about 15 simultaneous IMAP connections per user, shared by
    every client of that account; close some (other mail clients count too).
    """


class InsecureConnection(Error):
    """TLS was required but not available; no token was sent."""


class ConnectionLost(Error, ConnectionError):
    """The connection died and could not be used to finish the operation.

    Attributes:
        outcome_unknown: True when the command had been sent, so the server may
            or may not have carried it out; the library did not send it again.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class DeliveryUnknown(ConnectionLost):
    """SMTP: the connection died after the message's final dot, before the reply.

    The server may or may not have accepted the message, so it was not sent
    again. Check the Sent Mail folder before sending it again by hand.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = True) -> None:
        super().__init__(message, outcome_unknown=outcome_unknown)


class Timeout(Error, TimeoutError):
    """A network operation did not finish in time; the connection was closed.

    Attributes:
        outcome_unknown: True when the command had been sent, so the server may
            or may not have carried it out; the library did not send it again.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


def recast(exc: Error, cls: type[_E]) -> _E:
    """``exc`` as an instance of ``cls``, its protocol's subclass of its class.

    The copy has the message, the fields and the traceback of ``exc``, and as
    its cause the cause of ``exc`` (or what it was raised while handling).
    Raise it ``from`` that cause, so the original is not shown as a second,
    identical error.
    """
    copy = _rebuild(cls, exc.args, vars(exc))
    copy.__cause__ = exc.__cause__ or exc.__context__
    copy.__traceback__ = exc.__traceback__
    return copy  # type: ignore[return-value]


def _rebuild(
    cls: type[Error], args: tuple[object, ...], fields: dict[str, object]
) -> Error:
    """Recreate an exception with keyword fields when it is unpickled."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(fields)
    return exc
