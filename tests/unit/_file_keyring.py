"""A keyring backend as small as Windows' Credential Manager, kept in one file.

The keychain tests run it in the test process and in child processes (as two
programs of one desktop would share the OS keychain): every process that
opens the same file sees the same entries. Like Windows, it refuses a value
whose UTF-16-LE encoding is over 2,560 bytes (CRED_MAX_CREDENTIAL_BLOB_SIZE).
"""

from __future__ import annotations

import json
import os
import tempfile

from jaraco.classes import properties
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError, PasswordDeleteError, PasswordSetError

# wincred.h: CRED_MAX_CREDENTIAL_BLOB_SIZE = 5 * 512 bytes.
WINDOWS_BLOB_BYTES = 2560


class WindowsSizedKeyring(KeyringBackend):
    """Entries in a JSON file, each value at most 2,560 bytes in UTF-16-LE.

    Args:
        path: the file holding every entry (created on the first write).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = os.fspath(path)
        # Set to a KeyringError to make every call raise it (a locked keychain).
        self.refuse: KeyringError | None = None
        self.writes = 0
        self.largest = 0  # the largest value written, in UTF-16-LE bytes

    @properties.classproperty
    def priority(cls) -> float:
        # Never chosen by keyring's own detection: only by set_keyring().
        raise RuntimeError("a test backend, set explicitly")

    def get_password(self, service: str, username: str) -> str | None:
        self._check()
        return self._entries().get(_key(service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self._check()
        size = len(password.encode("utf-16-le"))
        if size > WINDOWS_BLOB_BYTES:
            # What CredWrite refuses (ERROR_INVALID_PARAMETER) on Windows.
            raise PasswordSetError(
                f"the credential blob is {size} bytes; Windows holds "
                f"{WINDOWS_BLOB_BYTES}"
            )
        entries = self._entries()
        entries[_key(service, username)] = password
        self._store(entries)
        self.writes += 1
        self.largest = max(self.largest, size)

    def delete_password(self, service: str, username: str) -> None:
        self._check()
        entries = self._entries()
        if entries.pop(_key(service, username), None) is None:
            raise PasswordDeleteError("no such password")
        self._store(entries)

    def _check(self) -> None:
        if self.refuse is not None:
            raise self.refuse

    def _entries(self) -> dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as file:
                entries: dict[str, str] = json.load(file)
        except FileNotFoundError:
            return {}
        return entries

    def _store(self, entries: dict[str, str]) -> None:
        # Replaced whole, so a process reading meanwhile sees old or new.
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(entries, file)
        os.replace(temporary, self.path)


def _key(service: str, username: str) -> str:
    return f"{service}\0{username}"
