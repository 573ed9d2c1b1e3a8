"""A fake of Google's OAuth 2.0 endpoints on loopback, for tests without Google.

It serves ``/token`` (refresh-token, authorization-code with PKCE, and the
service-account JWT-bearer grants), ``/tokeninfo`` (in Google's shape, so a real
Dovecot can validate tokens against it), ``/revoke`` and an ``/auth`` page that
consents at once and redirects to the loopback ``redirect_uri``. Time comes from
an injected clock; tests expire, revoke and fail things through its controls::

    with FakeGoogle(clock=clock) as google:
        google.add_user("user@example.com")
        google.write_authorized_user_file(path, "user@example.com")
        ...
        assert google.request_count("/token", grant_type="refresh_token") == 1
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path

from .._store import format_expiry
from .._tokens import Clock, utcnow
from ..sasl import MAIL_SCOPE
from ._google_grants import (
    GOOGLE_TOKEN_URI,
    IMAP_ADMIN_SCOPE,
    GoogleEndpoints,
    TokenInfo,
    _Access,
    _Code,
    _Grant,
    _ServiceAccount,
)
from ._google_http import GoogleHandler, Reply

__all__ = ["GOOGLE_TOKEN_URI", "IMAP_ADMIN_SCOPE", "FakeGoogle", "TokenInfo"]

_log = logging.getLogger(__name__)


class FakeGoogle(GoogleEndpoints):
    """Google's OAuth endpoints, faked on loopback; see the module docstring.

    Args:
        clock: the time source for token expiry (default: the real clock).
        host: address to bind (keep it loopback).
        port: port to bind; 0 picks a free one.
    """

    def __init__(
        self, *, clock: Clock | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._clock: Clock = clock or utcnow
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.client_id = (
            f"{secrets.randbelow(10**12):012d}-fake.apps.googleusercontent.com"
        )
        self.client_secret = "GOCSPX-" + secrets.token_urlsafe(21)
        self._clients: dict[str, str] = {self.client_id: self.client_secret}
        self._users: dict[str, str] = {}
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, _Access] = {}
        self._codes: dict[str, _Code] = {}
        self._service_accounts: dict[str, _ServiceAccount] = {}
        self._failures: dict[
            str, deque[tuple[int, dict[str, object] | str | None]]
        ] = {}
        self._requests: list[tuple[str, str | None]] = []
        self._auth_requests: list[dict[str, str]] = []
        # Refresh grants answer with a new refresh token and retire the old one.
        self.rotate_refresh_tokens = False
        # hold(): /token requests wait for release(); _held counts the waiting.
        self._gate: threading.Event | None = None
        self._held = threading.Condition(self._lock)
        self._held_count = 0
        # FakeGmail's /_control/<action> handler (see _control.py); None: no such path.
        self._control: Callable[[str, dict[str, object]], Reply] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeGoogle:
        """Bind the port and serve in a background thread; return self."""
        if self._server is not None:
            raise RuntimeError("FakeGoogle is already started")
        server = http.server.ThreadingHTTPServer(
            (self._host, self._port), GoogleHandler
        )
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="FakeGoogle",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeGoogle:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("FakeGoogle is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    @property
    def auth_uri(self) -> str:
        return self.url + "/auth"

    @property
    def tokeninfo_uri(self) -> str:
        """For Dovecot: ``tokeninfo_url = <this>?access_token=``."""
        return self.url + "/tokeninfo"

    @property
    def revoke_uri(self) -> str:
        return self.url + "/revoke"

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"FakeGoogle({where}, users={list(self._users)})"

    # -- users and tokens --------------------------------------------------

    def add_user(self, email: str) -> str:
        """Add a Google account; return its address."""
        with self._lock:
            self._users.setdefault(email, str(10**20 + secrets.randbelow(10**20)))
        return email

    @property
    def users(self) -> tuple[str, ...]:
        """The accounts, in the order they were added."""
        with self._lock:
            return tuple(self._users)

    def _check_user(self, user: str) -> None:
        if user not in self._users:
            raise KeyError(f"unknown user {user!r}; call add_user() first")

    def issue_refresh_token(
        self, user: str, *, scopes: Iterable[str] = (MAIL_SCOPE,)
    ) -> str:
        """Grant ``scopes`` to ``user`` (default client); return a refresh token."""
        with self._lock:
            self._check_user(user)
            return self._new_grant(user, frozenset(scopes), self.client_id)

    def mint_access_token(
        self, user: str, *, scopes: Iterable[str] = (MAIL_SCOPE,), ttl: float = 3599
    ) -> str:
        """Mint an access token for ``user`` valid for ``ttl`` seconds of the clock."""
        with self._lock:
            self._check_user(user)
            return self._mint(user, frozenset(scopes), self.client_id, ttl, None)

    def lookup(self, access_token: str) -> TokenInfo | None:
        """What the token grants, or None if unknown, expired or revoked."""
        now = self._clock()
        with self._lock:
            access = self._access.get(access_token)
            if access is None or access.revoked or now >= access.expires_at:
                return None
            return TokenInfo(
                access.user, access.scopes, access.expires_at, access.client_id
            )

    def expire_tokens(self, user: str) -> None:
        """Make every access token of ``user`` expire now (refresh tokens live on)."""
        now = self._clock()
        with self._lock:
            for access in self._access.values():
                if access.user == user and access.expires_at > now:
                    access.expires_at = now

    def revoke(self, user_or_token: str) -> None:
        """Revoke every token of a user, or one token and the grant behind it."""
        with self._lock:
            if user_or_token in self._users:
                self._revoke_user(user_or_token)
            elif not self._revoke_token(user_or_token):
                raise KeyError("no such user or token")

    # -- failure injection and counters ------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        path: str = "/token",
        body: dict[str, object] | str | None = None,
    ) -> None:
        """Answer the next ``count`` requests to ``path`` with ``status``, ``body``.

        A dict ``body`` is sent as JSON, a str as an HTML page (what a proxy or
        captive portal sends), None as an OAuth error fitting the status.
        """
        with self._lock:
            queue = self._failures.setdefault(path, deque())
            queue.extend([(status, body)] * count)

    def hold(self) -> None:
        """Make every later ``/token`` request wait (counted) until :meth:`release`.

        For tests that need a refresh in flight: kill its client, or race it.
        """
        with self._lock:
            if self._gate is None:
                self._gate = threading.Event()

    def release(self) -> None:
        """Let the held ``/token`` requests, and every later one, through."""
        with self._lock:
            gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def wait_held(self, count: int = 1, timeout: float = 30.0) -> bool:
        """Block until ``count`` requests in all have waited at the gate."""
        with self._held:
            return self._held.wait_for(lambda: self._held_count >= count, timeout)

    def request_count(
        self, path: str = "/token", *, grant_type: str | None = None
    ) -> int:
        """How many requests reached ``path`` (with ``grant_type``, for /token)."""
        with self._lock:
            return sum(
                1
                for seen_path, seen_grant in self._requests
                if seen_path == path
                and (grant_type is None or seen_grant == grant_type)
            )

    def auth_requests(self) -> list[dict[str, str]]:
        """The query parameters of every ``/auth`` request, oldest first."""
        with self._lock:
            return [dict(params) for params in self._auth_requests]

    # -- files -------------------------------------------------------------

    def write_client_secrets_file(self, path: str | os.PathLike[str]) -> Path:
        """Write a Google "installed app" client secrets file for this fake."""
        data = {
            "installed": {
                "client_id": self.client_id,
                "project_id": "fake-project",
                "auth_uri": self.auth_uri,
                "token_uri": self.token_uri,
                "client_secret": self.client_secret,
                "redirect_uris": ["http://localhost"],
            }
        }
        return _write_private(path, data)

    def write_authorized_user_file(
        self,
        path: str | os.PathLike[str],
        user: str,
        *,
        expired: bool = False,
        scopes: Iterable[str] = (MAIL_SCOPE,),
    ) -> Path:
        """Write a google-auth authorized-user token file (0600) for ``user``.

        With ``expired=True`` its access token has already expired, so the
        first use refreshes.
        """
        scope_set = frozenset(scopes)
        with self._lock:
            self._check_user(user)
            refresh_token = self._new_grant(user, scope_set, self.client_id)
            token = self._mint(user, scope_set, self.client_id, 3599, refresh_token)
            access = self._access[token]
            if expired:
                access.expires_at = self._clock() - timedelta(seconds=1)
            expiry = access.expires_at
        data = {
            "token": token,
            "refresh_token": refresh_token,
            "token_uri": self.token_uri,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scopes": sorted(scope_set),
            "expiry": format_expiry(expiry),
        }
        return _write_private(path, data)

    def write_service_account_file(
        self,
        path: str | os.PathLike[str],
        *,
        client_email: str = "mailer@fake-project.iam.gserviceaccount.com",
    ) -> Path:
        """Write a service-account key file; its key is made now, never stored."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        account = _ServiceAccount(
            client_email=client_email,
            client_id=str(10**20 + secrets.randbelow(10**20)),
            key_id=secrets.token_hex(20),
            public_key_pem=public_pem,
        )
        with self._lock:
            self._service_accounts[client_email] = account
        data = {
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": account.key_id,
            "private_key": private_pem.decode("ascii"),
            "client_email": client_email,
            "client_id": account.client_id,
            "auth_uri": self.auth_uri,
            "token_uri": self.token_uri,
            "universe_domain": "googleapis.com",
        }
        return _write_private(path, data)


def _write_private(path: str | os.PathLike[str], data: Mapping[str, object]) -> Path:
    """Write JSON to ``path`` with mode 0600 (replacing any file there)."""
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        json.dump(data, file)
    return target
