"""RedisTokenStore: one refresh per account across a fleet of hosts (extra ``[redis]``).

Layout, per account (``prefix`` defaults to ``gmail-xoauth2``)::

    <prefix>:token:<account>   hash: data (the record's JSON, Fernet-encrypted
                               when a key is given), token_id (a hash of the
                               access token, for the fence), expiry_ms, version
    <prefix>:lock:<account>    the refresh lock: SET NX PX with an owner value

The lock expires (a holder killed mid-refresh is taken over after
``lock_ttl``), is released only by its owner (compare-and-delete in one
script), and waiters poll it, then re-read the record rather than refresh
again. Writes are fenced in one script too: a record replaces only the one its
writer loaded, so a refresh that outlived its lock cannot put an older token,
or an older refresh token, back over the newer one another holder wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ._store import parse_expiry, token_of
from .errors import ConfigurationError, TokenError

try:
    import redis
    import redis.exceptions
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ConfigurationError(
        "RedisTokenStore needs the redis extra: pip install 'gmail-xoauth2[redis]'"
    ) from exc

__all__ = ["RedisTokenStore"]

_log = logging.getLogger("gmail_xoauth2.auth")

# KEYS[1] = the record; ARGV = data, the new token's id, the id of the token it
# replaces ('' for none), expiry_ms. Returns 1 if written, 0 if the record
# changed since its writer loaded it (fenced).
_SAVE = """
local stored = redis.call('HGET', KEYS[1], 'token_id') or ''
if stored ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'token_id', ARGV[2],
           'expiry_ms', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
