"""Scenario 9: token stores shared past one process: Redis vs the token file.

Two measurements, each against a private redis-server (tests/unit/_redis_server.py)
and a fake Google on loopback:

- ``token()`` when the token must be read from the store: a new provider whose
  token is stale, over a record another writer has just replaced with a fresh
  one, takes the store's lock, re-reads and adopts it (no refresh). Redis vs
  ``TokenFile``, and the in-memory hit for reference.
- Refreshes per expiry window for 100 callers in 4 processes (25 threads each,
  ``tests/unit/_fleet_child.py``) sharing one store, on a simulated clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from harness import Report

from gmail_xoauth2 import GoogleTokenProvider, RedisTokenStore, TokenFile
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle

_TESTS = Path(__file__).resolve().parents[1] / "tests" / "unit"
sys.path.insert(0, str(_TESTS))
from _fleet_child import FleetChild  # noqa: E402
from _redis_server import RedisServer  # noqa: E402

__all__ = ["run"]

USER = "stores@example.com"
START = datetime(2026, 1, 5, tzinfo=UTC)
PROCESSES = 4
THREADS = 25
STEP = timedelta(minutes=10)
MARGIN = timedelta(minutes=5)


@contextlib.contextmanager
def _world(tmp: Path) -> Iterator[tuple[FakeGoogle, ManualClock, RedisServer]]:
    clock = ManualClock(START)
    (tmp / "redis").mkdir()
    with FakeGoogle(clock=clock) as google, RedisServer(tmp / "redis") as server:
        google.add_user(USER)
        yield google, clock, server


def _record(google: FakeGoogle, tmp: Path, *, expired: bool) -> dict[str, object]:
    path = google.write_authorized_user_file(tmp / "r.json", USER, expired=expired)
    record: dict[str, object] = json.loads(path.read_text())
    path.unlink()
    return record


def _put(store: Any, record: dict[str, object]) -> None:
    """Replace the store's record, as another process's refresh would."""
    with store.locked():
        current = store.load()
        stored = current.get("token") if current else None
        assert store.save(record, replacing=stored)


def _micros(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) / 1000, p99 / 1000


def _adopt_latency(
    google: FakeGoogle, clock: ManualClock, url: str, tmp: Path, samples: int
) -> dict[str, list[int]]:
    """Nanoseconds of one ``token()`` per sample: adopt from Redis, from a file, hit."""
    stale = _record(google, tmp, expired=True)
    fresh = _record(google, tmp, expired=False)
    stores: dict[str, Any] = {
        "Redis (adopt)": RedisTokenStore(url, account=USER),
        "token file (adopt)": TokenFile(tmp / "adopt" / "token.json"),
    }
    for store in stores.values():
        _put(store, fresh)
    hit = GoogleTokenProvider.for_user(stores["Redis (adopt)"], USER, clock=clock)
    hit.token()

    def adopt(store: Any) -> Callable[[], int]:
        def sample() -> int:
            _put(store, stale)
            provider = GoogleTokenProvider.for_user(store, USER, clock=clock)
            _put(store, fresh)
            started = time.perf_counter_ns()
            token = provider.token()
            elapsed = time.perf_counter_ns() - started
            assert token == fresh["token"]
            return elapsed

        return sample

    def memory() -> int:
        started = time.perf_counter_ns()
        hit.token()
        return time.perf_counter_ns() - started

    client = redis.Redis.from_url(url)

    def ping() -> int:
        started = time.perf_counter_ns()
        client.ping()
        return time.perf_counter_ns() - started

    variants = {name: adopt(store) for name, store in stores.items()}
    variants["in memory (hit)"] = memory
    variants["Redis PING (one round trip)"] = ping
    results: dict[str, list[int]] = {name: [] for name in variants}
    before = google.request_count("/token", grant_type="refresh_token")
    for round_ in range(samples + 20):
        for name, variant in variants.items():
            elapsed = variant()
            if round_ >= 20:  # warm-up: imports, connections, caches
                results[name].append(elapsed)
    client.close()
    refreshes = google.request_count("/token", grant_type="refresh_token") - before
    assert refreshes == 0, f"the adopt path refreshed {refreshes} times"
    return results


def _windows(
    google: FakeGoogle,
    clock: ManualClock,
    tmp: Path,
    windows: int,
    store: dict[str, Any],
) -> tuple[list[int], list[float]]:
    """Refreshes per window, and the slowest caller's ms at each refresh step."""
    children = [
        FleetChild(tmp / f"host{n}", clock(), USER, workers=THREADS, **store)
        for n in range(PROCESSES)
    ]
    per_window = [0] * windows
    slowest: list[float] = []
    begin = clock()
    try:
        for child in children:
            child.ready()
        end = begin + timedelta(hours=windows)
        grants = google.request_count("/token", grant_type="refresh_token")
        now = clock()
        while now <= end:
            for child in children:
                child.ask(now)
            replies = [child.answer() for child in children]
            tokens = {t for reply in replies for t in reply.tokens}
            assert len(tokens) == 1, f"{now}: callers got {len(tokens)} tokens"
            count = google.request_count("/token", grant_type="refresh_token")
            if count > grants:
                window = int((now - begin) / timedelta(hours=1)) - 1
                per_window[min(window, windows - 1)] += count - grants
                slowest.append(max(reply.slowest_us for reply in replies) / 1000)
            grants = count
            now = clock.advance(STEP)
    finally:
        for child in children:
            child.stop()
    return per_window, slowest


