"""RedisTokenStore against a real redis-server: the store's own guarantees."""

from __future__ import annotations

from pathlib import Path

from _redis_server import RedisServer, redis_server

from gmail_xoauth2 import GoogleTokenProvider, RedisTokenStore
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle

__all__ = ["redis_server"]


def test_a_provider_refreshes_once_and_a_second_adopts(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    clock = ManualClock()
    with FakeGoogle(clock=clock) as google:
        google.add_user("ann@example.com")
        seed = google.write_authorized_user_file(tmp_path / "t.json", "ann@example.com")
        store = RedisTokenStore(redis_server.url, account="ann@example.com")
        first = GoogleTokenProvider.from_authorized_user_file(seed, clock=clock)
        with store.locked():
            import json

            assert store.save(json.loads(seed.read_text()), replacing=None)
        backoff = Backoff(sleep=lambda s: None)
        a = GoogleTokenProvider.for_user(
            store, "ann@example.com", clock=clock, backoff=backoff
        )
        b = GoogleTokenProvider.for_user(store, "ann@example.com", clock=clock)
        del first
        token_a = a.token(force_refresh=True)
        token_b = b.token(force_refresh=True)
        assert token_a == token_b
        assert google.request_count("/token", grant_type="refresh_token") == 1
