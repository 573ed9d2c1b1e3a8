"""token_async(): one refresh for every task and thread, run off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from _auth_helpers import REFRESHES, START, USER

from gmail_xoauth2 import GoogleTokenProvider
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.errors import TokenError
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import FakeGoogle


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeGoogle]:
    with FakeGoogle(clock=clock) as google:
        google.add_user(USER)
        yield google


@pytest.fixture
def provider(
    fake: FakeGoogle, clock: ManualClock, tmp_path: Path
) -> GoogleTokenProvider:
    path = fake.write_authorized_user_file(tmp_path / "token.json", USER)
    return GoogleTokenProvider.from_authorized_user_file(
        path,
        clock=clock,
        backoff=Backoff(base=1.0, attempts=2, sleep=lambda _: None, rand=lambda: 0.5),
    )


def test_a_valid_token_is_returned_without_a_refresh(
    fake: FakeGoogle, provider: GoogleTokenProvider
) -> None:
    first = provider.token()
    assert asyncio.run(provider.token_async()) == first
    assert fake.request_count(**REFRESHES) == 0


def test_many_tasks_and_a_thread_share_one_refresh(
    fake: FakeGoogle, provider: GoogleTokenProvider, clock: ManualClock
) -> None:
    old = provider.token()
    clock.advance(timedelta(hours=1))
    fake.hold()

    async def main() -> list[str]:
        tasks = [asyncio.create_task(provider.token_async()) for _ in range(200)]
        # The refresh is in flight and held at the token endpoint...
        await asyncio.to_thread(fake.wait_held, 1)
        # ...while a thread asks too.
        from_thread: list[str] = []
        thread = threading.Thread(target=lambda: from_thread.append(provider.token()))
        thread.start()
        fake.release()
        tokens = await asyncio.gather(*tasks)
        await asyncio.to_thread(thread.join, 30)
        return [*tokens, *from_thread]

    tokens = asyncio.run(main())
    assert len(tokens) == 201
    assert len(set(tokens)) == 1
    assert tokens[0] != old
    assert fake.request_count(**REFRESHES) == 1
    assert fake.lookup(tokens[0]) is not None


def test_the_loop_keeps_running_while_a_refresh_is_held(
    fake: FakeGoogle, provider: GoogleTokenProvider, clock: ManualClock
) -> None:
    provider.token()
    clock.advance(timedelta(hours=1))
    fake.hold()

    async def main() -> tuple[int, str]:
        refresh = asyncio.create_task(provider.token_async())
        await asyncio.to_thread(fake.wait_held, 1)
        # The token endpoint has not answered, yet the loop runs other tasks:
        # the refresh is not on the loop's thread.
        ticks = 0
        for _ in range(100):
            await asyncio.sleep(0)
            ticks += 1
        assert not refresh.done()
        fake.release()
        return ticks, await refresh

    ticks, token = asyncio.run(main())
    assert ticks == 100
    assert fake.lookup(token) is not None


def test_force_refresh_replaces_only_the_token_this_task_holds(
    fake: FakeGoogle, provider: GoogleTokenProvider
) -> None:
    async def main() -> None:
        rejected = await provider.token_async()
        results = await asyncio.gather(
            *(provider.token_async(force_refresh=True) for _ in range(50))
        )
        assert len(set(results)) == 1
        assert results[0] != rejected
        assert fake.request_count(**REFRESHES) == 1
        # Each gathered call ran in a task of its own; this task still holds
        # the rejected token, so forcing gives it the new one, no refresh.
        assert await provider.token_async(force_refresh=True) == results[0]
        assert fake.request_count(**REFRESHES) == 1
        # Now it holds the new token: forcing again refreshes again.
        again = await provider.token_async(force_refresh=True)
        assert again != results[0]
        assert fake.request_count(**REFRESHES) == 2

    asyncio.run(main())


def test_a_cancelled_caller_does_not_cancel_the_shared_refresh(
    fake: FakeGoogle, provider: GoogleTokenProvider, clock: ManualClock
) -> None:
    provider.token()
    clock.advance(timedelta(hours=1))
    fake.hold()

    async def main() -> str:
        first = asyncio.create_task(provider.token_async())
        await asyncio.to_thread(fake.wait_held, 1)
        second = asyncio.create_task(provider.token_async())
        await asyncio.sleep(0)
        first.cancel()
        fake.release()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    token = asyncio.run(main())
    assert fake.lookup(token) is not None
    assert fake.request_count(**REFRESHES) == 1


def test_a_failed_refresh_is_shared_as_a_token_error(
    fake: FakeGoogle, provider: GoogleTokenProvider, clock: ManualClock
) -> None:
    provider.token()
    clock.advance(timedelta(hours=1))
    fake.fail_next(503, count=10)

    async def main() -> list[BaseException | str]:
        return await asyncio.gather(
            *(provider.token_async() for _ in range(20)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, TokenError) and r.retryable for r in results)
    # One refresh with its retries (a first try and 2 more), not one per task.
    assert fake.request_count(**REFRESHES) == 3
