"""Gmail over IMAP, POP and SMTP with OAuth 2.0 that keeps working for days.

The protocol classes and the Google token provider are imported on first use
(PEP 562), so ``gmail-xoauth2 token`` stays fast when its cached token is valid:
it never loads google-auth, requests, imaplib or ssl.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._constants import GMAIL_IMAP_HOST, GMAIL_POP_HOST, GMAIL_SMTP_HOST
from ._tokens import StaticTokenProvider, TokenProvider
from .errors import (
    AuthenticationFailed,
    ChallengeDecodeError,
    ConfigurationError,
    ConnectionLost,
    DeliveryUnknown,
    Error,
    InsecureConnection,
    InsecureTokenFile,
    ProtocolError,
    Timeout,
    TokenError,
    TokenRevokedError,
    TooManyConnections,
    UnsupportedFlow,
)
from .sasl import (
    MAIL_SCOPE,
    ErrorChallenge,
    decode_error_challenge,
    oauthbearer_response,
    oauthbearer_string,
    xoauth2_response,
    xoauth2_string,
)

if TYPE_CHECKING:
    from .auth import GoogleTokenProvider, authorize
    from .imap import IMAP4
    from .pop import POP3
    from .smtp import SMTP

__version__ = "0.1.0"

_LAZY = {
    "GoogleTokenProvider": ".auth",
    "authorize": ".auth",
    "IMAP4": ".imap",
    "POP3": ".pop",
    "SMTP": ".smtp",
}

__all__ = [
    "GMAIL_IMAP_HOST",
    "GMAIL_POP_HOST",
    "GMAIL_SMTP_HOST",
    "IMAP4",
    "MAIL_SCOPE",
    "POP3",
    "SMTP",
    "AuthenticationFailed",
    "ChallengeDecodeError",
    "ConfigurationError",
    "ConnectionLost",
    "DeliveryUnknown",
    "Error",
    "ErrorChallenge",
    "GoogleTokenProvider",
    "InsecureConnection",
    "InsecureTokenFile",
    "ProtocolError",
    "StaticTokenProvider",
    "Timeout",
    "TokenError",
    "TokenProvider",
    "TokenRevokedError",
    "TooManyConnections",
    "UnsupportedFlow",
    "__version__",
    "authorize",
    "decode_error_challenge",
    "oauthbearer_response",
    "oauthbearer_string",
    "xoauth2_response",
    "xoauth2_string",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
