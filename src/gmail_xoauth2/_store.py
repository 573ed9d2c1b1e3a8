"""The token file: read it safely, replace it atomically, lock it across processes.

The file holds exactly what google-auth's ``Credentials.to_json()`` writes and
``Credentials.from_authorized_user_file()`` reads (``token``, ``refresh_token``,
``token_uri``, ``client_id``, ``client_secret``, ``scopes``, ``expiry``), so it can be
shared with other google-auth programs. This module imports neither google-auth
nor requests: ``gmail-xoauth2 token`` reads a still-valid token through it alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

from .errors import ConfigurationError, InsecureTokenFile

__all__ = ["TokenFile", "file_lock", "format_expiry", "parse_expiry", "token_of"]


def _debug(message: str, *args: object) -> None:
    # logging, tempfile and pathlib are imported only on the slow paths: the
    # `token` command's fast path must start in a few milliseconds.
    import logging

    logging.getLogger("gmail_xoauth2.auth").debug(message, *args)


_AUTHORIZE_ADVICE = "run `gmail-xoauth2 authorize` to create it"
# Any permission bit for group or others: a token file is a password.
_GROUP_OTHER_BITS = stat.S_IRWXG | stat.S_IRWXO


def parse_expiry(value: object) -> datetime | None:
    """Parse the ``expiry`` field of a token file into an aware UTC datetime.

    google-auth writes ``datetime.isoformat() + "Z"`` of a naive UTC time, e.g.
    ``2026-01-02T03:04:05.678901Z``. Anything unreadable gives None, which
    callers treat as "expired".
    """
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] if value.endswith("Z") else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_expiry(expiry: datetime) -> str:
    """Format an aware datetime the way google-auth's ``to_json()`` does."""
    if expiry.tzinfo is None:
        raise ValueError("expiry must be an aware datetime")
    return expiry.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def token_of(data: Mapping[str, object] | None) -> str | None:
    """The access token a record holds (None: no record, or no token in it).

    Stores compare it on :meth:`~gmail_xoauth2.TokenStore.save`: a record is
    written only over the one its writer loaded, so a refresh that finished
    late (its lock expired and another holder wrote meanwhile) never puts an
    older token, or the refresh token it came with, back over a newer one.
    """
    token = data.get("token") if data is not None else None
    return token if isinstance(token, str) and token else None


