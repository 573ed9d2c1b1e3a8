"""Token stores: the protocol, token directories, store URLs, a provider per user."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from _auth_helpers import REFRESHES, START, USER, open_url
from cryptography.fernet import Fernet

from gmail_xoauth2 import (
    GoogleTokenProvider,
    KeyringTokenStore,
    RedisTokenStore,
    TokenDirectory,
    TokenFile,
    TokenStore,
    TokenStores,
    authorize,
    open_store,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._store import token_of
from gmail_xoauth2.errors import ConfigurationError, TokenError
from gmail_xoauth2.stores import describe_store
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle

BOB = "bob@example.com"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeGoogle]:
    with FakeGoogle(clock=clock) as google:
        google.add_user(USER)
        google.add_user(BOB)
        yield google


@pytest.fixture
def backoff() -> Backoff:
    return Backoff(base=1.0, attempts=2, sleep=lambda seconds: None)


@pytest.fixture
def client(fake: FakeGoogle, tmp_path: Path) -> Path:
    return fake.write_client_secrets_file(tmp_path / "client_secret.json")


@pytest.fixture
def users(tmp_path: Path) -> TokenDirectory:
    return TokenDirectory(tmp_path / "tokens")


def _seed(fake: FakeGoogle, users: TokenDirectory, user: str, **fields: object) -> Path:
    """Put the fake's record for ``user`` in the directory, with ``fields`` changed."""
    os.makedirs(users.path, mode=0o700, exist_ok=True)
    path = Path(users.for_account(user).path)
    fake.write_authorized_user_file(path, user)
    if fields:
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return path


def _mode(path: str | os.PathLike[str]) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- TokenDirectory --------------------------------------------------------


def test_a_token_directory_keeps_one_0600_file_per_account(
    users: TokenDirectory,
) -> None:
    ann, bob = users.for_account(USER), users.for_account(BOB)
    assert ann.path == os.path.join(users.path, f"{USER}.json")
    assert bob.path == os.path.join(users.path, f"{BOB}.json")
    for store, token in ((ann, "ya29.ann"), (bob, "ya29.bob")):
        with store.locked():
            assert store.save({"token": token}, replacing=None)
    assert _mode(users.path) == 0o700
    assert _mode(ann.path) == _mode(bob.path) == 0o600
    assert ann.load() == {"token": "ya29.ann"}
    assert bob.load() == {"token": "ya29.bob"}
    assert sorted(os.listdir(users.path)) == sorted(
        [f"{USER}.json", f"{USER}.json.lock", f"{BOB}.json", f"{BOB}.json.lock"]
    )
    assert repr(users) == f"TokenDirectory({users.path!r})"


def test_a_token_directory_expands_the_home_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert TokenDirectory("~/tokens").path == str(tmp_path / "tokens")


@pytest.mark.parametrize(
    "account",
    ["", ".", "..", ".hidden", "../ann", "a/b", "a\\b", "a\0b", "a\nb", "a\tb"],
)
def test_an_account_that_cannot_name_a_file_is_refused(
    users: TokenDirectory, account: str
) -> None:
    with pytest.raises(ConfigurationError, match="cannot name a token file"):
        users.for_account(account)
    assert not os.path.exists(users.path)


@pytest.mark.parametrize("account", [USER, "ann+work@example.com", "josé@example.com"])
def test_addresses_name_files(users: TokenDirectory, account: str) -> None:
    assert os.path.basename(users.for_account(account).path) == account + ".json"


def test_the_stores_satisfy_the_protocols(tmp_path: Path) -> None:
    users = TokenDirectory(tmp_path)
    assert isinstance(users, TokenStores) and not isinstance(users, TokenStore)
    assert isinstance(users.for_account(USER), TokenStore)
    assert isinstance(TokenFile(tmp_path / "t.json"), TokenStore)
    redis_store = RedisTokenStore("redis://127.0.0.1:1/0", account=USER)
    keyring_store = KeyringTokenStore(account=USER, lock_dir=tmp_path)
    for store in (redis_store, keyring_store):
        assert isinstance(store, TokenStore) and isinstance(store, TokenStores)


# -- open_store ------------------------------------------------------------


def test_a_plain_path_or_file_url_opens_a_token_file(tmp_path: Path) -> None:
    path = str(tmp_path / "token.json")
    for url in (path, f"file:{path}"):
        store = open_store(url)
        assert isinstance(store, TokenFile) and store.path == path
    # A single file needs no account; one given is not used to name it.
    assert open_store(path, account=USER).path == path  # type: ignore[attr-defined]


