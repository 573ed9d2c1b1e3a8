"""Tokens for the ``gmail-xoauth2`` commands: from a token file or a store URL.

``token`` runs on every mail sync: a still-valid token is read without importing
google-auth, requests or a store's client library; only a refresh imports them.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from ._cli_base import EXIT_USAGE, Failure

# Not typing.TYPE_CHECKING: importing typing alone costs the fast path milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from ._backoff import Backoff
    from .auth import GoogleTokenProvider
    from .stores import TokenStore

__all__ = ["TOKEN_MARGIN", "access_token"]

# A printed token must outlive the mail program's session by a little: Gmail ends
# a session when its token expires. Same margin as GoogleTokenProvider's default.
TOKEN_MARGIN = timedelta(minutes=5)


def access_token(token_file: str) -> str:
    """Return a token valid for at least :data:`TOKEN_MARGIN`, refreshing if needed.

    A valid cached token is read without importing google-auth or requests.
    """
    from ._store import TokenFile

    token = TokenFile(token_file).cached_token(datetime.now(UTC), TOKEN_MARGIN)
    if token is not None:
        return token
    return _provider(token_file).token()


def _token_backoff() -> Backoff:
    """Short retries: a password command must answer its mail program in seconds."""
    from ._backoff import Backoff

    return Backoff(base=0.5, cap=2.0, attempts=3)


def _provider(token_file: str) -> GoogleTokenProvider:
    from .auth import GoogleTokenProvider

    return GoogleTokenProvider.from_authorized_user_file(
        token_file,
        refresh_margin=TOKEN_MARGIN,
        backoff=_token_backoff(),
    )


def _token(args: argparse.Namespace, *, force_refresh: bool = False) -> str:
    """A token from ``--token-file`` or ``--store``: the cached one while valid."""
    if args.store is None:
        if force_refresh:
            return _provider(args.token_file).token(force_refresh=True)
        return access_token(args.token_file)
    store = _open_store(args)
    if not force_refresh:
        # Read without google-auth: hosts sharing the store mostly find a
        # token another one refreshed.
        token = _valid_token(store.load(), args.user)
        if token is not None:
            return token
    return _store_provider(store, args.user).token(force_refresh=force_refresh)


def _args_provider(args: argparse.Namespace) -> GoogleTokenProvider:
    if args.store is None:
        return _provider(args.token_file)
    return _store_provider(_open_store(args), args.user)


def _many_accounts(url: str) -> str | None:
    """What keeps many accounts at ``url`` (as :func:`~.stores.open_store` reads it)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        return "a Redis store"
    if url.startswith("keyring:"):
        return "the OS keychain"
    if url.removeprefix("file:").endswith(("/", os.sep)):
        return "a token directory"
    return None


def _open_store(args: argparse.Namespace) -> TokenStore:
    """The store ``--store`` names, for ``--user``.

    Raises:
        Failure: the store keeps many accounts and ``--user`` is missing.
        ConfigurationError: the URL is unusable, or its extra is not installed.
    """
    from .stores import open_store

    kind = _many_accounts(args.store)
    if kind is not None and not args.user:
        raise Failure(
            f"{kind} keeps the tokens of many accounts: name one with --user EMAIL",
            EXIT_USAGE,
        )
    return open_store(args.store, account=args.user)


def _shown_url(url: str) -> str:
    """``url`` as the command may print it: a password becomes ``***``.

    Redis URLs carry one after the user name or as ``?password=``.
    """
    import urllib.parse

    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        name = userinfo.partition(":")[0]
        parts = parts._replace(netloc=f"{name}:***@{host}")
    if parts.query:
        pairs = [
            (name, "***" if name.lower() == "password" else value)
            for name, value in urllib.parse.parse_qsl(
                parts.query, keep_blank_values=True
            )
        ]
        parts = parts._replace(query=urllib.parse.urlencode(pairs, safe="*"))
    # Not geturl(): it drops the empty host of unix:///path.
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}"


def _valid_token(data: dict[str, object] | None, user: str | None) -> str | None:
    """The record's access token if it stays valid for :data:`TOKEN_MARGIN`."""
    from ._store import parse_expiry, token_of

    if data is None:
        return None
    stored_for = data.get("account")
    if user and isinstance(stored_for, str) and stored_for and stored_for != user:
        return None  # someone else's: the provider says so
    token = token_of(data)
    expiry = parse_expiry(data.get("expiry"))
    if token is None or expiry is None:
        return None
    return token if expiry > datetime.now(UTC) + TOKEN_MARGIN else None


def _store_provider(store: TokenStore, user: str | None) -> GoogleTokenProvider:
    from ._store import TokenFile
    from .auth import GoogleTokenProvider

    if user:
        return GoogleTokenProvider.for_user(
            store, user, refresh_margin=TOKEN_MARGIN, backoff=_token_backoff()
        )
    # Without --user, only a single file opens (_open_store).
    assert isinstance(store, TokenFile)
    return _provider(store.path)