@contextlib.contextmanager
def file_lock(lock_path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created 0600), across processes.

    The lock is the descriptor's: it is released when the holder closes it or
    dies, so a crashed holder never leaves it taken.

    Raises:
        ConfigurationError: the lock file cannot be created.
    """
    parent = os.path.dirname(os.path.abspath(lock_path))
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create lock file {lock_path}: {exc.strerror or exc}"
        ) from exc
    try:
        _lock(fd)
        _debug("locked %s", lock_path)
        yield
    finally:
        # Closing the descriptor releases the flock.
        os.close(fd)


class TokenFile:
    """A token file on disk, in google-auth's authorized-user format.

    The file implementation of :class:`~gmail_xoauth2.TokenStore`. Reading
    refuses a file that group or others may access. Writing replaces the file
    atomically (a 0600 temporary file in the same directory, fsync, rename,
    fsync of the directory), so a reader never sees half a file.
    :meth:`locked` serialises refreshes between processes sharing the file.

    Args:
        path: where the token file lives.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.expanduser(os.fspath(path))

    @property
    def lock_path(self) -> str:
        """The sidecar lock file (the data file is replaced, so cannot hold a lock)."""
        return self.path + ".lock"

    def read(self) -> dict[str, object]:
        """Read and return the file's JSON object.

        Raises:
            InsecureTokenFile: group or others have access to the file.
            ConfigurationError: the file is missing, unreadable or not a JSON object.
        """
        try:
            with open(self.path, "rb") as file:
                # fstat the open file, not the path, so the check and the read
                # are about the same file.
                mode = os.fstat(file.fileno()).st_mode
                if os.name == "posix" and mode & _GROUP_OTHER_BITS:
                    raise InsecureTokenFile(str(self.path))
                raw = file.read()
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"token file {self.path} does not exist; {_AUTHORIZE_ADVICE}"
            ) from exc
        except IsADirectoryError as exc:
            raise ConfigurationError(
                f"token file {self.path} is a directory, not a file"
            ) from exc
        except InsecureTokenFile:
            raise
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read token file {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # Only the position: the text around it could hold a secret.
            where = (
                f" (line {exc.lineno}, column {exc.colno})"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            raise ConfigurationError(
                f"token file {self.path} is not valid JSON{where}; "
                "run `gmail-xoauth2 authorize` to write it again"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"token file {self.path} holds JSON {type(data).__name__}, not an "
                "object; run `gmail-xoauth2 authorize` to write it again"
            )
        return data

    def cached_token(self, now: datetime, margin: timedelta) -> str | None:
        """Return the file's access token if it is still valid at ``now + margin``.

        Args:
            now: the current time, aware.
            margin: how long the token must stay valid.

        Raises:
            InsecureTokenFile: group or others have access to the file.
            ConfigurationError: the file is missing or unreadable.
        """
        data = self.read()
        token = data.get("token")
        expiry = parse_expiry(data.get("expiry"))
        if isinstance(token, str) and token and expiry is not None:
            if expiry > now + margin:
                return token
        return None

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive lock on the sidecar ``<file>.lock`` (across processes).

        Raises:
            ConfigurationError: the lock file cannot be created.
        """
        return file_lock(self.lock_path)

    def load(self) -> dict[str, object] | None:
        """The stored record, or None when there is no file yet.

        Raises:
            InsecureTokenFile: group or others have access to the file.
            ConfigurationError: the file is unreadable or not a JSON object.
        """
        if not os.path.lexists(self.path):
            return None
        return self.read()

    def save(self, data: Mapping[str, object], *, replacing: str | None) -> bool:
        """Write ``data`` if the file still holds the token ``replacing``.

        Call it with :meth:`locked` held, as the provider does.

        Args:
            data: the record to write.
            replacing: the access token of the record loaded under the lock
                (None: there was no file, or no token in it).

        Returns:
            False when the file changed since (nothing written).

        Raises:
            ConfigurationError: the file cannot be written.
        """
        try:
            current = token_of(self.load())
        except ConfigurationError:
            current = None  # unreadable: replacing it is the repair
        if current != replacing:
            _debug("kept %s: it changed since it was read", self.path)
            return False
        self.write(data)
        return True

    def write(self, data: Mapping[str, object]) -> None:
        """Replace the file with ``data`` atomically, mode 0600.

        Raises:
            ConfigurationError: the file cannot be written.
        """
        self._ensure_directory()
        # Write through a symlink to its target, so the link stays a link.
        import tempfile

        target = os.path.realpath(self.path)
        directory, name = os.path.split(target)
        payload = (json.dumps(dict(data)) + "\n").encode("utf-8")
        try:
            # mkstemp creates the file 0600 with O_EXCL.
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{name}.", suffix=".tmp", dir=directory
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write token file {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp_name, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            if isinstance(exc, OSError):
                raise ConfigurationError(
                    f"cannot write token file {self.path}: {exc.strerror or exc}"
                ) from exc
            raise
        _fsync_directory(directory)
        _debug("wrote token file %s", self.path)

    def prepare(self) -> None:
        """Create the file's directory if needed and check it can be written.

        ``authorize`` calls this before sending anyone to a consent page, so
        an unusable path fails before the grant rather than after it.

        Raises:
            ConfigurationError: the directory cannot be created or written.
        """
        self._ensure_directory()
        directory = os.path.dirname(os.path.realpath(self.path))
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigurationError(
                f"cannot write token file {self.path}: directory {directory} "
                "is not writable"
            )

    def _ensure_directory(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create directory {parent}: {exc.strerror or exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"TokenFile({self.path!r})"


if sys.platform == "win32":  # pragma: no cover
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