def test_a_path_ending_in_a_slash_opens_a_token_directory(tmp_path: Path) -> None:
    for url in (f"{tmp_path}/", f"file:{tmp_path}/"):
        store = open_store(url, account=USER)
        assert isinstance(store, TokenFile)
        assert store.path == str(tmp_path / f"{USER}.json")
    with pytest.raises(ConfigurationError, match="--user"):
        open_store(f"{tmp_path}/")
    with pytest.raises(ConfigurationError, match="cannot name a token file"):
        open_store(f"{tmp_path}/", account="../elsewhere")


@pytest.mark.parametrize(
    ("url", "service"),
    [
        ("keyring:", "gmail-xoauth2"),
        ("keyring:myapp", "myapp"),
        ("keyring://myapp", "myapp"),
    ],
)
def test_keyring_urls_open_a_keyring_store(url: str, service: str) -> None:
    store = open_store(url, account=USER)
    assert isinstance(store, KeyringTokenStore)
    assert (store.service, store.account) == (service, USER)
    with pytest.raises(ConfigurationError, match="name one"):
        open_store(url)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://127.0.0.1:6399/2", "redis 127.0.0.1:6399/2"),
        ("redis://:hunter2-secret@127.0.0.1:6399", "redis 127.0.0.1:6399/0"),
        ("redis://me:hunter2-secret@127.0.0.1/5", "redis 127.0.0.1:6379/5"),
        ("rediss://127.0.0.1:6380/1", "rediss 127.0.0.1:6380/1"),
        ("unix:///run/redis/redis.sock", "redis /run/redis/redis.sock"),
    ],
)
def test_redis_urls_open_a_redis_store_without_connecting(
    url: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GMAIL_XOAUTH2_STORE_KEY", raising=False)
    store = open_store(url, account=USER)  # nothing listens: Redis is reached lazily
    assert isinstance(store, RedisTokenStore)
    assert repr(store) == f"RedisTokenStore({where}, account={USER!r})"
    assert "hunter2" not in repr(store) and "hunter2" not in describe_store(store)
    with pytest.raises(ConfigurationError, match="name one"):
        open_store(url)


def test_a_redis_url_reads_its_encryption_keys_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("GMAIL_XOAUTH2_STORE_KEY", f"{new},{old}")
    store = open_store("redis://127.0.0.1:6399/0", account=USER)
    assert repr(store).endswith(", encrypted)")
    assert new not in repr(store)
    monkeypatch.setenv("GMAIL_XOAUTH2_STORE_KEY", "not-a-fernet-key")
    with pytest.raises(ConfigurationError, match="Fernet key") as info:
        open_store("redis://127.0.0.1:6399/0", account=USER)
    assert "not-a-fernet-key" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["s3://bucket/tokens", "http://127.0.0.1/t", "postgres://db/t"]
)
def test_an_unknown_scheme_is_a_configuration_error(url: str) -> None:
    scheme = url.partition(":")[0]
    with pytest.raises(
        ConfigurationError, match=f"unknown store URL scheme '{scheme}'"
    ):
        open_store(url, account=USER)


# -- TokenFile.save: compare-and-set ---------------------------------------


def test_save_writes_only_over_the_token_it_loaded(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "token.json")
    with store.locked():
        assert store.save({"token": "one"}, replacing=None)  # no file yet
        assert not store.save({"token": "two"}, replacing=None)  # one is there now
        assert not store.save({"token": "two"}, replacing="zero")
        assert store.load() == {"token": "one"}
        assert store.save({"token": "two", "refresh_token": "r2"}, replacing="one")
        assert store.load() == {"token": "two", "refresh_token": "r2"}
        # A late writer that loaded "one" cannot put it back over "two".
        assert not store.save({"token": "one-again"}, replacing="one")
        assert token_of(store.load()) == "two"


def test_save_over_a_record_without_a_token_compares_as_none(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "token.json")
    store.write({"refresh_token": "r", "token": ""})
    with store.locked():
        assert not store.save({"token": "t"}, replacing="")
        assert store.save({"token": "t"}, replacing=None)


def test_save_replaces_an_unreadable_file_only_when_nothing_was_loaded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token.json"
    path.write_text("{not json")
    path.chmod(0o600)
    store = TokenFile(path)
    with store.locked():
        assert not store.save({"token": "t"}, replacing="something")
        assert store.save({"token": "t"}, replacing=None)  # the repair
    assert store.load() == {"token": "t"}
    assert _mode(path) == 0o600


# -- GoogleTokenProvider.for_user ------------------------------------------


