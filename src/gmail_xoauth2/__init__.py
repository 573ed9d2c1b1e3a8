"""Gmail over IMAP, POP and SMTP with OAuth 2.0 that keeps working for days.

Everything but the exception tree is imported on first use (PEP 562), so
``gmail-xoauth2 token`` stays fast when its cached token is valid: it loads
neither google-auth, requests, imaplib, ssl nor typing machinery it does not use.
"""

from __future__ import annotations

import importlib

from .errors import (
    AuthenticationFailed,
    ChallengeDecodeError,
    ConfigurationError,
    ConnectionLost,
    DeliveryUnknown,
    Error,
    InsecureConnection,
    InsecureTokenFile,
    LimitExceeded,
    ProtocolError,
    Timeout,
    TokenError,
    TokenRevokedError,
    TooManyConnections,
    UnsupportedFlow,
)

# typing.TYPE_CHECKING without importing typing (mypy honours the name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import aio
    from ._backoff import Backoff
    from ._constants import GMAIL_IMAP_HOST, GMAIL_POP_HOST, GMAIL_SMTP_HOST
    from ._imap_errors import (
        IMAPAuthenticationFailed,
        IMAPInsecureConnection,
        IMAPLimitExceeded,
        IMAPProtocolError,
        IMAPTimeout,
        IMAPTooManyConnections,
    )
    from ._imap_gmail import GmailCommands
    from ._imap_idle import Idler
    from ._imap_watch import NewMessage, UIDValidityChanged, Watcher
    from ._keyring_store import KeyringTokenStore
    from ._limits import Limits
    from ._mutf7 import ModifiedUTF7Error
    from ._pop_errors import (
        POPAuthenticationFailed,
        POPConnectionLost,
        POPInsecureConnection,
        POPLimitExceeded,
        POPProtocolError,
        POPTimeout,
        POPTooManyConnections,
    )
    from ._redis_store import RedisTokenStore
    from ._smtp_errors import (
        SMTPAuthenticationFailed,
        SMTPConnectionLost,
        SMTPDeliveryUnknown,
        SMTPInsecureConnection,
        SMTPLimitExceeded,
        SMTPProtocolError,
        SMTPTimeout,
        SMTPTooManyConnections,
    )
    from ._store import TokenFile
    from ._tokens import Clock, StaticTokenProvider, TokenProvider, TokenSource
    from .auth import GoogleTokenProvider, authorize
    from .imap import IMAP4, IMAPConnectionLost
    from .pop import POP3
    from .sasl import (
        IMAP_ADMIN_SCOPE,
        MAIL_SCOPE,
        ErrorChallenge,
        decode_error_challenge,
        oauthbearer_response,
        oauthbearer_string,
        xoauth2_response,
        xoauth2_string,
    )
    from .smtp import SMTP
    from .stores import TokenDirectory, TokenStore, TokenStores, open_store

__version__ = "0.1.0"

