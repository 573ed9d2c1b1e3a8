"""RedisTokenStore against a real redis-server, alone and under GoogleTokenProvider.

Nothing here sleeps: threads meet on Events, Barriers and FakeGoogle's hold();
a lock "expires" when the test cuts its TTL with PEXPIRE (or a 0.2 s TTL runs
out) and sees the key gone, within a deadline.
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

import pytest
import redis
from _auth_helpers import REFRESHES, START
from _redis_server import RedisServer, redis_or_skip, redis_server
from cryptography.fernet import Fernet, InvalidToken

from gmail_xoauth2 import GoogleTokenProvider, RedisTokenStore
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._store import format_expiry, parse_expiry
from gmail_xoauth2.errors import ConfigurationError, TokenError, TokenRevokedError
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle

__all__ = ["redis_server"]

ANN = "ann@example.com"
BOB = "bob@example.com"
T = TypeVar("T")
_WAIT = 10.0  # seconds any wait for another thread may take before failing


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def google(clock: ManualClock) -> Iterator[FakeGoogle]:
    with FakeGoogle(clock=clock) as fake:
        fake.add_user(ANN)
        fake.add_user(BOB)
        yield fake


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client, to look at the keys the store writes."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def client_file(google: FakeGoogle, tmp_path: Path) -> Path:
    return google.write_client_secrets_file(tmp_path / "client_secret.json")


def _store(
    server: RedisServer, account: str = ANN, **kwargs: object
) -> RedisTokenStore:
    options: dict[str, object] = {"socket_timeout": 1.0, **kwargs}
    return RedisTokenStore(server.url, account=account, **options)  # type: ignore[arg-type]


def _seed(
    store: RedisTokenStore,
    google: FakeGoogle,
    tmp_path: Path,
    *,
    expired: bool = False,
    **changes: object,
) -> dict[str, object]:
    """Put a fresh authorized-user record of the store's account in it."""
    path = google.write_authorized_user_file(
        tmp_path / f"seed-{secrets.token_hex(4)}.json", store.account, expired=expired
    )
    record: dict[str, object] = {**json.loads(path.read_text()), **changes}
    with store.locked():
        assert store.save(record, replacing=None) is True
    return record


def _provider(
    store: RedisTokenStore,
    user: str,
    clock: ManualClock,
    *,
    client: Path | None = None,
) -> GoogleTokenProvider:
    backoff = Backoff(base=1.0, attempts=2, sleep=lambda seconds: None)
    return GoogleTokenProvider.for_user(
        store, user, client=client, clock=clock, backoff=backoff
    )


def _polls(store: RedisTokenStore) -> threading.Event:
    """Set once the store finds its lock taken and pauses to poll again.

    Stores made by ``for_account`` (and so by ``for_user``) afterwards share it.
    """
    polled = threading.Event()

    def pause(seconds: float) -> object:
        polled.set()
        return threading.Event().wait(seconds)

    store._sleep = pause
    return polled


def _gone(client: redis.Redis, key: str, *, expire: bool = True) -> None:
    """Make ``key`` expire now (PEXPIRE 1) or wait for its TTL; see it gone."""
    if expire:
        client.pexpire(key, 1)
    deadline = time.monotonic() + _WAIT
    pause = threading.Event()
    while client.exists(key):
        assert time.monotonic() < deadline, f"{key} did not expire"
        pause.wait(0.005)


