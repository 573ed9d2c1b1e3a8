"""COMPRESS=DEFLATE on aio.IMAP4: negotiated as the sync one does, bounded inflated.

The same inflater and deflater as the sync IMAP4 (``_imap_compress``), here
inside the asyncio stream: against the fake Gmail for the negotiation, large
literals and session ends; against the scripted servers of
``test_imap_compress`` for the exact wire, a zip bomb and garbage.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from _hostile import (
    TOKEN,
    USER,
    Outcome,
    Peer,
    assert_no_secret,
    assert_raised,
    attack,
    serving,
)
from test_imap_compress import SMALL, bomb_segment, compressed_login, pki

from gmail_xoauth2 import LimitExceeded, Limits, ProtocolError, StaticTokenProvider, aio
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.testing._pki import PKI
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

__all__ = ["pki"]

ALICE = "alice@example.com"
MiB = 1024 * 1024


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        yield fake


def new(gmail: FakeGmail, clock: ManualClock, **kwargs: Any) -> aio.IMAP4:
    """An aio.IMAP4 that asks for COMPRESS unless told (``compress=None``:
    the class's default)."""
    kwargs.setdefault("compress", True)
    if kwargs["compress"] is None:
        del kwargs["compress"]
    return aio.IMAP4(
        ALICE,
        gmail.token_provider(ALICE, clock=clock),
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        backoff=Backoff(sleep=lambda _: None),
        timeout=10,
        **kwargs,
    )


def client_lines(gmail: FakeGmail) -> dict[int, list[bytes]]:
    lines: dict[int, list[bytes]] = {}
    for line in gmail.transcript("imap"):
        if line.direction == "C":
            lines.setdefault(line.conn_id, []).append(line.data)
    return lines


def test_compress_is_negotiated_per_session_and_literals_arrive_whole(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    # About 1 MiB of every byte value but CR and LF (APPEND makes line ends CRLF).
    body = bytes(b for b in range(256) if b not in (10, 13)) * 4200 + b"\r\n"
    raw = b"Subject: big\r\n\r\n" + body

    async def main() -> tuple[bool, bytes, bool, int]:
        async with new(gmail, clock) as imap:
            first = imap.compressed
            await imap.select("INBOX")
            await imap.append("INBOX", None, None, raw)
            _, data = await imap.uid("FETCH", "1", "(BODY.PEEK[])")
            fetched = next(item[1] for item in data if isinstance(item, tuple))
            # Gmail ends the session: the new one is compressed again.
            clock.advance(timedelta(hours=1))
            gmail.end_sessions(ALICE, "imap")
            await imap.noop()
            return first, fetched, imap.compressed, imap.reconnects

    first, fetched, again, reconnects = asyncio.run(main())
    assert first and again and reconnects == 1
    assert fetched == raw
    sessions = client_lines(gmail)
    assert len(sessions) == 2
    for lines in sessions.values():
        verbs = [line.split(b" ", 2)[1] for line in lines[:3]]
        assert verbs == [b"CAPABILITY", b"AUTHENTICATE", b"COMPRESS"]
        assert lines[2].split(b" ", 1)[1] == b"COMPRESS DEFLATE"


def test_compress_is_off_by_default(gmail: FakeGmail, clock: ManualClock) -> None:
    async def main() -> bool:
        async with new(gmail, clock, compress=None) as imap:
            await imap.noop()
            return imap.compressed

    assert asyncio.run(main()) is False
    [lines] = client_lines(gmail).values()
    assert not any(b"COMPRESS" in line for line in lines)


def test_idle_and_watch_work_compressed(gmail: FakeGmail, clock: ManualClock) -> None:
    async def main() -> list[int]:
        async with new(gmail, clock) as imap:
            assert imap.compressed
            uids = []
            async with imap.watch("INBOX") as watcher:
                gmail.deliver(ALICE, b"Subject: 1\r\n\r\none\r\n")
                async for event in watcher:
                    uids.append(event.uid)  # type: ignore[union-attr]
                    if len(uids) == 1:
                        gmail.end_sessions(ALICE, "imap")
                        gmail.deliver(ALICE, b"Subject: 2\r\n\r\ntwo\r\n")
                    else:
                        break
            return uids

    assert asyncio.run(main()) == [1, 2]


def run(
    script: Callable[[Peer], None],
    pki: PKI,
    then: Callable[[aio.IMAP4], Any],
    *,
    limits: Limits = SMALL,
    seconds: float = 15,
) -> Outcome:
    with serving(script, pki.server_context()) as server:

        def call() -> object:
            async def main() -> object:
                imap = aio.IMAP4(
                    USER,
                    StaticTokenProvider(TOKEN),
                    "127.0.0.1",
                    server.port,
                    ssl_context=pki.client_context(),
                    timeout=5,
                    limits=limits,
                    backoff=Backoff(attempts=1, sleep=lambda _: None),
                    compress=True,
                )
                try:
                    await imap.connect()
                    return await then(imap)
                finally:
                    imap._drop()

            return asyncio.run(main())

        outcome = attack(call, seconds=seconds)
    assert_no_secret(outcome)
    return outcome


def test_nothing_is_sent_in_clear_after_the_ok(pki: PKI) -> None:
    seen: dict[str, bytes] = {}

    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        tag = z.line().split(b" ")[0]
        z.send(b"* 4 EXISTS")
        z.send(tag + b" OK NOOP done")
        seen["wire"] = z.wire

    async def noop(imap: aio.IMAP4) -> object:
        return imap.compressed, await imap.noop()

    outcome = run(script, pki, noop)
    assert outcome.error is None, outcome.error
    assert outcome.result == (True, ("OK", [b"NOOP done"]))
    assert b"NOOP" not in seen["wire"]
    assert zlib.decompressobj(-15).decompress(seen["wire"]).count(b"NOOP") == 1


def test_zip_bomb_line_ends_in_limit_exceeded_with_memory_bounded(pki: PKI) -> None:
    segment = bomb_segment(b"A" * MiB)  # 1 MiB of plain text in about 1 KiB

    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        z.line()
        for _ in range(4096):  # 4 GiB, inflated
            z.send_raw(segment)

    async def noop(imap: aio.IMAP4) -> object:
        return await imap.noop()

    outcome = run(script, pki, noop)
    error = assert_raised(outcome, LimitExceeded)
    assert "line_bytes" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_garbage_instead_of_deflate_is_a_protocol_error(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        z.line()
        peer.send(b"* 1 EXISTS\r\n" * 10, crlf=False)  # in clear: not DEFLATE

    async def noop(imap: aio.IMAP4) -> object:
        return await imap.noop()

    outcome = run(script, pki, noop)
    error = assert_raised(outcome, ProtocolError)
    assert not isinstance(error, LimitExceeded)
    assert "DEFLATE" in str(error)
