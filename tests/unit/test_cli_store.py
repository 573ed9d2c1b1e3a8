"""``--store URL``: the command's tokens in Redis, a token directory or the keychain.

Each ``main()`` call opens its own store, as a mail program on another host would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import keyring.errors
import pytest
import redis
from _redis_server import RedisServer, redis_or_skip, redis_server

from gmail_xoauth2 import KeyringTokenStore, RedisTokenStore, cli
from gmail_xoauth2.stores import TokenStore
from gmail_xoauth2.testing.gmail import FakeGmail
from gmail_xoauth2.testing.google import FakeGoogle

__all__ = ["redis_server"]

USER = "alice@example.com"
PASSWORD = "hunter2-redis-password"
REFRESHES = {"path": "/token", "grant_type": "refresh_token"}


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        fake.add_user(USER)
        yield fake


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that wants a password."""
    redis_or_skip()
    directory = tmp_path / "redis-pw"
    directory.mkdir()
    with RedisServer(directory, password=PASSWORD) as server:
        yield server


def seed(
    store: TokenStore, google: FakeGoogle, tmp_path: Path, *, expired: bool = False
) -> dict[str, object]:
    """Put a fresh grant of USER in ``store``, as `authorize --store` would."""
    path = google.write_authorized_user_file(
        tmp_path / "seed.json", USER, expired=expired
    )
    data: dict[str, object] = json.loads(path.read_text())
    path.unlink()
    with store.locked():
        assert store.save(data, replacing=None)
    return data


def token_argv(url: str, *extra: str) -> list[str]:
    return ["token", "--store", url, "--user", USER, *extra]


