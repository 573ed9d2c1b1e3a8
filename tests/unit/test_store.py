"""The token file: permissions, atomic replacement, the cross-process lock."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gmail_xoauth2._store import TokenFile, format_expiry, parse_expiry
from gmail_xoauth2.errors import ConfigurationError, InsecureTokenFile

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SECRET = "1//refresh-secret-do-not-show"


def _write(path: Path, data: object, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


def _mode(path: str | os.PathLike[str]) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_creates_a_0600_file_and_reads_back(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "token.json")
    data = {"token": "ya29.a", "refresh_token": SECRET, "scopes": ["x"]}
    store.write(data)
    assert _mode(store.path) == 0o600
    assert store.read() == data
    # Nothing but the file (and no temporary file) is left in the directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.json"]


def test_write_replaces_a_looser_file_with_a_0600_one(tmp_path: Path) -> None:
    path = _write(tmp_path / "token.json", {"token": "old"}, mode=0o644)
    TokenFile(path).write({"token": "new"})
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {"token": "new"}


def test_write_creates_missing_directories_0700(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "config" / "gmail" / "token.json")
    store.write({"token": "t"})
    assert _mode(tmp_path / "config" / "gmail") == 0o700
    assert store.read() == {"token": "t"}


def test_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = _write(tmp_path / "real.json", {"token": "old"})
    link = tmp_path / "link.json"
    link.symlink_to(real)
    TokenFile(link).write({"token": "new"})
    assert link.is_symlink()
    assert json.loads(real.read_text()) == {"token": "new"}


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660, 0o644])
def test_a_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "token.json", {"refresh_token": SECRET}, mode=mode)
    with pytest.raises(InsecureTokenFile) as info:
        TokenFile(path).read()
    assert f"chmod 600 {path}" in str(info.value)
    assert SECRET not in str(info.value)
    assert isinstance(info.value, PermissionError)


def test_a_missing_file_says_to_authorize(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigurationError) as info:
        TokenFile(path).read()
    assert str(path) in str(info.value)
    assert "gmail-xoauth2 authorize" in str(info.value)


def test_bad_json_is_a_configuration_error_without_the_content(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text('{"refresh_token": "' + SECRET + '", oops}')
    path.chmod(0o600)
    with pytest.raises(ConfigurationError) as info:
        TokenFile(path).read()
    message = str(info.value)
    assert "not valid JSON (line 1, column" in message
    assert SECRET not in message


def test_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "token.json", ["token"])
    with pytest.raises(ConfigurationError, match="holds JSON list, not an object"):
        TokenFile(path).read()


@pytest.mark.parametrize(
    ("expiry", "expected"),
    [
        (NOW + timedelta(minutes=10), "ya29.cached"),
        (NOW + timedelta(minutes=5), None),  # exactly the margin is not enough
        (NOW - timedelta(seconds=1), None),
        (None, None),
    ],
)
def test_cached_token_needs_the_margin(
    tmp_path: Path, expiry: datetime | None, expected: str | None
) -> None:
    data: dict[str, object] = {"token": "ya29.cached"}
    if expiry is not None:
        data["expiry"] = format_expiry(expiry)
    store = TokenFile(_write(tmp_path / "token.json", data))
    assert store.cached_token(NOW, timedelta(minutes=5)) == expected


def test_expiry_format_is_google_auths() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 5, 123456, tzinfo=UTC)
    assert format_expiry(moment) == "2026-03-01T12:00:05.123456Z"
    assert parse_expiry("2026-03-01T12:00:05.123456Z") == moment
    assert parse_expiry("2026-03-01T12:00:05Z") == moment.replace(microsecond=0)
    assert parse_expiry("2026-03-01T13:00:05+01:00") == moment.replace(microsecond=0)
    for garbage in ("", "yesterday", 17, None):
        assert parse_expiry(garbage) is None
    with pytest.raises(ValueError):
        format_expiry(datetime(2026, 3, 1))  # naive


def test_locked_holds_an_exclusive_lock_on_the_sidecar(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "token.json")
    assert store.lock_path == str(tmp_path / "token.json.lock")

    def try_lock() -> bool:
        fd = os.open(store.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    with store.locked():
        assert _mode(store.lock_path) == 0o600
        assert not try_lock()
        # Replacing the data file does not release the lock.
        store.write({"token": "t"})
        assert not try_lock()
    assert try_lock()


def test_repr_shows_the_path_only(tmp_path: Path) -> None:
    path = _write(tmp_path / "token.json", {"refresh_token": SECRET})
    assert repr(TokenFile(path)) == f"TokenFile({str(path)!r})"


def test_the_chmod_advice_can_be_pasted_into_a_shell(tmp_path: Path) -> None:
    import shlex

    folder = tmp_path / "My Mail"
    folder.mkdir()
    path = _write(folder / "token.json", {"refresh_token": SECRET}, mode=0o644)
    with pytest.raises(InsecureTokenFile) as info:
        TokenFile(path).read()
    command = str(info.value).partition("`")[2].partition("`")[0]
    assert shlex.split(command) == ["chmod", "600", str(path)]