def _texts(exc: BaseException) -> str:
    """Every message and repr along an exception's cause/context chain."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 40:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


class _Call(threading.Thread, Generic[T]):
    """Run ``fn`` in a thread; ``value()`` joins and returns or re-raises."""

    def __init__(self, fn: Callable[[], T]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self._result: T | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as exc:
            self._error = exc

    def value(self) -> T:
        self.join(_WAIT)
        assert not self.is_alive(), "the call did not finish"
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


# -- the lock ---------------------------------------------------------------


def test_the_lock_is_exclusive_between_two_stores(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    a, b = _store(redis_server), _store(redis_server)
    polled = _polls(b)
    inside, leave = threading.Event(), threading.Event()

    def hold_b() -> object:
        with b.locked():
            inside.set()
            owner = raw.get(b.lock_key)
            assert leave.wait(_WAIT)
        return owner

    with a.locked():
        owner_a = raw.get(a.lock_key)
        assert 0 < raw.pttl(a.lock_key) <= 60_000
        waiter = _Call(hold_b)
        waiter.start()
        assert polled.wait(_WAIT)  # b found the lock taken and polls
        assert not inside.is_set()
        assert raw.get(a.lock_key) == owner_a
    assert inside.wait(_WAIT)
    leave.set()
    owner_b = waiter.value()
    assert owner_a is not None and owner_b is not None and owner_b != owner_a
    assert raw.exists(a.lock_key) == 0


def test_the_lock_is_released_only_by_its_owner(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    a = _store(redis_server, lock_ttl=0.2)
    b = _store(redis_server, lock_ttl=30, lock_wait=0)
    with a.locked():
        owner_a = raw.get(a.lock_key)
        assert 0 < raw.pttl(a.lock_key) <= 200
        _gone(raw, a.lock_key)  # a's lock expires while a still works
        b_lock = b.locked()
        b_lock.__enter__()
        owner_b = raw.get(b.lock_key)
        assert owner_b not in (None, owner_a)
    # a's release found b's owner in the key and left it alone.
    assert raw.get(b.lock_key) == owner_b
    assert 0 < raw.pttl(b.lock_key) <= 30_000
    b_lock.__exit__(None, None, None)
    assert raw.exists(b.lock_key) == 0


def test_a_waiter_gives_up_after_lock_wait_retryable(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    holder = _store(redis_server)
    waiter = _store(redis_server, lock_wait=0.05)
    polled = _polls(waiter)
    with holder.locked():
        owner = raw.get(holder.lock_key)
        with pytest.raises(TokenError) as caught, waiter.locked():
            pytest.fail("took a lock another store holds")
        assert raw.get(holder.lock_key) == owner
    assert polled.is_set()
    assert caught.value.retryable is True
    assert str(caught.value) == (
        f"another process held the refresh lock of {ANN} in "
        f"redis 127.0.0.1:{redis_server.port}/0 for 0.05 s; try again later"
    )


def test_a_holder_that_never_releases_is_taken_over_when_its_lock_expires(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    store = _store(redis_server)
    # A holder killed mid-refresh: its lock stays until its TTL runs out.
    raw.set(store.lock_key, b"owner-that-died", px=60_000)
    polled = _polls(store)
    inside = threading.Event()

    def take() -> object:
        with store.locked():
            inside.set()
            return raw.get(store.lock_key)

    waiter = _Call(take)
    waiter.start()
    assert polled.wait(_WAIT)
    assert not inside.is_set()
    _gone(raw, store.lock_key)  # the TTL runs out
    owner = waiter.value()
    assert owner not in (None, b"owner-that-died")
    assert raw.exists(store.lock_key) == 0


# -- single flight ------------------------------------------------------------


@pytest.mark.parametrize("forced", [False, True], ids=["expired", "forced"])
def test_sixteen_threads_over_two_providers_refresh_once(
    forced: bool,
    redis_server: RedisServer,
    google: FakeGoogle,
    clock: ManualClock,
    client_file: Path,
    tmp_path: Path,
) -> None:
    users = _store(redis_server, account="-")
    seeded = _seed(users.for_account(ANN), google, tmp_path, expired=not forced)
    polled = _polls(users)
    providers = [_provider(users, ANN, clock, client=client_file) for _ in range(2)]
    google.hold()
    barrier = threading.Barrier(16)

    def ask(provider: GoogleTokenProvider) -> str:
        barrier.wait(_WAIT)
        return provider.token(force_refresh=forced)

    calls = [_Call(functools.partial(ask, providers[i % 2])) for i in range(16)]
    for call in calls:
        call.start()
    assert google.wait_held(1)
    # The other provider waits on the Redis lock, not on its own.
    assert polled.wait(_WAIT)
    google.release()
    tokens = {call.value() for call in calls}

    assert len(tokens) == 1
    token = tokens.pop()
    assert token != seeded["token"]
    assert google.request_count(**REFRESHES) == 1
    assert google.lookup(token) is not None
    stored = users.for_account(ANN).load()
    assert stored is not None and stored["token"] == token
    assert providers[0].expiry == providers[1].expiry == parse_expiry(stored["expiry"])
    # Both are done: the next asks are answered from memory.
    assert [p.token() for p in providers] == [token, token]
    assert google.request_count(**REFRESHES) == 1


# -- the fence ----------------------------------------------------------------


def test_a_stale_writer_is_fenced(
    redis_server: RedisServer, raw: redis.Redis, google: FakeGoogle, tmp_path: Path
) -> None:
    writer, stale_writer = _store(redis_server), _store(redis_server)
    seeded = _seed(writer, google, tmp_path)
    loaded = writer.load()
    stale = stale_writer.load()
    assert loaded == stale == seeded
    newer = {**seeded, "token": "ya29.newer", "refresh_token": "1//newer"}
    older = {**seeded, "token": "ya29.late", "refresh_token": "1//late"}

    assert writer.save(newer, replacing="ya29." + "x" * 8) is False  # not what's there
    assert writer.save(newer, replacing=str(seeded["token"])) is True
    assert stale_writer.save(older, replacing=str(seeded["token"])) is False
    assert stale_writer.save(older, replacing=None) is False  # "none" is not "any"

    assert stale_writer.load() == newer
    assert raw.hget(writer.key, "version") == b"2"
    # The fence compares a hash: no token is kept beside the data in clear.
    fields = raw.hgetall(writer.key)
    assert set(fields) == {b"data", b"token_id", b"expiry_ms", b"version"}
    assert b"ya29" not in fields[b"token_id"]


@pytest.mark.parametrize(
    "shift", [timedelta(hours=2), -timedelta(hours=2)], ids=["later", "earlier"]
)
def test_a_record_replaces_the_loaded_one_whatever_its_expiry(
    shift: timedelta,
    redis_server: RedisServer,
    raw: redis.Redis,
    google: FakeGoogle,
    tmp_path: Path,
) -> None:
    store = _store(redis_server)
    seeded = _seed(store, google, tmp_path)
    old_expiry = parse_expiry(seeded["expiry"])
    assert old_expiry is not None
    new_expiry = old_expiry + shift
    replacement = {**seeded, "token": "ya29.next", "expiry": format_expiry(new_expiry)}
    with store.locked():
        assert store.save(replacement, replacing=str(seeded["token"])) is True
    assert store.load() == replacement
    assert (
        raw.hget(store.key, "expiry_ms")
        == str(int(new_expiry.timestamp() * 1000)).encode()
    )


@pytest.mark.parametrize(
    "stored_lifetime",
    [timedelta(minutes=10), timedelta(hours=10)],
    ids=["stored-expires-earlier", "stored-expires-later"],
)
def test_a_forced_refresh_replaces_the_rejected_stored_token(
    stored_lifetime: timedelta,
    redis_server: RedisServer,
    google: FakeGoogle,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    store = _store(redis_server)
    seeded = _seed(
        store, google, tmp_path, expiry=format_expiry(START + stored_lifetime)
    )
    rejecting, other = _provider(store, ANN, clock), _provider(store, ANN, clock)
    assert rejecting.token() == other.token() == seeded["token"]

    fresh = rejecting.token(force_refresh=True)

    assert fresh != seeded["token"]
    assert google.request_count(**REFRESHES) == 1
    stored = store.load()
    assert stored is not None
    assert stored["token"] == fresh
    assert rejecting.expiry is not None
    assert stored["expiry"] == format_expiry(rejecting.expiry)
    # The other provider had the same token rejected: it adopts, no refresh.
    assert other.token(force_refresh=True) == fresh
    assert other.expiry == rejecting.expiry
    assert google.request_count(**REFRESHES) == 1


class _GatedStore(RedisTokenStore):
    """Stops in save() until the test opens the gate."""

    saving: threading.Event
    gate: threading.Event

    def save(self, data: Mapping[str, object], *, replacing: str | None) -> bool:
        self.saving.set()
        assert self.gate.wait(_WAIT)
        return super().save(data, replacing=replacing)


def test_a_refresh_that_outlived_its_lock_does_not_overwrite_the_next_holder(
    redis_server: RedisServer,
    raw: redis.Redis,
    google: FakeGoogle,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    store = _store(redis_server, lock_ttl=0.2)
    _seed(store, google, tmp_path, expired=True)
    late_store = _GatedStore(
        redis_server.url, account=ANN, lock_ttl=0.2, socket_timeout=1.0
    )
    late_store.saving, late_store.gate = threading.Event(), threading.Event()
    late, next_holder = _provider(late_store, ANN, clock), _provider(store, ANN, clock)

    google.hold()
    first = _Call(late.token)
    first.start()
    assert google.wait_held(1)  # its refresh is in flight...
    _gone(raw, store.lock_key, expire=False)  # ...when its 0.2 s lock runs out
    second = _Call(next_holder.token)
    second.start()
    assert google.wait_held(2)  # the next holder took the lock and refreshes
    google.release()
    next_token = second.value()
    assert late_store.saving.wait(_WAIT)
    late_store.gate.set()
    late_token = first.value()

    assert late_token != next_token
    assert google.request_count(**REFRESHES) == 2
    stored = store.load()
    assert stored is not None and stored["token"] == next_token
    assert raw.hget(store.key, "version") == b"2"  # the seed and the next holder's
    # The late provider keeps its own token, valid at Google, without refreshing.
    assert google.lookup(late_token) is not None
    assert late.token() == late_token
    assert next_holder.token() == next_token
    assert google.request_count(**REFRESHES) == 2
    assert raw.exists(store.lock_key) == 0


class _InterleavedStore(RedisTokenStore):
    """Runs ``meanwhile`` right after its 3rd load: ``for_user``'s, the
    provider's look before locking, then the one under the lock."""

    meanwhile: Callable[[], None] | None = None
    loads = 0

    def load(self) -> dict[str, object] | None:
        data = super().load()
        self.loads += 1
        if self.loads == 3 and self.meanwhile is not None:
            self.meanwhile()
        return data