def run(report: Report, *, samples: int, windows: int) -> None:
    """Both measurements; prints two tables and the verdicts."""
    path = os.environ.get("PATH", "") + ":/usr/bin"
    if shutil.which("redis-server", path=path) is None:
        report.note("scenario 9 skipped: redis-server is not installed")
        report.verdict(_TARGET.format("Redis"), None, "redis-server not installed")
        return
    with tempfile.TemporaryDirectory() as name, _world(Path(name)) as world:
        tmp = Path(name)
        google, clock, server = world
        latency = _adopt_latency(google, clock, server.url, tmp, samples)
        refreshes: dict[str, tuple[list[int], list[float]]] = {}
        for label, kind in (("Redis", "redis"), ("token file", "file")):
            # A record of its own per store, fresh when its run starts.
            record = _record(google, tmp, expired=False)
            if kind == "redis":
                store: dict[str, Any] = {"redis_url": server.url}
                _put(RedisTokenStore(server.url, account=USER), record)
            else:
                shared = tmp / "shared" / "token.json"
                store = {"token_file": shared}
                _put(TokenFile(shared), record)
            refreshes[label] = _windows(google, clock, tmp / kind, windows, store)
    _print_latency(latency, samples)
    _print_refreshes(report, refreshes, windows)


def _print_latency(latency: dict[str, list[int]], samples: int) -> None:
    print(
        "#### `token()` that must read the store (adopt) vs the in-memory hit\n\n"
        "| path | median | p99 | this / token file |\n|---|---|---|---|"
    )
    file_median = _micros(latency["token file (adopt)"])[0]
    for name, values in latency.items():
        median, p99 = _micros(values)
        ratio = f"{median / file_median:.2f}x"
        print(f"| {name} | {median:,.1f} µs | {p99:,.1f} µs | {ratio} |")
    print(
        f"\nMedian and 99th percentile of {samples} interleaved calls each. Adopt: a "
        "new provider whose token is stale, over a record just replaced with a fresh "
        "one, takes the store's lock, re-reads the record and adopts its token "
        "(no refresh). Redis: a private redis-server on loopback, a warm connection "
        "pool; the adopt costs three round trips (SET NX PX, HGET, the release "
        "script). Token file: a file in the temporary directory, flock on "
        "`<file>.lock`, read and checked (mode, JSON).\n"
    )


def _print_refreshes(
    report: Report, refreshes: dict[str, tuple[list[int], list[float]]], windows: int
) -> None:
    callers = PROCESSES * THREADS
    print(
        f"#### Refreshes per expiry window: {callers} callers in {PROCESSES} "
        f"processes ({THREADS} threads each), {windows} token lifetimes\n\n"
        "| store | refreshes per window | total | slowest caller at a refresh step "
        "(median) |\n|---|---|---|---|"
    )
    for label, (counts, slowest) in refreshes.items():
        wait = f"{statistics.median(slowest):.1f} ms" if slowest else "-"
        print(f"| {label} | {', '.join(map(str, counts))} | {sum(counts)} | {wait} |")
    print(
        "\nCounted at the fake Google's token endpoint; the clock is simulated and "
        f"steps {STEP.seconds // 60} minutes at a time, all callers asking at once "
        "at each step. The token file is shared by the 4 processes (one host); "
        "with Redis they share nothing else. Slowest caller: the longest `token()` "
        "of the 100 at the step where the refresh happened (the lock waits and the "
        "round trip to the fake Google included).\n"
    )
    for label, (counts, _) in refreshes.items():
        report.verdict(
            _TARGET.format(label), counts == [1] * windows, f"{counts} per window"
        )


_TARGET = (
    "Token store ({}): exactly one refresh per expiry window for 100 callers "
    "in 4 processes"
)
