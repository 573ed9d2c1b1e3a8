"""KeyringTokenStore on a keychain as small as Windows': fit, share, fail clearly."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import keyring
import keyring.backends.fail
import keyring.errors
import pytest
from _auth_helpers import REFRESHES, START, USER, open_url
from _file_keyring import WINDOWS_BLOB_BYTES, WindowsSizedKeyring

from gmail_xoauth2 import (
    MAIL_SCOPE,
    GoogleTokenProvider,
    KeyringTokenStore,
    TokenStore,
    authorize,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._keyring_store import MAX_CHARS
from gmail_xoauth2._store import format_expiry
from gmail_xoauth2.errors import ConfigurationError, TokenError
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle

SERVICE = "gmail-xoauth2-test"
HERE = Path(__file__).resolve().parent


def _chars(n: int, alphabet: str = string.ascii_letters + string.digits + "-_") -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def google_sized_record() -> dict[str, object]:
    """A record as Google issues it today, with google-auth's extra fields.

    Access tokens are about 250 characters (``ya29.`` and base64url), refresh
    tokens about 105 (``1//0``...), client ids and secrets as the Cloud console
    makes them. Google documents room for growth: access tokens up to 2,048
    bytes, refresh tokens up to 512.
    """
    return {
        "token": "ya29.a0" + _chars(246),
        "refresh_token": "1//0" + _chars(99),
        "token_uri": "https://oauth2.googleapis.com/token",
        "client_id": f"{secrets.randbelow(10**12):012d}-"
        f"{_chars(32, string.ascii_lowercase + string.digits)}"
        ".apps.googleusercontent.com",
        "client_secret": "GOCSPX-" + _chars(28),
        "scopes": [MAIL_SCOPE],
        "universe_domain": "googleapis.com",
        "account": "",
        "expiry": "2026-03-01T12:59:59.482513Z",
    }


@pytest.fixture
def restore_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    try:
        yield
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def backend(tmp_path: Path, restore_keyring: None) -> WindowsSizedKeyring:
    chain = WindowsSizedKeyring(tmp_path / "keychain.json")
    keyring.set_keyring(chain)
    return chain


@pytest.fixture
def store(tmp_path: Path, backend: WindowsSizedKeyring) -> KeyringTokenStore:
    return KeyringTokenStore(SERVICE, account=USER, lock_dir=tmp_path / "locks")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeGoogle]:
    with FakeGoogle(clock=clock) as google:
        google.add_user(USER)
        yield google


@pytest.fixture
def backoff() -> Backoff:
    return Backoff(base=1.0, attempts=3, sleep=lambda seconds: None)


@pytest.fixture
def seeded(
    fake: FakeGoogle, store: KeyringTokenStore, tmp_path: Path
) -> dict[str, object]:
    """The fake's record for USER, put in the keychain."""
    path = fake.write_authorized_user_file(tmp_path / "seed.json", USER)
    record: dict[str, object] = json.loads(path.read_text())
    path.unlink()
    with store.locked():
        assert store.save(record, replacing=None)
    return record


def _entry(backend: WindowsSizedKeyring) -> str:
    entry = backend.get_password(SERVICE, USER)
    assert entry is not None
    return entry


def test_the_test_keychain_refuses_what_windows_refuses(
    backend: WindowsSizedKeyring,
) -> None:
    backend.set_password(SERVICE, USER, "x" * (WINDOWS_BLOB_BYTES // 2))
    with pytest.raises(keyring.errors.PasswordSetError):
        backend.set_password(SERVICE, USER, "x" * (WINDOWS_BLOB_BYTES // 2 + 1))
    # Characters outside the BMP are two UTF-16 code units each.
    with pytest.raises(keyring.errors.PasswordSetError):
        backend.set_password(SERVICE, USER, "\U0001f4e7" * 641)


def test_a_google_sized_record_is_stored_whole_within_the_limit(
    store: KeyringTokenStore, backend: WindowsSizedKeyring
) -> None:
    record = google_sized_record()
    with store.locked():
        assert store.save(record, replacing=None)
    assert store.load() == record
    assert len(_entry(backend)) <= MAX_CHARS
    assert backend.largest <= WINDOWS_BLOB_BYTES
    assert store.load() == record  # what a second reader gets too


def test_extra_fields_go_first_when_a_record_is_too_long(
    store: KeyringTokenStore,
) -> None:
    # A reauthentication proof token (rapt_token) is long and not needed to refresh.
    record = {**google_sized_record(), "rapt_token": "AEjHL4" + _chars(700)}
    with store.locked():
        assert store.save(record, replacing=None)
    loaded = store.load()
    assert loaded is not None
    assert loaded["token"] == record["token"]
    assert loaded["refresh_token"] == record["refresh_token"]
    assert "rapt_token" not in loaded and "universe_domain" not in loaded


def test_an_access_token_too_long_is_left_out_and_the_refresh_token_kept(
    store: KeyringTokenStore, backend: WindowsSizedKeyring
) -> None:
    record = {**google_sized_record(), "token": "ya29." + _chars(2043)}  # 2,048
    with store.locked():
        assert store.save(record, replacing=None)
    loaded = store.load()
    assert loaded is not None
    assert "token" not in loaded and "expiry" not in loaded
    for field in ("refresh_token", "client_id", "client_secret", "token_uri"):
        assert loaded[field] == record[field]
    assert loaded["scopes"] == [MAIL_SCOPE]
    assert backend.largest <= WINDOWS_BLOB_BYTES
    # The next save compares against "no token", which is what load gave.
    with store.locked():
        assert store.save(google_sized_record(), replacing=None)


def test_a_record_that_cannot_fit_is_refused_and_the_entry_kept(
    store: KeyringTokenStore, backend: WindowsSizedKeyring
) -> None:
    good = google_sized_record()
    with store.locked():
        assert store.save(good, replacing=None)
    huge_secret = "GOCSPX-" + _chars(1300)
    with store.locked(), pytest.raises(ConfigurationError) as info:
        store.save({**good, "client_secret": huge_secret}, replacing=good["token"])  # type: ignore[arg-type]
    message = str(info.value)
    assert USER in message and str(MAX_CHARS) in message
    assert huge_secret not in message
    assert backend.writes == 1
    assert store.load() == good


def test_save_only_replaces_the_token_it_loaded(store: KeyringTokenStore) -> None:
    first, second = google_sized_record(), google_sized_record()
    with store.locked():
        assert store.save(first, replacing=None)
        assert not store.save(second, replacing=None)
        assert not store.save(second, replacing="ya29.someone-elses")
        assert store.load() == first
        assert store.save(second, replacing=str(first["token"]))
        assert store.load() == second


def test_one_refresh_for_many_providers_and_threads_under_the_lock_file(
    fake: FakeGoogle,
    seeded: dict[str, object],
    tmp_path: Path,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    # Four providers, each on its own store object (as four programs would
    # have), four threads each: only the lock file stands between them.
    providers = [
        GoogleTokenProvider.for_user(
            KeyringTokenStore(SERVICE, account=USER, lock_dir=tmp_path / "locks"),
            USER,
            clock=clock,
            backoff=backoff,
        )
        for _ in range(4)
    ]
    store = KeyringTokenStore(SERVICE, account=USER, lock_dir=tmp_path / "locks")
    clock.advance(timedelta(hours=1))
    fake.hold()
    barrier = threading.Barrier(16)
    results: list[str] = []
    errors: list[BaseException] = []

    def work(provider: GoogleTokenProvider) -> None:
        try:
            barrier.wait(timeout=30)
            results.append(provider.token())
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(provider,))
        for provider in providers
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    try:
        assert fake.wait_held(1, timeout=30)
        # The refresh in flight holds the host-wide lock file.
        fd = os.open(store.lock_path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        fake.release()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    assert len(results) == 16 and len(set(results)) == 1
    assert fake.request_count(**REFRESHES) == 1
    [token] = set(results)
    assert token != seeded["token"]
    stored = store.load()
    assert stored is not None
    assert stored["token"] == token
    assert stored["refresh_token"] == seeded["refresh_token"]
    assert all(provider.expiry == providers[0].expiry for provider in providers)
    expiry = providers[0].expiry
    assert expiry is not None and expiry > START + timedelta(hours=1, minutes=59)
    assert stored["expiry"] == format_expiry(expiry)


def test_a_second_provider_adopts_the_token_the_first_wrote(
    fake: FakeGoogle,
    seeded: dict[str, object],
    store: KeyringTokenStore,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    one = GoogleTokenProvider.for_user(store, USER, clock=clock, backoff=backoff)
    two = GoogleTokenProvider.for_user(store, USER, clock=clock, backoff=backoff)
    assert one.token() == two.token() == seeded["token"]
    clock.advance(timedelta(hours=1))
    token = one.token()
    assert two.token() == token
    assert two.expiry == one.expiry
    assert fake.request_count(**REFRESHES) == 1
    # A token the server rejected is not adopted again.
    assert two.token(force_refresh=True) != token
    assert fake.request_count(**REFRESHES) == 2
    assert one.token(force_refresh=True) == two.token()
    assert fake.request_count(**REFRESHES) == 2


def test_authorize_saves_into_the_keychain(
    fake: FakeGoogle,
    store: KeyringTokenStore,
    tmp_path: Path,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    provider = authorize(
        secrets_file,
        store,
        login_hint=USER,
        open_url=open_url,
        clock=clock,
        backoff=backoff,
    )
    stored = store.load()
    assert stored is not None
    assert stored["token"] == provider.token()
    assert str(stored["refresh_token"]).startswith("1//")
    clock.advance(timedelta(hours=1))
    again = GoogleTokenProvider.for_user(store, USER, clock=clock, backoff=backoff)
    assert fake.lookup(again.token()).email == USER  # type: ignore[union-attr]
    assert not list(tmp_path.glob("*.json.lock"))  # no token file was involved


def test_no_keychain_is_a_configuration_error_saying_what_to_use(
    tmp_path: Path, restore_keyring: None
) -> None:
    keyring.set_keyring(keyring.backends.fail.Keyring())
    store = KeyringTokenStore(SERVICE, account=USER, lock_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="no OS keychain") as info:
        GoogleTokenProvider.for_user(store, USER)
    assert "token file or a Redis store" in str(info.value)
    assert isinstance(info.value.__cause__, keyring.errors.NoKeyringError)
    with store.locked(), pytest.raises(ConfigurationError, match="no OS keychain"):
        store.save(google_sized_record(), replacing=None)


def test_a_locked_keychain_is_a_retryable_token_error(
    fake: FakeGoogle,
    seeded: dict[str, object],
    store: KeyringTokenStore,
    backend: WindowsSizedKeyring,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    provider = GoogleTokenProvider.for_user(store, USER, clock=clock, backoff=backoff)
    backend.refuse = keyring.errors.KeyringLocked("the keychain is locked")
    # A valid token in hand needs no keychain.
    assert provider.token() == seeded["token"]
    clock.advance(timedelta(hours=1))
    with pytest.raises(TokenError) as info:
        provider.token()
    assert info.value.retryable is True
    message = str(info.value)
    assert f"{SERVICE}/{USER}" in message and "unlock" in message
    assert "KeyringLocked" in message
    assert fake.request_count(**REFRESHES) == 0
    # Unlocked: the next call refreshes and writes back.
    backend.refuse = None
    token = provider.token()
    assert fake.request_count(**REFRESHES) == 1
    assert store.load()["token"] == token  # type: ignore[index]


def test_a_refused_write_is_a_retryable_token_error(
    store: KeyringTokenStore, backend: WindowsSizedKeyring
) -> None:
    with store.locked():
        assert store.save(google_sized_record(), replacing=None)
    record = store.load()
    assert record is not None

    class RefusingWrites(WindowsSizedKeyring):
        def set_password(self, service: str, username: str, password: str) -> None:
            raise keyring.errors.PasswordSetError("access denied")

    keyring.set_keyring(RefusingWrites(backend.path))
    with store.locked(), pytest.raises(TokenError) as info:
        store.save(google_sized_record(), replacing=str(record["token"]))
    assert info.value.retryable is True
    assert "writing" in str(info.value)


def test_an_entry_that_is_not_a_record_is_a_configuration_error(
    store: KeyringTokenStore, backend: WindowsSizedKeyring
) -> None:
    secret = "1//0" + _chars(99)
    backend.set_password(SERVICE, USER, f"refresh={secret}")
    with pytest.raises(ConfigurationError, match="not a token record") as info:
        store.load()
    assert secret not in str(info.value)
    backend.set_password(SERVICE, USER, json.dumps([secret]))
    with pytest.raises(ConfigurationError, match="not a record") as info:
        store.load()
    assert secret not in str(info.value)
    # An unreadable entry is replaced by the next save.
    with store.locked():
        assert store.save(google_sized_record(), replacing=None)


def test_no_secret_in_reprs_or_logs(
    fake: FakeGoogle,
    seeded: dict[str, object],
    store: KeyringTokenStore,
    clock: ManualClock,
    backoff: Backoff,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    provider = GoogleTokenProvider.for_user(store, USER, clock=clock, backoff=backoff)
    clock.advance(timedelta(hours=1))
    token = provider.token()
    shown = repr(store) + repr(provider) + caplog.text
    assert repr(store) == f"KeyringTokenStore({SERVICE!r}, account={USER!r})"
    for secret in (token, seeded["token"], seeded["refresh_token"]):
        assert str(secret) not in shown
    assert str(seeded["client_secret"]) not in shown


def test_for_account_and_delete(store: KeyringTokenStore, tmp_path: Path) -> None:
    other = store.for_account("bob@example.com")
    assert isinstance(other, TokenStore)
    assert other.service == SERVICE and other.account == "bob@example.com"
    assert os.path.dirname(other.lock_path) == str(tmp_path / "locks")
    assert other.lock_path != store.lock_path
    with other.locked():
        assert other.save(google_sized_record(), replacing=None)
    assert store.load() is None
    other.delete()
    other.delete()  # already gone: fine
    assert other.load() is None
    with pytest.raises(ConfigurationError):
        KeyringTokenStore(SERVICE, account="")


_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import keyring
from _file_keyring import WindowsSizedKeyring
from gmail_xoauth2 import GoogleTokenProvider, KeyringTokenStore
keyring.set_keyring(WindowsSizedKeyring(sys.argv[2]))
store = KeyringTokenStore(sys.argv[3], account=sys.argv[4], lock_dir=sys.argv[5])
provider = GoogleTokenProvider.for_user(store, sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()
print(provider.token(), flush=True)
"""


def test_three_processes_on_one_keychain_entry_refresh_once(
    tmp_path: Path, restore_keyring: None
) -> None:
    chain = WindowsSizedKeyring(tmp_path / "keychain.json")
    keyring.set_keyring(chain)
    locks = tmp_path / "locks"
    with FakeGoogle() as fake:  # the real clock: the children use it too
        fake.add_user(USER)
        seed = fake.write_authorized_user_file(
            tmp_path / "seed.json", USER, expired=True
        )
        store = KeyringTokenStore(SERVICE, account=USER, lock_dir=locks)
        with store.locked():
            assert store.save(json.loads(seed.read_text()), replacing=None)
        args = [str(HERE), chain.path, SERVICE, USER, str(locks)]
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline() == "ready\n"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = [child.communicate(timeout=30) for child in children]
        finally:
            for child in children:
                child.kill()
                child.wait()
        assert [child.returncode for child in children] == [0, 0, 0], outputs
        tokens = {out.strip() for out, _ in outputs}
        assert len(tokens) == 1
        assert fake.request_count(**REFRESHES) == 1
        stored = store.load()
        assert stored is not None and stored["token"] == tokens.pop()