def test_one_client_and_one_directory_serve_two_users(
    fake: FakeGoogle,
    users: TokenDirectory,
    client: Path,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    ann_file = _seed(fake, users, USER)
    bob_file = _seed(fake, users, BOB)
    ann = GoogleTokenProvider.for_user(
        users, USER, client=client, clock=clock, backoff=backoff
    )
    bob = GoogleTokenProvider.for_user(
        users, BOB, client=client, clock=clock, backoff=backoff
    )
    assert fake.lookup(ann.token()).email == USER  # type: ignore[union-attr]
    assert fake.lookup(bob.token()).email == BOB  # type: ignore[union-attr]
    bob_before = json.loads(bob_file.read_text())
    clock.advance(timedelta(hours=1))
    token = ann.token()
    assert fake.lookup(token).email == USER  # type: ignore[union-attr]
    assert fake.request_count(**REFRESHES) == 1
    # Each refreshes and writes only its own record.
    assert json.loads(ann_file.read_text())["token"] == token
    assert json.loads(bob_file.read_text()) == bob_before
    assert fake.lookup(bob.token()).email == BOB  # type: ignore[union-attr]
    assert fake.request_count(**REFRESHES) == 2
    # Another provider of the same user adopts what the first wrote.
    again = GoogleTokenProvider.for_user(users, USER, client=client, clock=clock)
    assert again.token() == token
    assert fake.request_count(**REFRESHES) == 2


def test_a_provider_per_user_from_a_store_of_one_account(
    fake: FakeGoogle, users: TokenDirectory, clock: ManualClock, backoff: Backoff
) -> None:
    _seed(fake, users, USER)
    store = users.for_account(USER)
    provider = GoogleTokenProvider.for_user(store, USER, clock=clock, backoff=backoff)
    assert repr(provider).endswith(f"store={store!r})")
    assert fake.lookup(provider.token()).email == USER  # type: ignore[union-attr]


def test_a_user_without_a_record_is_told_to_authorize(
    users: TokenDirectory, client: Path
) -> None:
    with pytest.raises(ConfigurationError) as info:
        GoogleTokenProvider.for_user(users, BOB, client=client)
    message = str(info.value)
    assert BOB in message
    assert f"gmail-xoauth2 authorize --user {BOB}" in message
    assert users.for_account(BOB).path in message


def test_a_record_of_another_account_is_refused(
    fake: FakeGoogle, users: TokenDirectory, client: Path
) -> None:
    _seed(fake, users, USER, account=BOB)
    with pytest.raises(ConfigurationError) as info:
        GoogleTokenProvider.for_user(users, USER, client=client)
    assert f"holds the token of {BOB}, not of {USER}" in str(info.value)
    # A record that names its own account, or none, is fine.
    _seed(fake, users, USER, account=USER)
    GoogleTokenProvider.for_user(users, USER, client=client)
    _seed(fake, users, USER, account="")
    GoogleTokenProvider.for_user(users, USER, client=client)


def test_the_client_configuration_overrides_the_records_client(
    fake: FakeGoogle,
    users: TokenDirectory,
    client: Path,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    # A record written for an old client, pointing at an endpoint that is gone.
    stale = {
        "client_id": "000000000000-old.apps.googleusercontent.com",
        "client_secret": "GOCSPX-old-secret",
        "token_uri": "http://127.0.0.1:9/token",
    }
    path = _seed(fake, users, USER, **stale)
    provider = GoogleTokenProvider.for_user(
        users, USER, client=client, clock=clock, backoff=backoff
    )
    clock.advance(timedelta(hours=1))
    token = provider.token()
    assert fake.lookup(token).client_id == fake.client_id  # type: ignore[union-attr]
    written = json.loads(path.read_text())
    assert written["client_id"] == fake.client_id
    assert written["token_uri"] == fake.token_uri
    # Without client=, the record's own (stale) client is used, and fails.
    path.write_text(json.dumps({**written, **stale}))
    own = GoogleTokenProvider.for_user(users, USER, clock=clock, backoff=backoff)
    with pytest.raises(TokenError) as info:
        own.token(force_refresh=True)
    assert "GOCSPX-old-secret" not in str(info.value)


def test_a_client_file_that_is_not_a_client_configuration_is_refused(
    fake: FakeGoogle, users: TokenDirectory, tmp_path: Path
) -> None:
    _seed(fake, users, USER)
    bad = tmp_path / "client.json"
    bad.write_text(json.dumps({"web": {}}))
    with pytest.raises(ConfigurationError):
        GoogleTokenProvider.for_user(users, USER, client=bad)


def test_authorize_saves_into_a_token_directory(
    fake: FakeGoogle,
    users: TokenDirectory,
    client: Path,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    provider = authorize(
        client,
        users.for_account(BOB),
        login_hint=BOB,
        open_url=open_url,
        clock=clock,
        backoff=backoff,
    )
    path = users.for_account(BOB).path
    assert _mode(path) == 0o600 and _mode(users.path) == 0o700
    assert json.loads(Path(path).read_text())["token"] == provider.token()
    later = GoogleTokenProvider.for_user(users, BOB, client=client, clock=clock)
    assert later.token() == provider.token()
    assert fake.lookup(later.token()).email == BOB  # type: ignore[union-attr]


# -- a store written by the user -------------------------------------------


class MemoryStores:
    """Many accounts' records in a dict, as a user might write a store.

    A real one would keep them in the app's database; the protocol is the
    same: ``load``, ``save`` (compare-and-set on the token), ``locked``.
    """

    def __init__(self) -> None:
        self.records: dict[str, str] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()
        self.saves = 0

    def for_account(self, account: str) -> MemoryStore:
        with self.guard:
            lock = self.locks.setdefault(account, threading.Lock())
        return MemoryStore(self, account, lock)


class MemoryStore:
    def __init__(self, stores: MemoryStores, account: str, lock: threading.Lock):
        self._stores, self._account, self._lock = stores, account, lock

    def load(self) -> dict[str, object] | None:
        raw = self._stores.records.get(self._account)
        return None if raw is None else dict(json.loads(raw))

    def save(self, data: Mapping[str, object], *, replacing: str | None) -> bool:
        with self._stores.guard:
            if token_of(self.load()) != replacing:
                return False
            self._stores.records[self._account] = json.dumps(dict(data))
            self._stores.saves += 1
            return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def __repr__(self) -> str:
        return f"MemoryStore({self._account!r})"


def test_a_store_written_by_the_user_serves_providers_and_threads(
    fake: FakeGoogle,
    users: TokenDirectory,
    client: Path,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    stores = MemoryStores()
    assert isinstance(stores, TokenStores)
    assert isinstance(stores.for_account(USER), TokenStore)
    assert describe_store(stores.for_account(USER)) == f"MemoryStore({USER!r})"
    for user in (USER, BOB):
        seed = json.loads(_seed(fake, users, user).read_text())
        with stores.for_account(user).locked():
            assert stores.for_account(user).save(seed, replacing=None)
    providers = [
        GoogleTokenProvider.for_user(
            stores, user, client=client, clock=clock, backoff=backoff
        )
        for user in (USER, BOB)
        for _ in range(3)
    ]
    clock.advance(timedelta(hours=1))
    barrier = threading.Barrier(24)
    results: dict[int, set[str]] = {index: set() for index in range(len(providers))}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index].add(providers[index].token())
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(index,))
        for index in range(len(providers))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    # One refresh per account, however many providers and threads.
    assert fake.request_count(**REFRESHES) == 2
    ann_tokens = set().union(*(results[i] for i in range(3)))
    bob_tokens = set().union(*(results[i] for i in range(3, 6)))
    assert len(ann_tokens) == len(bob_tokens) == 1
    assert fake.lookup(ann_tokens.pop()).email == USER  # type: ignore[union-attr]
    assert fake.lookup(bob_tokens.pop()).email == BOB  # type: ignore[union-attr]
    assert stores.saves == 4  # two seeds, two refreshes


def test_a_refresh_that_lost_the_race_does_not_overwrite_the_store(
    fake: FakeGoogle,
    users: TokenDirectory,
    client: Path,
    clock: ManualClock,
    backoff: Backoff,
) -> None:
    stores = MemoryStores()
    store = stores.for_account(USER)
    seed = json.loads(_seed(fake, users, USER).read_text())
    with store.locked():
        assert store.save(seed, replacing=None)
    provider = GoogleTokenProvider.for_user(
        store, USER, client=client, clock=clock, backoff=backoff
    )
    clock.advance(timedelta(hours=1))
    fake.hold()
    outcome: list[str] = []
    refresher = threading.Thread(target=lambda: outcome.append(provider.token()))
    refresher.start()
    try:
        assert fake.wait_held(1, timeout=30)
        # Meanwhile someone whose lock outlived ours wrote a newer record.
        newer = {**seed, "token": "ya29.newer", "refresh_token": "1//newer"}
        assert store.save(newer, replacing=str(seed["token"]))
    finally:
        fake.release()
        refresher.join(timeout=30)
    assert len(outcome) == 1 and fake.lookup(outcome[0]) is not None
    assert store.load() == newer  # the late write was refused
