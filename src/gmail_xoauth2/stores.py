"""Where tokens live: the TokenStore protocol, token directories, store URLs.

A store keeps one account's record (google-auth's authorized-user JSON:
``token``, ``expiry``, ``refresh_token``, ``client_id``...) and a lock that makes
a refresh single-flight among everyone sharing the store. The provider uses it
the same way whatever the store is::

    with store.locked():          # one refresher at a time
        record = store.load()     # re-read: someone may have refreshed already
        ...                       # adopt theirs, or refresh and write back,
        store.save(new, replacing=token_of(record))   # only over what was read

Implementations: :class:`~gmail_xoauth2.TokenFile` (one file, a lock per host),
:class:`TokenDirectory` (a file per account), :class:`~gmail_xoauth2.RedisTokenStore`
(a fleet of hosts; extra ``[redis]``) and :class:`~gmail_xoauth2.KeyringTokenStore`
(the OS keychain; extra ``[keyring]``). :func:`open_store` opens one from a URL.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from ._store import TokenFile
from .errors import ConfigurationError

__all__ = [
    "TokenDirectory",
    "TokenStore",
    "TokenStores",
    "describe_store",
    "open_store",
]


@runtime_checkable
class TokenStore(Protocol):
    """One account's stored tokens and the lock that makes a refresh single-flight.

    A provider calls :meth:`load` and :meth:`save` only while it holds
    :meth:`locked`, and reads the record again after taking the lock, so a
    waiter adopts the token the holder just wrote instead of refreshing again.
    """

    def load(self) -> dict[str, object] | None:
        """The stored record, or None when the store holds none for this account.

        Raises:
            ConfigurationError: the record exists but cannot be used.
            TokenError: the store cannot be reached now (``retryable``).
        """
        ...

    def save(self, data: Mapping[str, object], *, replacing: str | None) -> bool:
        """Store ``data`` if the stored record still holds the token ``replacing``.

        The compare and the write are one atomic step for everyone sharing
        the store, so a writer whose lock expired mid-refresh cannot put an
        older record back over the one a later holder wrote.

        Args:
            data: the record to store.
            replacing: the access token of the record :meth:`load` returned
                under the lock (None: no record, or no token in it).

        Returns:
            False when the record changed since it was loaded (nothing stored).

        Raises:
            ConfigurationError: the store refuses the record.
            TokenError: the store cannot be reached now (``retryable``).
        """
        ...

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """An exclusive lock for this account among all users of the store.

        Raises:
            TokenError: the lock could not be had in time (``retryable``).
        """
        ...


@runtime_checkable
class TokenStores(Protocol):
    """A store that keeps many accounts: :meth:`for_account` gives one's store."""

    def for_account(self, account: str) -> TokenStore:
        """The store of one account (sharing connections and settings)."""
        ...


class TokenDirectory:
    """A directory of token files, one per account (``<account>.json``, mode 0600).

    For an app on one host that serves many users::

        users = TokenDirectory("~/.local/state/myapp/tokens")
        provider = GoogleTokenProvider.for_user(users, "someone@example.com",
                                                client="client_secret.json")

    Args:
        path: the directory (created 0700 when the first token is written).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.expanduser(os.fspath(path))

    def for_account(self, account: str) -> TokenFile:
        """The token file of ``account``.

        Raises:
            ConfigurationError: the account cannot name a file.
        """
        if (
            not account
            or account.startswith(".")
            or any(c in account for c in "/\\\0")
            or not account.isprintable()
        ):
            raise ConfigurationError(
                f"{account!r} cannot name a token file; use the account's address"
            )
        return TokenFile(os.path.join(self.path, account + ".json"))

    def __repr__(self) -> str:
        return f"TokenDirectory({self.path!r})"


def describe_store(store: TokenStore) -> str:
    """How messages name a store (never with a secret: reprs hold none)."""
    if isinstance(store, TokenFile):
        return f"token file {store.path}"
    return repr(store)


def open_store(url: str, *, account: str | None = None) -> TokenStore:
    """Open the store a URL names, for one account.

    - ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...``,
      ``unix:///path/to/redis.sock``: :class:`~gmail_xoauth2.RedisTokenStore`
      (extra ``[redis]``); ``account`` is needed. Values are encrypted when the
      environment variable ``GMAIL_XOAUTH2_STORE_KEY`` holds a Fernet key
      (a comma-separated list rotates keys: the first encrypts).
    - ``keyring:`` or ``keyring:SERVICE``: :class:`~gmail_xoauth2.KeyringTokenStore`
      (extra ``[keyring]``); ``account`` is needed.
    - ``file:PATH`` or a plain path: a :class:`~gmail_xoauth2.TokenFile`; a
      path ending in ``/`` is a :class:`TokenDirectory` (``account`` needed).

    Raises:
        ConfigurationError: the URL names no known store, or the store's extra
            is not installed, or ``account`` is missing.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from ._redis_store import RedisTokenStore

        keys = os.environ.get("GMAIL_XOAUTH2_STORE_KEY") or None
        return RedisTokenStore(
            url,
            account=_needed(account, "a Redis store"),
            encryption_key=keys.split(",") if keys else None,
        )
    if url == "keyring:" or url.startswith("keyring:"):
        from ._keyring_store import KeyringTokenStore

        service = url.partition(":")[2].lstrip("/") or "gmail-xoauth2"
        return KeyringTokenStore(
            service=service, account=_needed(account, "a keyring store")
        )
    if scheme == "file":
        url = "file:" + urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    elif scheme:
        raise ConfigurationError(
            f"unknown store URL scheme {scheme!r}; use redis://, rediss://, "
            "unix://, keyring: or a file path"
        )
    path = url.removeprefix("file:")
    if path.endswith(("/", os.sep)):
        return TokenDirectory(path).for_account(_needed(account, "a token directory"))
    return TokenFile(path)


def _needed(account: str | None, what: str) -> str:
    if not account:
        raise ConfigurationError(
            f"{what} keeps many accounts: name one (account=, or --user)"
        )
    return account
