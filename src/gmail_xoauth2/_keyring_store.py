"""KeyringTokenStore: tokens in the OS keychain (extra ``[keyring]``).

macOS Keychain, Windows Credential Locker, the freedesktop Secret Service or
KWallet, through the ``keyring`` package. The smallest of them, Windows, holds
2,560 bytes per credential in UTF-16 (1,280 characters), so a record is kept
compact and within :data:`MAX_CHARS`; the refresh is single-flight on the host
through a lock file, as with a token file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping

from ._store import file_lock, token_of
from .errors import ConfigurationError, TokenError

try:
    import keyring
    import keyring.errors
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ConfigurationError(
        "KeyringTokenStore needs the keyring extra: "
        "pip install 'gmail-xoauth2[keyring]'"
    ) from exc

__all__ = ["MAX_CHARS", "KeyringTokenStore"]

#: The longest record stored, in characters: Windows' 2,560-byte credential
#: blob holds 1,280 UTF-16 code units; a margin is kept for JSON escapes.
MAX_CHARS = 1200
# What a record needs; anything else in it (universe_domain, account...) is
# dropped first when the record is too long.
_KEPT = (
    "token",
    "expiry",
    "refresh_token",
    "client_id",
    "client_secret",
    "token_uri",
    "scopes",
)


class KeyringTokenStore:
    """One account's tokens in the OS keychain, a host-wide lock for refreshes.

    Args:
        service: the keychain entry's service name.
        account: the account (the Gmail address), the entry's user name.
        lock_dir: where the lock files live (default: ``$XDG_RUNTIME_DIR/
            gmail-xoauth2`` or ``~/.cache/gmail-xoauth2``).
    """

    def __init__(
        self,
        service: str = "gmail-xoauth2",
        *,
        account: str,
        lock_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not account or not account.isprintable():
            raise ConfigurationError("account must be the account's address")
        self.service = service
        self.account = account
        if lock_dir is None:
            runtime = os.environ.get("XDG_RUNTIME_DIR")
            base = runtime or os.path.join(os.path.expanduser("~"), ".cache")
            lock_dir = os.path.join(base, "gmail-xoauth2")
        digest = hashlib.sha256(f"{service}\0{account}".encode()).hexdigest()[:24]
        self.lock_path = os.path.join(os.fspath(lock_dir), f"keyring-{digest}.lock")

    def for_account(self, account: str) -> KeyringTokenStore:
        """The store of another account under the same service name."""
        return KeyringTokenStore(
            self.service, account=account, lock_dir=os.path.dirname(self.lock_path)
        )

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the host-wide refresh lock of this entry."""
        return file_lock(self.lock_path)

    def load(self) -> dict[str, object] | None:
        """The stored record, or None when the keychain holds none.

        Raises:
            ConfigurationError: no keychain is available, or the entry is not
                a record.
            TokenError: the keychain refused (locked, for example; retryable).
        """
        with self._reaching("reading"):
            raw = keyring.get_password(self.service, self.account)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"the keychain entry {self.service}/{self.account} is not a token "
                "record; run `gmail-xoauth2 authorize --store keyring:` again"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"the keychain entry {self.service}/{self.account} is not a record"
            )
        return data

    def save(self, data: Mapping[str, object], *, replacing: str | None) -> bool:
        """Store a compact form of ``data`` if the entry still holds ``replacing``.

        A record over :data:`MAX_CHARS` keeps only the fields a refresh needs;
        when even those are over it, the access token is left out (each
        process then refreshes once); the refresh token is always kept.

        Returns:
            False when the entry changed since it was loaded (nothing stored).

        Raises:
            ConfigurationError: the record cannot fit (a very long client secret).
            TokenError: the keychain refused (retryable).
        """
        try:
            current = token_of(self.load())
        except ConfigurationError:
            current = None
        if current != replacing:
            return False
        record = {key: value for key, value in data.items() if value is not None}
        text = _compact(record)
        if len(text) > MAX_CHARS:
            record = {key: record[key] for key in _KEPT if key in record}
            text = _compact(record)
        if len(text) > MAX_CHARS:
            record.pop("token", None)
            record.pop("expiry", None)
            text = _compact(record)
        if len(text) > MAX_CHARS:
            raise ConfigurationError(
                f"the token record of {self.account} needs {len(text)} characters; "
                f"an OS keychain entry holds {MAX_CHARS} on every platform"
            )
        with self._reaching("writing"):
            keyring.set_password(self.service, self.account, text)
        return True

    def delete(self) -> None:
        """Remove the entry (missing is fine)."""
        with (
            contextlib.suppress(keyring.errors.PasswordDeleteError),
            self._reaching("deleting"),
        ):
            keyring.delete_password(self.service, self.account)

    @contextlib.contextmanager
    def _reaching(self, doing: str) -> Iterator[None]:
        try:
            yield
        except keyring.errors.NoKeyringError as exc:
            raise ConfigurationError(
                "no OS keychain is available here (keyring found no backend); "
                "use a token file or a Redis store instead"
            ) from exc
        except keyring.errors.PasswordDeleteError:
            raise
        except keyring.errors.KeyringError as exc:
            raise TokenError(
                f"the OS keychain refused {doing} {self.service}/{self.account} "
                f"({type(exc).__name__}); unlock it and try again",
                retryable=True,
            ) from exc

    def __repr__(self) -> str:
        return f"KeyringTokenStore({self.service!r}, account={self.account!r})"


def _compact(record: Mapping[str, object]) -> str:
    return json.dumps(record, separators=(",", ":"))