"""
# KEYS[1] = the lock; ARGV[1] = the owner. Deletes it only if still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RedisTokenStore:
    """Tokens in Redis, shared by every process on every host; one key per account.

    Use one store object per account (:meth:`for_account` makes more that share
    the connection pool)::

        store = RedisTokenStore("redis://redis.internal:6379/0",
                                account="me@example.com",
                                encryption_key=os.environ["TOKEN_KEY"])
        provider = GoogleTokenProvider.for_user(store, "me@example.com")

    Put the record in once with ``gmail-xoauth2 authorize --store URL --user
    ADDRESS`` (or :func:`~gmail_xoauth2.authorize` with the store).

    Args:
        client: a ``redis://``, ``rediss://`` or ``unix://`` URL, or a
            ``redis.Redis`` client (decode_responses must be off).
        account: the account whose record this is (the Gmail address).
        prefix: the first part of every key, to share a Redis with other apps.
        encryption_key: a Fernet key (``cryptography.fernet.Fernet.generate_key()``),
            or several (the first encrypts, all decrypt: key rotation). The
            record is encrypted at rest; without a key it is stored in clear.
        lock_ttl: seconds a refresh lock lives; a holder that dies is taken
            over after this. Longer than a refresh with its retries can take.
        lock_wait: seconds a waiter waits for the lock before failing
            (retryable :class:`TokenError`).
        socket_timeout: seconds for each Redis operation (URL form only).
    """

    def __init__(
        self,
        client: redis.Redis | str,
        *,
        account: str,
        prefix: str = "gmail-xoauth2",
        encryption_key: str | bytes | Sequence[str | bytes] | None = None,
        lock_ttl: float = 60.0,
        lock_wait: float = 90.0,
        socket_timeout: float = 5.0,
    ) -> None:
        if not account or not account.isprintable():
            raise ConfigurationError("account must be the account's address")
        if lock_ttl <= 0 or lock_wait < 0:
            raise ConfigurationError("lock_ttl must be positive, lock_wait >= 0")
        if isinstance(client, str):
            self._where = _describe_url(client)
            try:
                client = redis.Redis.from_url(
                    client,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_timeout,
                    health_check_interval=30,
                )
            except ValueError as exc:
                raise ConfigurationError(
                    f"not a usable Redis URL ({self._where}): {type(exc).__name__}"
                ) from exc
        else:
            kwargs = client.connection_pool.connection_kwargs
            host = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
            self._where = f"redis {host}"
        self._redis: Any = client
        self.account = account
        self.prefix = prefix
        self._cipher = _cipher(encryption_key)
        self._lock_ttl_ms = max(1, int(lock_ttl * 1000))
        self._lock_wait = lock_wait
        self._save = client.register_script(_SAVE)
        self._release = client.register_script(_RELEASE)
        self._sleep: Callable[[float], object] = threading.Event().wait

    @property
    def key(self) -> str:
        """The record's key."""
        return f"{self.prefix}:token:{self.account}"

    @property
    def lock_key(self) -> str:
        """The refresh lock's key."""
        return f"{self.prefix}:lock:{self.account}"

    def for_account(self, account: str) -> RedisTokenStore:
        """The store of another account, sharing this one's client and settings."""
        if not account or not account.isprintable():
            raise ConfigurationError("account must be the account's address")
        # type(self): a subclass's store of another account is of the subclass.
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.account = account
        return other

    def load(self) -> dict[str, object] | None:
        """The stored record, or None when Redis holds none for this account.

        Raises:
            ConfigurationError: the record cannot be decrypted or read.
            TokenError: Redis cannot be reached (retryable).
        """
        with self._reaching("reading the token"):
            raw = self._redis.hget(self.key, "data")
        if raw is None:
            return None
        if self._cipher is not None:
            try:
                raw = self._cipher.decrypt(raw)
            except Exception as exc:  # cryptography's InvalidToken
                raise ConfigurationError(
                    f"cannot decrypt the token of {self.account} in {self._where}: "
                    "wrong encryption key, or it was stored without one"
                ) from exc
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            hint = "; was it stored encrypted?" if self._cipher is None else ""
            raise ConfigurationError(
                f"the token of {self.account} in {self._where} is not JSON{hint}"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"the token of {self.account} in {self._where} is not a JSON object"
            )
        return data

    def save(self, data: Mapping[str, object], *, replacing: str | None) -> bool:
        """Store ``data`` if Redis still holds the token ``replacing`` (atomic).

        Returns:
            False when the record changed since it was loaded (nothing stored).

        Raises:
            TokenError: Redis cannot be reached (retryable).
        """
        expiry = parse_expiry(data.get("expiry"))
        expiry_ms = int(expiry.timestamp() * 1000) if expiry is not None else 0
        payload = json.dumps(dict(data)).encode("utf-8")
        if self._cipher is not None:
            payload = self._cipher.encrypt(payload)
        args: list[bytes | str | int] = [
            payload,
            _token_id(token_of(data)),
            _token_id(replacing),
            expiry_ms,
        ]
        with self._reaching("saving the token"):
            written = self._save(keys=[self.key], args=args)
        if not written:
            _log.debug("kept the stored token of %s: it changed", self.account)
        return bool(written)

    def delete(self) -> None:
        """Remove this account's record (after revoking it, for example)."""
        with self._reaching("deleting the token"):
            self._redis.delete(self.key)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this account's refresh lock, waiting up to ``lock_wait`` for it.

        Raises:
            TokenError: the lock stayed taken for ``lock_wait`` seconds, or Redis
                cannot be reached (both retryable).
        """
        owner = secrets.token_hex(16)
        deadline = time.monotonic() + self._lock_wait
        pause = 0.002
        while True:
            with self._reaching("taking the refresh lock"):
                taken = self._redis.set(
                    self.lock_key, owner, nx=True, px=self._lock_ttl_ms
                )
            if taken:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TokenError(
                    f"another process held the refresh lock of {self.account} in "
                    f"{self._where} for {self._lock_wait:g} s; try again later",
                    retryable=True,
                )
            self._sleep(min(pause, left))
            pause = min(pause * 2, 0.1)
        _log.debug("took the refresh lock of %s", self.account)
        try:
            yield
        finally:
            try:
                self._release(keys=[self.lock_key], args=[owner])
            except _ERRORS:
                # Redis went away: the lock expires by itself after lock_ttl.
                _log.debug("could not release the refresh lock; it will expire")

    @contextlib.contextmanager
    def _reaching(self, doing: str) -> Iterator[None]:
        doing = f"{doing} of {self.account}"
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            # A ConnectionError to redis-py, but waiting will not fix a password.
            raise TokenError(
                f"Redis ({self._where}) refused {doing}: authentication failed "
                f"({type(exc).__name__}); check the user and password in the URL",
                retryable=False,
            ) from exc
        except _ERRORS as exc:
            raise TokenError(
                f"Redis ({self._where}) could not be reached while {doing} "
                f"({type(exc).__name__}); try again once Redis is back",
                retryable=True,
            ) from exc
        except redis.exceptions.RedisError as exc:
            raise TokenError(
                f"Redis ({self._where}) refused {doing} ({type(exc).__name__}); "
                "check the URL, its password and the database",
                retryable=False,
            ) from exc

    def __repr__(self) -> str:
        encrypted = ", encrypted" if self._cipher is not None else ""
        return f"RedisTokenStore({self._where}, account={self.account!r}{encrypted})"


def _token_id(token: str | None) -> str:
    """What the fence compares: a hash of the access token, never the token."""
    if token is None:
        return ""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]


def _describe_url(url: str) -> str:
    """``redis host:port/db`` without the user or password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return f"redis {parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme} {parts.hostname or 'localhost'}:{port}/{db}"


def _cipher(keys: str | bytes | Sequence[str | bytes] | None) -> Any:
    if keys is None:
        return None
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ConfigurationError(
            "encryption needs the redis extra: pip install 'gmail-xoauth2[redis]'"
        ) from exc
    key_list = [keys] if isinstance(keys, str | bytes) else list(keys)
    if not key_list:
        raise ConfigurationError("encryption_key is an empty list")
    try:
        return MultiFernet([Fernet(key) for key in key_list])
    except (ValueError, TypeError) as exc:
        # The message would quote nothing secret, but the key is: say only why.
        raise ConfigurationError(
            "encryption_key must be a Fernet key: 32 url-safe base64-encoded "
            "bytes (Fernet.generate_key())"
        ) from exc