def test_a_holder_whose_refresh_token_was_rotated_meanwhile_follows_the_store(
    redis_server: RedisServer,
    raw: redis.Redis,
    google: FakeGoogle,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    # Holder A loads the record under its lock; its lock expires; holder B
    # takes over, refreshes (Google rotates the refresh token and retires the
    # one A holds) and saves. A's refresh then gets invalid_grant: it must
    # follow the store, not report the account as revoked.
    google.rotate_refresh_tokens = True
    store = _store(redis_server, lock_ttl=30)
    _seed(store, google, tmp_path, expired=True)
    slow = _InterleavedStore(redis_server.url, account=ANN, socket_timeout=1.0)
    b = _provider(store, ANN, clock)
    b_tokens: list[str] = []

    def b_takes_over() -> None:
        _gone(raw, store.lock_key)  # A's lock expires
        b_call = _Call(b.token)
        b_call.start()
        b_tokens.append(b_call.value())

    slow.meanwhile = b_takes_over
    a = _provider(slow, ANN, clock)
    token = a.token()
    assert b_tokens and token == b_tokens[0]
    # B's refresh, then A's with the retired token (invalid_grant): two
    # requests, and A adopted what B stored instead of failing.
    assert google.request_count(**REFRESHES) == 2
    stored = store.load()
    assert stored is not None and stored["token"] == token
    assert google.lookup(token) is not None


# -- rotated refresh tokens ---------------------------------------------------


def test_a_rotated_refresh_token_is_stored_and_nobody_is_locked_out(
    redis_server: RedisServer,
    google: FakeGoogle,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    google.rotate_refresh_tokens = True
    store = _store(redis_server)
    seed_file = google.write_authorized_user_file(
        tmp_path / "seed.json", ANN, expired=True
    )
    seeded = json.loads(seed_file.read_text())
    with store.locked():
        assert store.save(seeded, replacing=None)
    first = _provider(store, ANN, clock)

    token_1 = first.token()
    record_1 = store.load()
    assert record_1 is not None
    assert record_1["token"] == token_1
    assert record_1["refresh_token"] not in (None, seeded["refresh_token"])

    # A new process, an hour later, refreshes with the stored (rotated) token.
    clock.advance(timedelta(hours=1))
    second = _provider(store, ANN, clock)
    token_2 = second.token()
    record_2 = store.load()
    assert record_2 is not None
    assert record_2["token"] == token_2 != token_1
    assert record_2["refresh_token"] not in (
        seeded["refresh_token"],
        record_1["refresh_token"],
    )
    # The first process adopts that token, then refreshes with its refresh
    # token, not with the revoked one it started with.
    assert first.token() == token_2
    assert google.request_count(**REFRESHES) == 2
    clock.advance(timedelta(hours=1))
    token_3 = first.token()
    record_3 = store.load()
    assert record_3 is not None and record_3["token"] == token_3
    assert google.request_count(**REFRESHES) == 3
    assert google.lookup(token_3) is not None
    # Without the store, the original refresh token is dead.
    with pytest.raises(TokenRevokedError):
        GoogleTokenProvider.from_authorized_user_file(seed_file, clock=clock).token()


# -- encryption at rest -------------------------------------------------------


def test_the_record_is_encrypted_at_rest(
    redis_server: RedisServer,
    raw: redis.Redis,
    google: FakeGoogle,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    key = Fernet.generate_key()
    store = _store(redis_server, encryption_key=key)
    seeded = _seed(store, google, tmp_path, expired=True)
    token = _provider(store, ANN, clock).token()
    stored = store.load()
    assert stored is not None and stored["token"] == token

    fields = raw.hgetall(store.key)
    everything = b"".join(
        part if isinstance(part, bytes) else part.encode()
        for part in [*fields, *fields.values()]
    )
    for secret in (seeded["token"], token, seeded["refresh_token"]):
        assert str(secret).encode() not in everything
    assert google.client_secret.encode() not in everything
    assert json.loads(Fernet(key).decrypt(fields[b"data"])) == stored
    assert "encrypted" in repr(store)
    assert key.decode() not in repr(store)


def test_a_wrong_key_is_a_configuration_error_naming_the_account(
    redis_server: RedisServer, google: FakeGoogle, clock: ManualClock, tmp_path: Path
) -> None:
    right, wrong = Fernet.generate_key(), Fernet.generate_key()
    seeded = _seed(_store(redis_server, encryption_key=right), google, tmp_path)
    where = f"redis 127.0.0.1:{redis_server.port}/0"

    with pytest.raises(ConfigurationError) as caught:
        _store(redis_server, encryption_key=wrong).load()
    assert str(caught.value) == (
        f"cannot decrypt the token of {ANN} in {where}: "
        "wrong encryption key, or it was stored without one"
    )
    with pytest.raises(ConfigurationError) as through_provider:
        _provider(_store(redis_server, encryption_key=wrong), ANN, clock)
    with pytest.raises(ConfigurationError) as unkeyed:
        _store(redis_server).load()
    assert str(unkeyed.value) == (
        f"the token of {ANN} in {where} is not JSON; was it stored encrypted?"
    )
    for exc in (caught.value, through_provider.value, unkeyed.value):
        text = _texts(exc)
        assert ANN in text
        for secret in (right, wrong):
            assert secret.decode() not in text
        for value in (seeded["token"], seeded["refresh_token"]):
            assert str(value) not in text


def test_a_key_that_is_not_a_fernet_key_is_refused_without_quoting_it(
    redis_server: RedisServer,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _store(redis_server, encryption_key="my-secret-passphrase")
    assert "my-secret-passphrase" not in _texts(caught.value)
    with pytest.raises(ConfigurationError, match="empty list"):
        _store(redis_server, encryption_key=[])


def test_keys_rotate_the_first_encrypts_every_one_decrypts(
    redis_server: RedisServer, raw: redis.Redis, google: FakeGoogle, tmp_path: Path
) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    seeded = _seed(_store(redis_server, encryption_key=old), google, tmp_path)
    rotated = _store(redis_server, encryption_key=[new, old])

    assert rotated.load() == seeded
    replacement = {**seeded, "token": "ya29.after-rotation"}
    with rotated.locked():
        assert rotated.save(replacement, replacing=str(seeded["token"])) is True

    data = raw.hget(rotated.key, "data")
    assert data is not None
    assert json.loads(Fernet(new).decrypt(data)) == replacement
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt(data)
    assert _store(redis_server, encryption_key=new).load() == replacement
    with pytest.raises(ConfigurationError, match="cannot decrypt"):
        _store(redis_server, encryption_key=old).load()


# -- one Redis, many accounts -------------------------------------------------


def test_accounts_have_their_own_keys_and_locks(
    redis_server: RedisServer, raw: redis.Redis, google: FakeGoogle, tmp_path: Path
) -> None:
    users = _store(redis_server, account="-", lock_wait=0)
    ann, bob = users.for_account(ANN), users.for_account(BOB)
    assert type(ann) is RedisTokenStore
    assert (ann.key, ann.lock_key) == (
        f"gmail-xoauth2:token:{ANN}",
        f"gmail-xoauth2:lock:{ANN}",
    )
    assert (bob.key, bob.lock_key) == (
        f"gmail-xoauth2:token:{BOB}",
        f"gmail-xoauth2:lock:{BOB}",
    )
    ann_record = _seed(ann, google, tmp_path)
    assert bob.load() is None
    bob_record = _seed(bob, google, tmp_path)
    assert ann.load() == ann_record and bob.load() == bob_record

    with ann.locked():
        with bob.locked():  # lock_wait=0: bob's lock was free at once
            assert set(raw.keys("*:lock:*")) == {
                ann.lock_key.encode(),
                bob.lock_key.encode(),
            }
        with pytest.raises(TokenError, match=ANN), users.for_account(ANN).locked():
            pytest.fail("took ann's lock twice")
    bob.delete()
    assert bob.load() is None
    assert ann.load() == ann_record
    assert set(raw.keys("*")) == {ann.key.encode()}

    other_app = _store(redis_server, prefix="other-app")
    assert other_app.key == f"other-app:token:{ANN}"
    assert other_app.load() is None
    for bad in ("", "ann\n@example.com"):
        with pytest.raises(ConfigurationError):
            users.for_account(bad)


# -- no secret in a repr or an error --------------------------------------------


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that wants a password."""
    redis_or_skip()
    directory = tmp_path / "redis-secured"
    directory.mkdir()
    with RedisServer(directory, password="pw-" + secrets.token_hex(12)) as server:
        yield server


def test_no_secret_in_a_repr_or_an_error(
    secured_redis: RedisServer,
    google: FakeGoogle,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    password = secured_redis.password
    assert password is not None and password in secured_redis.url
    store = _store(secured_redis)
    where = f"redis 127.0.0.1:{secured_redis.port}/0"
    assert repr(store) == f"RedisTokenStore({where}, account={ANN!r})"
    seeded = _seed(store, google, tmp_path)
    provider = _provider(store, ANN, clock)
    assert provider.token() == seeded["token"]
    secrets_ = [
        password,
        str(seeded["token"]),
        str(seeded["refresh_token"]),
        google.client_secret,
    ]
    texts = [repr(store), repr(provider), repr(store.for_account(BOB))]

    secured_redis.stop()
    clock.advance(timedelta(hours=1))
    failures: list[BaseException] = []
    for attempt in (
        provider.token,
        store.load,
        lambda: store.save(seeded, replacing=None),
        store.delete,
        lambda: _provider(store, ANN, clock),
    ):
        with pytest.raises(TokenError) as caught:
            attempt()
        failures.append(caught.value)
    with pytest.raises(TokenError) as lock_failure, store.locked():
        pytest.fail("took a lock in a stopped Redis")
    failures.append(lock_failure.value)
    with pytest.raises(ConfigurationError) as bad_url:
        RedisTokenStore(f"redis://:{password}@127.0.0.1:notaport/0", account=ANN)
    failures.append(bad_url.value)

    for exc in failures:
        texts.append(_texts(exc))
    for exc in failures[:-1]:
        assert isinstance(exc, TokenError) and exc.retryable is True
        assert where in str(exc) and ANN in str(exc)
    for text in texts:
        for secret in secrets_:
            assert secret not in text


@pytest.mark.parametrize("password", ["wrong-password", None], ids=["wrong", "none"])
def test_a_refused_password_is_not_retryable(
    password: str | None, secured_redis: RedisServer
) -> None:
    right = secured_redis.password
    assert right is not None
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{secured_redis.port}/0"
    store = RedisTokenStore(url, account=ANN, socket_timeout=1.0)
    failures: list[TokenError] = []
    with pytest.raises(TokenError) as caught:
        store.load()
    failures.append(caught.value)
    with pytest.raises(TokenError) as lock_failure, store.locked():
        pytest.fail("took a lock without the password")
    failures.append(lock_failure.value)
    for exc in failures:
        assert exc.retryable is False
        assert str(exc).startswith(
            f"Redis (redis 127.0.0.1:{secured_redis.port}/0) refused "
        )
        assert ANN in str(exc)
        assert "check the user and password in the URL" in str(exc)
        text = _texts(exc)
        assert right not in text
        assert "wrong-password" not in text


# -- an outage ----------------------------------------------------------------


def test_an_outage_keeps_a_valid_token_fails_retryable_then_heals(
    redis_server: RedisServer,
    google: FakeGoogle,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    store = _store(redis_server)
    seeded = _seed(store, google, tmp_path)
    provider = _provider(store, ANN, clock)
    assert provider.token() == seeded["token"]

    redis_server.stop()
    clock.advance(timedelta(minutes=54))  # 5 min 59 s left: still valid
    assert provider.token() == seeded["token"]
    clock.advance(timedelta(minutes=1))  # inside the refresh margin
    for _ in range(2):  # and again: each call tries Redis anew
        with pytest.raises(TokenError) as caught:
            provider.token()
        assert caught.value.retryable is True
        assert str(caught.value) == (
            f"Redis (redis 127.0.0.1:{redis_server.port}/0) could not be reached "
            f"while reading the token of {ANN} (ConnectionError); "
            "try again once Redis is back"
        )
    assert google.request_count(**REFRESHES) == 0

    redis_server.start()  # the same port; empty, as it persists nothing
    token = provider.token()
    assert token != seeded["token"]
    assert google.request_count(**REFRESHES) == 1
    assert provider.token() == token
    stored = store.load()
    assert stored is not None
    assert stored["token"] == token
    assert stored["refresh_token"] == seeded["refresh_token"]
    assert google.request_count(**REFRESHES) == 1


def test_expiry_is_kept_on_the_providers_clock(
    redis_server: RedisServer, google: FakeGoogle, clock: ManualClock, tmp_path: Path
) -> None:
    store = _store(redis_server)
    _seed(store, google, tmp_path, expired=True)
    provider = _provider(store, ANN, clock)
    provider.token()
    stored = store.load()
    assert stored is not None
    expiry = parse_expiry(stored["expiry"])
    assert expiry is not None
    assert isinstance(provider.expiry, datetime)
    assert expiry == provider.expiry
    assert START + timedelta(minutes=59) < expiry <= START + timedelta(seconds=3599)