_LAZY = {
    "Backoff": "._backoff",
    "GMAIL_IMAP_HOST": "._constants",
    "GMAIL_POP_HOST": "._constants",
    "GMAIL_SMTP_HOST": "._constants",
    "Limits": "._limits",
    "StaticTokenProvider": "._tokens",
    "TokenProvider": "._tokens",
    "Clock": "._tokens",
    "TokenSource": "._tokens",
    "TokenFile": "._store",
    "TokenStore": ".stores",
    "TokenStores": ".stores",
    "TokenDirectory": ".stores",
    "open_store": ".stores",
    "RedisTokenStore": "._redis_store",
    "KeyringTokenStore": "._keyring_store",
    "IMAP_ADMIN_SCOPE": ".sasl",
    "MAIL_SCOPE": ".sasl",
    "ErrorChallenge": ".sasl",
    "decode_error_challenge": ".sasl",
    "oauthbearer_response": ".sasl",
    "oauthbearer_string": ".sasl",
    "xoauth2_response": ".sasl",
    "xoauth2_string": ".sasl",
    "GoogleTokenProvider": ".auth",
    "authorize": ".auth",
    "IMAP4": ".imap",
    "IMAPAuthenticationFailed": "._imap_errors",
    "IMAPTooManyConnections": "._imap_errors",
    "IMAPInsecureConnection": "._imap_errors",
    "IMAPLimitExceeded": "._imap_errors",
    "IMAPProtocolError": "._imap_errors",
    "IMAPTimeout": "._imap_errors",
    "IMAPConnectionLost": ".imap",
    "GmailCommands": "._imap_gmail",
    "Idler": "._imap_idle",
    "ModifiedUTF7Error": "._mutf7",
    "NewMessage": "._imap_watch",
    "UIDValidityChanged": "._imap_watch",
    "Watcher": "._imap_watch",
    "POP3": ".pop",
    "POPAuthenticationFailed": "._pop_errors",
    "POPConnectionLost": "._pop_errors",
    "POPInsecureConnection": "._pop_errors",
    "POPLimitExceeded": "._pop_errors",
    "POPProtocolError": "._pop_errors",
    "POPTimeout": "._pop_errors",
    "POPTooManyConnections": "._pop_errors",
    "SMTP": ".smtp",
    "SMTPAuthenticationFailed": "._smtp_errors",
    "SMTPConnectionLost": "._smtp_errors",
    "SMTPDeliveryUnknown": "._smtp_errors",
    "SMTPInsecureConnection": "._smtp_errors",
    "SMTPLimitExceeded": "._smtp_errors",
    "SMTPProtocolError": "._smtp_errors",
    "SMTPTimeout": "._smtp_errors",
    "SMTPTooManyConnections": "._smtp_errors",
}

__all__ = [
    "GMAIL_IMAP_HOST",
    "GMAIL_POP_HOST",
    "GMAIL_SMTP_HOST",
    "IMAP4",
    "IMAP_ADMIN_SCOPE",
    "MAIL_SCOPE",
    "POP3",
    "SMTP",
    "AuthenticationFailed",
    "Backoff",
    "ChallengeDecodeError",
    "Clock",
    "ConfigurationError",
    "ConnectionLost",
    "DeliveryUnknown",
    "Error",
    "ErrorChallenge",
    "GmailCommands",
    "GoogleTokenProvider",
    "IMAPAuthenticationFailed",
    "IMAPConnectionLost",
    "IMAPInsecureConnection",
    "IMAPLimitExceeded",
    "IMAPProtocolError",
    "IMAPTimeout",
    "IMAPTooManyConnections",
    "Idler",
    "InsecureConnection",
    "InsecureTokenFile",
    "KeyringTokenStore",
    "LimitExceeded",
    "Limits",
    "ModifiedUTF7Error",
    "NewMessage",
    "POPAuthenticationFailed",
    "POPConnectionLost",
    "POPInsecureConnection",
    "POPLimitExceeded",
    "POPProtocolError",
    "POPTimeout",
    "POPTooManyConnections",
    "ProtocolError",
    "RedisTokenStore",
    "SMTPAuthenticationFailed",
    "SMTPConnectionLost",
    "SMTPDeliveryUnknown",
    "SMTPInsecureConnection",
    "SMTPLimitExceeded",
    "SMTPProtocolError",
    "SMTPTimeout",
    "SMTPTooManyConnections",
    "StaticTokenProvider",
    "Timeout",
    "TokenDirectory",
    "TokenError",
    "TokenFile",
    "TokenProvider",
    "TokenRevokedError",
    "TokenSource",
    "TokenStore",
    "TokenStores",
    "TooManyConnections",
    "UIDValidityChanged",
    "UnsupportedFlow",
    "Watcher",
    "__version__",
    "aio",
    "authorize",
    "decode_error_challenge",
    "oauthbearer_response",
    "oauthbearer_string",
    "open_store",
    "xoauth2_response",
    "xoauth2_string",
]


def __getattr__(name: str) -> object:
    if name == "aio":  # the asyncio subpackage, imported on first use too
        value = importlib.import_module(".aio", __name__)
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
