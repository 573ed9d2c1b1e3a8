"""A fleet of hosts sharing one Redis: one refresh per expiry window, and takeover.

Each simulated host is a process of its own (``_fleet_child.py``) with a private
HOME and working directory, one provider and its worker threads; the hosts
share nothing but the Redis. This test drives simulated time: it moves the fake
Google's clock and tells every host the time, then reads what its workers got.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from _fleet_child import FleetChild
from _redis_server import RedisServer, redis_server

from gmail_xoauth2 import RedisTokenStore
from gmail_xoauth2._store import parse_expiry
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle

__all__ = ["redis_server"]

USER = "fleet@example.com"
START = datetime(2026, 1, 5, tzinfo=UTC)
MARGIN = timedelta(minutes=5)  # the provider's default refresh_margin
HOSTS = 3
WORKERS = 8
STEP = timedelta(minutes=10)
DAY = timedelta(hours=24)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def google(clock: ManualClock) -> Iterator[FakeGoogle]:
    with FakeGoogle(clock=clock) as fake:
        fake.add_user(USER)
        try:
            yield fake
        finally:
            fake.release()


@pytest.fixture
def hosts() -> Iterator[list[FleetChild]]:
    started: list[FleetChild] = []
    try:
        yield started
    finally:
        for child in started:
            child.stop()


def _seed(google: FakeGoogle, url: str, tmp_path: Path, *, expired: bool) -> str:
    """Put the account's record into Redis; return its access token."""
    seed = google.write_authorized_user_file(
        tmp_path / "seed.json", USER, expired=expired
    )
    record = json.loads(seed.read_text())
    seed.unlink()  # the hosts must find it in Redis, nowhere else
    store = RedisTokenStore(url, account=USER)
    with store.locked():
        assert store.save(record, replacing=None)
    return str(record["token"])


def _start(
    hosts: list[FleetChild],
    home: Path,
    url: str,
    *,
    workers: int = WORKERS,
    lock_ttl: float | None = None,
) -> FleetChild:
    """Start one host: its own process, HOME and working directory."""
    child = FleetChild(
        home, START, USER, redis_url=url, workers=workers, lock_ttl=lock_ttl
    )
    hosts.append(child)
    return child


def test_three_hosts_of_eight_workers_refresh_once_per_window_for_a_day(
    redis_server: RedisServer,
    clock: ManualClock,
    google: FakeGoogle,
    hosts: list[FleetChild],
    tmp_path: Path,
) -> None:
    current = _seed(google, redis_server.url, tmp_path, expired=False)
    seeded = google.lookup(current)
    assert seeded is not None
    expires = seeded.expires_at
    for n in range(HOSTS):
        _start(hosts, tmp_path / f"host{n}", redis_server.url)
    for child in hosts:
        child.ready()

    grants = 0
    expected = 0
    steps = 0
    now = START
    while now <= START + DAY:
        # Due when the token the fleet holds has less than the margin left at
        # Google. The provider counts a lifetime a second shorter (3598 s of
        # the 3599); steps and refreshes fall on the 10-minute grid, so that
        # second never decides.
        due = now + MARGIN >= expires
        for child in hosts:
            child.ask(now)
        tokens: set[str] = set()
        for child in hosts:
            tokens.update(child.answer().tokens)
        assert len(tokens) == 1, f"{now}: the {HOSTS * WORKERS} workers got {tokens}"
        (token,) = tokens
        info = google.lookup(token)
        assert info is not None, f"{now}: a worker got a token Google does not know"
        assert info.email == USER
        assert now + MARGIN < info.expires_at, f"{now}: a token about to expire"
        assert (token != current) == due, f"{now}: refreshed={token != current}"
        expected += due
        now_grants = google.request_count("/token", grant_type="refresh_token")
        assert now_grants - grants == due, f"{now}: {now_grants - grants} refreshes"
        grants, current, expires = now_grants, token, info.expires_at
        steps += 1
        now = clock.advance(STEP)

    assert steps == 145
    assert expected == 24  # a token of 3599 s, refreshed 5 min early: once an hour
    assert grants == expected


def test_a_killed_lock_holder_is_taken_over_within_the_lock_ttl(
    redis_server: RedisServer,
    google: FakeGoogle,
    hosts: list[FleetChild],
    tmp_path: Path,
) -> None:
    lock_ttl = 2.0
    seed = _seed(google, redis_server.url, tmp_path, expired=True)
    holder = _start(hosts, tmp_path / "holder", redis_server.url, lock_ttl=lock_ttl)
    heir = _start(hosts, tmp_path / "heir", redis_server.url, lock_ttl=lock_ttl)
    holder.ready()
    heir.ready()

    google.hold()
    holder.ask(START)
    # Its refresh is at Google: it holds the Redis lock.
    assert google.wait_held(1, timeout=30)
    os.kill(holder.pid, signal.SIGKILL)
    assert holder.proc.wait(10) == -signal.SIGKILL
    lock_key = RedisTokenStore(redis_server.url, account=USER).lock_key
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.pttl(lock_key) > 0, "the dead holder's lock should still be there"
    google.release()

    started = time.monotonic()
    heir.ask(START)
    tokens = heir.answer(timeout=lock_ttl + 30).tokens
    waited = time.monotonic() - started

    assert waited <= lock_ttl + 5, f"took {waited:.2f} s with a {lock_ttl:g} s lock"
    assert len(tokens) == 1
    assert tokens[0] != seed
    assert google.lookup(tokens[0]) is not None
    # The dead holder's refresh, and the heir's.
    assert google.request_count("/token", grant_type="refresh_token") <= 2
    record = RedisTokenStore(redis_server.url, account=USER).load()
    assert record is not None and record["token"] == tokens[0]
    expiry = parse_expiry(record["expiry"])
    assert expiry is not None and expiry > START + MARGIN