def consenting_browser(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``webbrowser.open`` consent on the fake's page; return the URLs seen."""
    import webbrowser

    import requests

    visited: list[str] = []

    def browser(url: str, *args: object, **kwargs: object) -> bool:
        visited.append(url)
        requests.get(url, timeout=10).close()  # consents and follows the redirect
        return True

    monkeypatch.setattr(webbrowser, "open", browser)
    return visited


# --- Redis: a fleet of hosts ------------------------------------------------------


def test_two_hosts_share_one_refresh(
    redis_server: RedisServer,
    google: FakeGoogle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = seed(
        RedisTokenStore(redis_server.url, account=USER), google, tmp_path, expired=True
    )
    assert cli.main(token_argv(redis_server.url)) == 0  # host A refreshes
    assert cli.main(token_argv(redis_server.url)) == 0  # host B finds it
    first, second = capsys.readouterr().out.splitlines()
    assert first == second != old["token"]
    assert google.lookup(first) is not None
    assert google.request_count(**REFRESHES) == 1
    stored = RedisTokenStore(redis_server.url, account=USER).load()
    assert stored is not None and stored["token"] == first


def test_hosts_refreshing_at_once_refresh_once(
    redis_server: RedisServer,
    google: FakeGoogle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed(
        RedisTokenStore(redis_server.url, account=USER), google, tmp_path, expired=True
    )
    refused = threading.Event()  # someone found the refresh lock taken
    real_set = redis.Redis.set

    def set_(self: redis.Redis, *args: Any, **kwargs: Any) -> Any:
        taken = real_set(self, *args, **kwargs)
        if kwargs.get("nx") and not taken:
            refused.set()
        return taken

    monkeypatch.setattr(redis.Redis, "set", set_)
    statuses: list[int] = []

    def host() -> None:
        statuses.append(cli.main(token_argv(redis_server.url)))

    google.hold()
    a = threading.Thread(target=host)
    b = threading.Thread(target=host)
    a.start()
    try:
        assert google.wait_held(1)  # A refreshes under the lock, held at Google
        b.start()
        assert refused.wait(30)  # B waits for A's lock instead of refreshing
    finally:
        google.release()
        a.join(30)
        if b.ident is not None:
            b.join(30)
    assert statuses == [0, 0]
    first, second = capsys.readouterr().out.splitlines()
    assert first == second
    assert google.lookup(first) is not None
    assert google.request_count(**REFRESHES) == 1


def test_force_refresh_replaces_the_shared_token(
    redis_server: RedisServer,
    google: FakeGoogle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = seed(RedisTokenStore(redis_server.url, account=USER), google, tmp_path)
    assert cli.main(token_argv(redis_server.url)) == 0
    assert capsys.readouterr().out == f"{old['token']}\n"  # valid: no refresh
    assert google.request_count(**REFRESHES) == 0
    assert cli.main(token_argv(redis_server.url, "--force-refresh")) == 0
    new = capsys.readouterr().out.strip()
    assert new != old["token"] and google.lookup(new) is not None
    assert google.request_count(**REFRESHES) == 1
    assert cli.main(token_argv(redis_server.url)) == 0
    assert capsys.readouterr().out == f"{new}\n"


def test_string_and_check_read_the_store(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64

    with FakeGmail(users=(USER,)) as gmail:
        data = seed(
            RedisTokenStore(redis_server.url, account=USER), gmail.google, tmp_path
        )
        argv = ["string", "--store", redis_server.url, "--user", USER]
        assert cli.main(argv) == 0
        string = capsys.readouterr().out.strip()
        assert base64.b64decode(string) == (
            f"user={USER}\x01auth=Bearer {data['token']}\x01\x01".encode()
        )
        argv = ["check", "--store", redis_server.url, "--user", USER, "--imap"]
        argv += ["--host", gmail.host, "--imap-port", str(gmail.imap_port)]
        assert cli.main([*argv, "--cafile", gmail.ca_file]) == 0
        assert capsys.readouterr().out.split()[:2] == ["imap", "ok"]


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (["token"], "a Redis store"),
        (["revoke"], "a Redis store"),
        (["authorize", "--client-secrets", "client.json"], "a Redis store"),
    ],
)
def test_a_redis_store_needs_the_user(
    command: list[str], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:9/0"
    assert cli.main([*command, "--store", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"gmail-xoauth2: error: {kind} keeps the tokens of many accounts: name one "
        "with --user EMAIL\n"
    )


def test_token_file_and_store_exclude_each_other(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["token", "--token-file", "t.json", "--store", "redis://127.0.0.1:9/0"]
    assert cli.main(argv) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert cli.main(["string", "--user", USER]) == 2
    assert "one of the arguments --token-file --store is required" in (
        capsys.readouterr().err
    )


def test_the_redis_password_is_never_printed(
    locked_redis: RedisServer,
    google: FakeGoogle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = locked_redis.url
    assert PASSWORD in url
    seed(RedisTokenStore(url, account=USER), google, tmp_path, expired=True)
    assert cli.main(token_argv(url)) == 0
    assert cli.main(["token", "--store", url, "--user", "bob@example.com"]) == 2
    wrong = url.replace(PASSWORD, PASSWORD + "-wrong")
    assert cli.main(token_argv(wrong)) == 1
    locked_redis.stop()
    assert cli.main(token_argv(url)) == 1
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    no_record, refused, stopped = captured.err.splitlines()
    assert "holds no token for bob@example.com" in no_record
    assert refused.startswith("gmail-xoauth2: error: Redis (redis 127.0.0.1:")
    # The short line a mail program shows: what failed, where, and no traceback.
    assert stopped.startswith("gmail-xoauth2: error: Redis (redis 127.0.0.1:")
    assert f":{locked_redis.port}/0) could not be reached" in stopped
    assert len(stopped) < 250


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        (
            "rediss://me:pw@h/0?password=pw&db=2",
            "rediss://me:***@h/0?password=***&db=2",
        ),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
        ("redis://me@h/0", "redis://me@h/0"),
        ("keyring:mail", "keyring:mail"),
    ],
)
def test_a_printed_url_hides_the_password(url: str, shown: str) -> None:
    assert cli._shown_url(url) == shown


def test_authorize_saves_the_grant_in_redis(
    locked_redis: RedisServer,
    google: FakeGoogle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("GMAIL_XOAUTH2_STORE_KEY", key)
    visited = consenting_browser(monkeypatch)
    secrets = google.write_client_secrets_file(tmp_path / "client.json")
    argv = ["authorize", "--client-secrets", str(secrets)]
    assert cli.main([*argv, "--store", locked_redis.url, "--user", USER]) == 0
    assert len(visited) == 1
    assert google.auth_requests()[0]["login_hint"] == USER
    store = RedisTokenStore(locked_redis.url, account=USER, encryption_key=key)
    data = store.load()
    assert data is not None
    assert google.lookup(data["token"]).email == USER  # type: ignore[arg-type,union-attr]
    raw = redis.Redis.from_url(locked_redis.url).hget(store.key, "data")
    assert raw is not None and str(data["refresh_token"]).encode() not in raw
    out = capsys.readouterr().out
    assert out.startswith(f"Saved the token of {USER} in RedisTokenStore(redis ")
    assert f"--store redis://:***@127.0.0.1:{locked_redis.port}/0 --user {USER}" in out
    for secret in (PASSWORD, key, data["token"], data["refresh_token"]):
        assert str(secret) not in out
    # Every host with the URL and the key now gets the token, without a refresh.
    assert cli.main(token_argv(locked_redis.url)) == 0
    assert capsys.readouterr().out == f"{data['token']}\n"
    assert google.request_count(**REFRESHES) == 0


def test_authorize_fails_before_the_consent_page_when_redis_is_down(
    locked_redis: RedisServer,
    google: FakeGoogle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    visited = consenting_browser(monkeypatch)
    secrets = google.write_client_secrets_file(tmp_path / "client.json")
    locked_redis.stop()
    argv = ["authorize", "--client-secrets", str(secrets), "--store"]
    assert cli.main([*argv, locked_redis.url, "--user", USER]) == 1
    assert visited == []
    err = capsys.readouterr().err
    assert "could not be reached" in err and PASSWORD not in err


def test_revoke_revokes_at_google_and_deletes_the_record(
    redis_server: RedisServer,
    google: FakeGoogle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = RedisTokenStore(redis_server.url, account=USER)
    data = seed(store, google, tmp_path)
    argv = ["revoke", "--store", redis_server.url, "--user", USER]
    assert cli.main(argv) == 0
    assert google.lookup(str(data["token"])) is None
    assert google.request_count("/revoke") == 1
    assert store.load() is None
    assert redis.Redis.from_url(redis_server.url).exists(store.key) == 0
    assert capsys.readouterr().out == (
        f"Revoked the token and deleted it from {store!r}.\n"
    )
    # Nothing left: a usage error, and Google is not asked again.
    assert cli.main(argv) == 2
    assert "holds no token" in capsys.readouterr().err
    assert google.request_count("/revoke") == 1


def test_revoke_keeps_the_record_when_google_fails(
    redis_server: RedisServer,
    google: FakeGoogle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = RedisTokenStore(redis_server.url, account=USER)
    seed(store, google, tmp_path)
    google.fail_next(503, path="/revoke")
    assert cli.main(["revoke", "--store", redis_server.url, "--user", USER]) == 1
    assert "HTTP 503" in capsys.readouterr().err
    assert store.load() is not None


# --- a token directory, a single file, the keychain ----------------------------


def test_a_directory_store_keeps_a_file_per_user(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "tokens"
    directory.mkdir(mode=0o700)
    path = google.write_authorized_user_file(
        directory / f"{USER}.json", USER, expired=True
    )
    url = f"{directory}/"
    assert cli.main(["token", "--store", url]) == 2
    assert "a token directory keeps the tokens of many accounts" in (
        capsys.readouterr().err
    )
    assert cli.main(token_argv(url)) == 0
    printed = capsys.readouterr().out.strip()
    assert google.lookup(printed) is not None
    assert json.loads(path.read_text())["token"] == printed
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert cli.main(["revoke", "--store", url, "--user", USER]) == 0
    assert capsys.readouterr().out == f"Revoked the token and deleted {path}.\n"
    assert not path.exists()


def test_a_file_store_needs_no_user(
    google: FakeGoogle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = google.write_authorized_user_file(tmp_path / "t.json", USER, expired=True)
    assert cli.main(["token", "--store", f"file:{path}"]) == 0
    printed = capsys.readouterr().out.strip()
    assert json.loads(path.read_text())["token"] == printed
    assert google.request_count(**REFRESHES) == 1


class MemoryKeyring(keyring.backend.KeyringBackend):
    """An OS keychain in a dict."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[service, username] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


@pytest.fixture
def memory_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MemoryKeyring]:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # the lock files
    previous = keyring.get_keyring()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    try:
        yield memory
    finally:
        keyring.set_keyring(previous)


def test_a_keyring_store_refreshes_and_revokes(
    memory_keyring: MemoryKeyring,
    google: FakeGoogle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed(KeyringTokenStore("mail-test", account=USER), google, tmp_path, expired=True)
    assert cli.main(token_argv("keyring:mail-test")) == 0
    printed = capsys.readouterr().out.strip()
    assert google.lookup(printed) is not None
    assert json.loads(memory_keyring.entries["mail-test", USER])["token"] == printed
    assert cli.main(token_argv("keyring:mail-test")) == 0
    assert capsys.readouterr().out.strip() == printed
    assert google.request_count(**REFRESHES) == 1
    assert cli.main(["revoke", "--store", "keyring:mail-test", "--user", USER]) == 0
    assert memory_keyring.entries == {}


# --- the token file's fast path stays light -------------------------------------

FAST_PATH_PROBE = """
import sys
from gmail_xoauth2.cli import main
status = main(["token", "--token-file", sys.argv[1]])
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {"redis", "keyring", "cryptography"}
    or name in {"gmail_xoauth2.stores", "gmail_xoauth2._redis_store"}
)
print("LOADED", loaded, file=sys.stderr)
sys.exit(status)
"""


def test_token_file_fast_path_imports_no_store(
    google: FakeGoogle, tmp_path: Path
) -> None:
    path = google.write_authorized_user_file(tmp_path / "t.json", USER)
    result = subprocess.run(
        [sys.executable, "-c", FAST_PATH_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stderr
