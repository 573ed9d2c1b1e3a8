"""Google OAuth 2.0 for Gmail: the refreshing token provider, and the loopback flow.

It wraps google-auth (through ``_google``) so no untyped google object leaks into
the rest of the library, and translates google-auth's exceptions into
:mod:`gmail_xoauth2.errors`. :func:`authorize` (the flow) is defined in
``_authorize`` and exported here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import functools
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.service_account
import requests

from ._backoff import Backoff
from ._google import (
    RetryableStatus,
    Transport,
    aware,
    naive_utc,
    refresh_error_code,
    user_credentials,
)
from ._oauth import (
    DEFAULT_LIFETIME,
    read_client_config,
    token_error,
)
from ._store import TokenFile, format_expiry, parse_expiry, token_of
from ._tokens import Clock, utcnow
from .errors import ConfigurationError, TokenError, TokenRevokedError
from .sasl import IMAP_ADMIN_SCOPE, MAIL_SCOPE
from .stores import TokenStore, TokenStores, describe_store

__all__ = ["IMAP_ADMIN_SCOPE", "GoogleTokenProvider", "authorize"]

_log = logging.getLogger(__name__)


class GoogleTokenProvider:
    """Access tokens from google-auth credentials, refreshed before they expire.

    ``token()`` is thread-safe and single-flight: however many threads ask at
    once, one refresh happens; ``await token_async()`` does the same for
    asyncio tasks, refreshing off the event loop. With a ``store`` the refresh
    is also single-flight among every process sharing it (a token file: the
    processes of one host; a :class:`~gmail_xoauth2.RedisTokenStore`: a fleet):
    under the store's lock the record is re-read, a token someone else already
    refreshed is adopted, and a new one is written back.

    Args:
        credentials: google-auth credentials (authorized user or service account).
        refresh_margin: ``token()`` returns a token valid for at least this long.
        store: the :class:`~gmail_xoauth2.TokenStore` (or a token file's path)
            to share and write back (authorized-user credentials only).
        clock: the time source (aware UTC); tests inject a manual clock.
        backoff: retry policy for transient token-endpoint failures.
        session: the requests session for the token endpoint.
        timeout: seconds to wait for the token endpoint per attempt.
    """

    def __init__(
        self,
        credentials: google.auth.credentials.Credentials,
        *,
        refresh_margin: timedelta = timedelta(minutes=5),
        store: TokenStore | str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
    ) -> None:
        if refresh_margin < timedelta(0) or refresh_margin >= DEFAULT_LIFETIME:
            raise ConfigurationError(
                "refresh_margin must be between 0 and 1 hour (tokens live an hour)"
            )
        if isinstance(store, str | os.PathLike):
            store = TokenFile(store)
        self.user_credentials = isinstance(
            credentials, google.oauth2.credentials.Credentials
        )
        if store is not None and not self.user_credentials:
            raise ConfigurationError(
                "a token store holds authorized-user credentials; "
                "service-account credentials cannot use one"
            )
        self._credentials: Any = credentials
        self._margin = refresh_margin
        self._store: TokenStore | None = store
        self._clock: Clock = clock or utcnow
        self._backoff = backoff or Backoff()
        self._transport = Transport(session, timeout)
        self._lock = threading.Lock()
        self._last_handed = threading.local()
        # token_async(): the token each task was last given, and the refresh
        # in flight per event loop (tasks of one loop share it).
        self._task_handed: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"gmail_xoauth2_token_{id(self)}", default=None
        )
        self._async_flights: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Future[str]
        ] = weakref.WeakKeyDictionary()
        # Refreshes finished so far, and the last one's error if it failed:
        # callers that queued behind a failing refresh share its error.
        self._flights = 0
        self._failure: tuple[int, TokenError] | None = None
        token = self._credentials.token
        self._token: str | None = token if isinstance(token, str) and token else None
        self._expiry = aware(self._credentials.expiry)

    @classmethod
    def from_authorized_user_file(
        cls, path: str | os.PathLike[str], **kwargs: Any
    ) -> GoogleTokenProvider:
        """A provider for a google-auth authorized-user token file.

        Refreshed tokens are written back to the same file. Unlike google-auth,
        the file's ``token_uri`` is honoured (it must be https, or http on
        loopback for tests).

        Args:
            path: the token file (mode 0600).
            **kwargs: passed to the constructor (not ``store``).

        Raises:
            ConfigurationError: the file is missing, insecure or incomplete.
        """
        store = TokenFile(path)
        credentials = user_credentials(store.read(), describe_store(store))
        return cls(credentials, store=store, **kwargs)

    @classmethod
    def for_user(
        cls,
        store: TokenStores | TokenStore,
        user: str,
        *,
        client: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> GoogleTokenProvider:
        """The provider of one user of an app that serves many, from one store.

        Every user's provider shares the app's client configuration and the
        store (its connections, its lock); each refreshes only its own record::

            users = RedisTokenStore("redis://redis.internal/0", account="-")
            provider = GoogleTokenProvider.for_user(users, "ann@example.com",
                                                    client="client_secret.json")

        Args:
            store: a store of many accounts (:class:`~gmail_xoauth2.TokenDirectory`,
                :class:`~gmail_xoauth2.RedisTokenStore`,
                :class:`~gmail_xoauth2.KeyringTokenStore`), or one account's store.
            user: the account (its Gmail address).
            client: the app's "Desktop app" client secrets file; its client id,
                secret and token URI replace the record's (so the app's
                configuration, not each stored record, says which client).
            **kwargs: passed to the constructor (not ``store``).

        Raises:
            ConfigurationError: the store holds no usable record for ``user``.
            TokenError: the store cannot be reached (retryable).
        """
        if isinstance(store, TokenStores):
            account_store = store.for_account(user)
        else:
            account_store = store
        where = describe_store(account_store)
        data = account_store.load()
        if data is None:
            raise ConfigurationError(
                f"{where} holds no token for {user}; run `gmail-xoauth2 authorize "
                f"--user {user}` with this store first"
            )
        stored_for = data.get("account")
        if isinstance(stored_for, str) and stored_for and stored_for != user:
            raise ConfigurationError(
                f"{where} holds the token of {stored_for}, not of {user}"
            )
        if client is not None:
            section = read_client_config(client)["installed"]
            data = {
                **data,
                "client_id": section["client_id"],
                "client_secret": section["client_secret"],
                "token_uri": section["token_uri"],
            }
        credentials = user_credentials(data, where)
        return cls(credentials, store=account_store, **kwargs)

    @classmethod
    def from_service_account_file(
        cls,
        path: str | os.PathLike[str],
        subject: str,
        *,
        scopes: Iterable[str] = (MAIL_SCOPE,),
        **kwargs: Any,
    ) -> GoogleTokenProvider:
        """A provider acting as ``subject`` through Workspace domain-wide delegation.

        Args:
            path: the service account's JSON key file.
            subject: the Workspace user to act as.
            scopes: ``MAIL_SCOPE``, or :data:`IMAP_ADMIN_SCOPE` (every label
                and message over IMAP, delegation only).
            **kwargs: passed to the constructor.

        Raises:
            ConfigurationError: the key file is missing or malformed, or the
                subject or scopes are empty.
        """
        scope_list = list(scopes)
        if not scope_list:
            raise ConfigurationError("at least one scope is needed")
        if not isinstance(subject, str) or "@" not in subject:
            raise ConfigurationError(
                "subject must be the Workspace user's address; domain-wide "
                "delegation acts as a user, plain Gmail accounts cannot use it"
            )
        factory = google.oauth2.service_account.Credentials
        try:
            credentials = factory.from_service_account_file(  # type: ignore[no-untyped-call]
                os.fspath(path), scopes=scope_list
            )
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"service account key {path} does not exist"
            ) from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # The parser's message may quote the key; only its type is shown.
            raise ConfigurationError(
                f"{path} is not a usable service-account JSON key "
                f"({type(exc).__name__}); download a new key from the Cloud console"
            ) from exc
        return cls(credentials.with_subject(subject), **kwargs)

    @property
    def expiry(self) -> datetime | None:
        """When the current token expires (aware UTC, on this provider's clock)."""
        return self._expiry

    def token(self, *, force_refresh: bool = False) -> str:
        """Return an access token valid for at least ``refresh_margin``.

        Args:
            force_refresh: the server rejected the token this thread was last
                given: get a new one, unless another thread already did.

        Raises:
            TokenRevokedError: the refresh token was expired or revoked.
            TokenError: no token could be obtained (``.retryable`` says whether
                trying later may help).
            ConfigurationError: the token file is missing or insecure.
        """
        # The token this caller holds: the last one handed to this thread, or
        # the current one. A forced refresh replaces only that token, so many
        # threads forcing at once cause one refresh.
        seen: str | None = getattr(self._last_handed, "token", None) or self._token
        token = self._token_for(force_refresh=force_refresh, seen=seen)
        self._last_handed.token = token
        return token

    async def token_async(self, *, force_refresh: bool = False) -> str:
        """:meth:`token` for asyncio: the refresh runs off the event loop.

        A valid token is returned at once, without leaving the loop. Otherwise
        one refresh runs in a worker thread, shared by every task of the loop
        that asks meanwhile and by every thread (the same lock as
        :meth:`token`), and by every process sharing the store.

        Args:
            force_refresh: the server rejected the token this task was last
                given: get a new one, unless another task already did.

        Raises:
            The same as :meth:`token`.
        """
        seen = self._task_handed.get() or self._token
        current = self._token
        if (
            current is not None
            and (not force_refresh or current != seen)
            and self._fresh(self._clock(), self._expiry)
        ):
            self._task_handed.set(current)
            return current
        loop = asyncio.get_running_loop()
        flight = self._async_flights.get(loop)
        if flight is None or flight.done():
            flight = loop.run_in_executor(
                _refreshers(),
                functools.partial(
                    self._token_for, force_refresh=force_refresh, seen=seen
                ),
            )
            self._async_flights[loop] = flight
        # shield: a cancelled caller does not cancel the refresh others share.
        token = await asyncio.shield(flight)
        if force_refresh and token == seen:
            # Joined a flight that started before this task's token was
            # rejected and returned that same token: refresh it now.
            token = await loop.run_in_executor(
                _refreshers(),
                functools.partial(self._token_for, force_refresh=True, seen=seen),
            )
        self._task_handed.set(token)
        return token

    def _token_for(self, *, force_refresh: bool, seen: str | None) -> str:
        """:meth:`token`'s work, for a caller that last held ``seen``."""
        ticket = self._flights
        with self._lock:
            now = self._clock()
            current = self._token
            if current is not None and self._fresh(now, self._expiry):
                if not force_refresh or current != seen:
                    return current
            failure = self._failure
            if failure is not None and failure[0] > ticket:
                # A refresh that ran while this call queued has just failed,
                # after its own retries: running them all again per waiting
                # thread would multiply the requests and the wait.
                _log.debug("sharing the failure of the refresh this call waited for")
                shared = copy.copy(failure[1])
                raise shared from failure[1].__cause__
            try:
                token = self._refresh(rejected=seen if force_refresh else None)
            except TokenError as exc:
                self._flights += 1
                self._failure = (self._flights, exc)
                raise
            self._flights += 1
            self._failure = None
            return token

    def _fresh(self, now: datetime, expiry: datetime | None) -> bool:
        return expiry is not None and now + self._margin < expiry

    def _refresh(self, *, rejected: str | None) -> str:
        """Refresh (lock held), sharing the work with other processes via the store."""
        if self._store is None:
            return self._refresh_remote()
        store = self._store
        # Look before locking: a token another process refreshed is adopted
        # in one read. Safe without the lock, as records only move forward
        # (every save is a compare-and-set on the record it replaces).
        adopted = self._adopt_stored(store.load(), rejected)
        if adopted is not None:
            return adopted
        with store.locked():
            data = store.load() or {}  # empty: this provider's credentials seed it
            adopted = self._adopt_stored(data, rejected)
            if adopted is not None:
                return adopted
            self._adopt_refresh_token(data)
            replacing = token_of(data)
            try:
                token = self._refresh_remote()
            except TokenRevokedError:
                # A refresh token that rotates may have been used and replaced
                # by a holder whose lock had expired: follow the store.
                again = store.load()
                if not again or again.get("refresh_token") == data.get("refresh_token"):
                    raise
                _log.debug("the refresh token was rotated meanwhile; following it")
                adopted = self._adopt_stored(again, rejected)
                if adopted is not None:
                    return adopted
                data = again
                self._adopt_refresh_token(data)
                replacing = token_of(data)
                token = self._refresh_remote()
            # google-auth writes empty fields ("account": ""): they must not
            # blank what the record says.
            fresh = json.loads(self._credentials.to_json())
            data.update({k: v for k, v in fresh.items() if v not in ("", None)})
            if self._expiry is not None:
                data["expiry"] = format_expiry(self._expiry)
            # Not written if the record changed meanwhile (this holder's lock
            # expired and another wrote a newer one): this token stays valid
            # for this process, the store keeps the newer.
            store.save(data, replacing=replacing)
            return token

    def _adopt_stored(
        self, data: Mapping[str, object] | None, rejected: str | None
    ) -> str | None:
        """Adopt the stored token if it is another, valid one; return it."""
        if not data:
            return None
        token = data.get("token")
        expiry = parse_expiry(data.get("expiry"))
        if (
            isinstance(token, str)
            and token
            and token != rejected
            and token != self._token
            and self._fresh(self._clock(), expiry)
        ):
            _log.debug("using the token another process refreshed")
            self._adopt(data, token, expiry)
            return token
        return None

    def _adopt(
        self, data: Mapping[str, object], token: str, expiry: datetime | None
    ) -> None:
        self._adopt_refresh_token(data)
        self._token = token
        self._expiry = expiry
        self._credentials.token = token
        self._credentials.expiry = naive_utc(expiry) if expiry else None

    def _adopt_refresh_token(self, data: Mapping[str, object]) -> None:
        """Follow the file if it now holds another grant (authorize ran again)."""
        refresh_token = data.get("refresh_token")
        if (
            isinstance(refresh_token, str)
            and refresh_token
            and refresh_token != self._credentials.refresh_token
        ):
            _log.debug("the store holds a new refresh token; using it")
            assert self._store is not None
            self._credentials = user_credentials(data, describe_store(self._store))

    def _refresh_remote(self) -> str:
        """Ask the token endpoint, retrying transient failures with backoff."""
        if self.user_credentials and not getattr(
            self._credentials, "refresh_token", None
        ):
            # google-auth would fail without a request and without an error code.
            raise TokenError(
                "these credentials hold no refresh token, so the access token "
                "cannot be renewed; run `gmail-xoauth2 authorize` to get one"
            )
        retry = self._backoff.start("the token endpoint", logger=_log)
        while True:
            started = self._clock()
            try:
                self._credentials.refresh(self._transport)
            except google.auth.exceptions.TransportError as exc:
                failure: Exception = exc
                reason = (
                    exc.reason if isinstance(exc, RetryableStatus) else "network error"
                )
            except google.auth.exceptions.RefreshError as exc:
                code = refresh_error_code(exc)
                if not exc.retryable:
                    raise token_error(
                        code, service_account=not self.user_credentials
                    ) from exc
                failure, reason = exc, code or "retryable error"
            except google.auth.exceptions.GoogleAuthError as exc:
                raise TokenError(
                    f"token refresh failed ({type(exc).__name__}); "
                    "check the credentials file"
                ) from exc
            except (TypeError, ValueError, KeyError) as exc:
                # google-auth indexes whatever came back with a 200 (an HTML
                # page from a proxy, an expires_in it cannot read). Only the
                # type is shown: the body is not ours to print.
                raise TokenError(
                    "the token endpoint sent something that is not an OAuth token "
                    f"response ({type(exc).__name__}); if a proxy or captive "
                    "portal is in the way, sign in to it, then try again",
                    retryable=True,
                ) from exc
            else:
                return self._refreshed(started)
            # Each wait is logged once, at WARNING, with the reason.
            if not retry.wait(reason):
                raise TokenError(
                    f"the token endpoint failed {retry.attempts} times ({reason}); "
                    "try again later",
                    retryable=True,
                ) from failure

    def _refreshed(self, started: datetime) -> str:
        """Record a new token; its expiry is kept on this provider's clock."""
        token = self._credentials.token
        if not isinstance(token, str) or not token:
            raise TokenError("the token endpoint returned no access token")
        # google-auth computed expiry from the real clock: keep only the
        # lifetime and count it from when we asked, on our own clock.
        google_expiry = self._credentials.expiry
        if isinstance(google_expiry, datetime):
            lifetime = google_expiry - naive_utc(utcnow())
        else:
            lifetime = DEFAULT_LIFETIME
        self._token = token
        # Whole seconds, rounded down: google-auth drops the fraction on reading.
        self._expiry = (started + lifetime).replace(microsecond=0)
        self._credentials.expiry = naive_utc(self._expiry)
        _log.debug("refreshed the access token; it expires at %s", self._expiry)
        return token

    def __repr__(self) -> str:
        credentials = self._credentials
        if self.user_credentials:
            kind = "authorized user"
        else:
            kind = f"service account {credentials.service_account_email}"
            if credentials._subject:
                kind += f" as {credentials._subject}"
        store = f", store={self._store!r}" if self._store else ""
        return f"GoogleTokenProvider({kind}, expiry={self._expiry!r}{store})"


_REFRESH_THREADS = 4
_refresh_pool: concurrent.futures.ThreadPoolExecutor | None = None
_refresh_pool_lock = threading.Lock()


def _refreshers() -> concurrent.futures.ThreadPoolExecutor:
    """The threads token_async() refreshes in, shared by every provider.

    Not the loop's default executor: the user's blocking work does not delay a
    refresh, and a thousand providers refreshing at once (a mass session end)
    run a few at a time, which keeps the event loop's lag low (each refresh
    holds the GIL while google-auth and requests run).
    """
    global _refresh_pool
    with _refresh_pool_lock:
        if _refresh_pool is None:
            _refresh_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=_REFRESH_THREADS,
                thread_name_prefix="gmail-xoauth2-refresh",
            )
        return _refresh_pool


# The loopback flow lives in its own module; it needs GoogleTokenProvider, above.
from ._authorize import authorize  # noqa: E402
