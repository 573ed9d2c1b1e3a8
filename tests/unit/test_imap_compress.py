"""COMPRESS=DEFLATE (RFC 4978) on IMAP4: negotiated per session, bounded when inflated.

Against the fake Gmail (which compresses as Gmail does) for the negotiation,
session ends, IDLE, watch() and large literals; against scripted servers on
loopback for the exact wire, a zip bomb, garbage and a trickle.
"""

from __future__ import annotations

import imaplib
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
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

from gmail_xoauth2 import LimitExceeded, Limits, ProtocolError, StaticTokenProvider
from gmail_xoauth2 import Timeout as IMAPTimeout
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.imap import IMAP4, NewMessage
from gmail_xoauth2.testing._pki import PKI, make_pki
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
MiB = 1024 * 1024
SMALL = Limits(
    line_bytes=64 * 1024,
    literal_bytes=1 * MiB,
    response_bytes=2 * MiB,
    response_lines=10_000,
    response_seconds=5,
)
CAPS = b"IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE COMPRESS=DEFLATE"


def message(n: int, body: bytes = b"") -> bytes:
    return f"From: bob@example.com\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode() + body


# --- against the fake Gmail -------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        yield fake


def connect(gmail: FakeGmail, clock: ManualClock, **kwargs: Any) -> IMAP4:
    return IMAP4(
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
    """Every client line of every IMAP connection, as the fake recorded it."""
    out: dict[int, list[bytes]] = {}
    for line in gmail.transcript("imap"):
        if line.direction == "C":
            out.setdefault(line.conn_id, []).append(line.data)
    return out


def test_compress_is_negotiated_once_per_session_and_again_after_it_ends(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    gmail.deliver(ALICE, message(1))
    m = connect(gmail, clock)
    try:
        assert m.compressed
        m.select("INBOX")
        assert m.fetch("1", "(BODY.PEEK[TEXT])")[1][0][1] == b"body 1\r\n"
        gmail.end_sessions(ALICE, "imap")  # a * BYE, sent compressed
        assert m.noop()[0] == "OK"
        assert m.reconnects == 1
        assert m.compressed
    finally:
        m.logout()
    first, second = client_lines(gmail).values()
    for lines in (first, second):
        # Once, right after AUTHENTICATE; the transcript holds plain lines.
        assert [line.split(b" ", 1)[1] for line in lines[:3]] == [
            b"CAPABILITY",
            lines[1].split(b" ", 1)[1],
            b"COMPRESS DEFLATE",
        ]
        assert lines[1].split(b" ")[1] == b"AUTHENTICATE"
        assert sum(b"COMPRESS" in line for line in lines) == 1
    assert first[3].split(b" ", 1)[1] == b"SELECT INBOX"
    assert second[3].split(b" ", 1)[1] == b"SELECT INBOX"


def test_compress_false_never_asks(gmail: FakeGmail, clock: ManualClock) -> None:
    m = connect(gmail, clock, compress=False)
    try:
        assert not m.compressed
        assert m.noop()[0] == "OK"
    finally:
        m.logout()
    [lines] = client_lines(gmail).values()
    assert not [line for line in lines if b"COMPRESS" in line]


def test_a_no_leaves_the_session_uncompressed(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    gmail.backend.faults.fail_next(
        "imap", "COMPRESS", "reply", line="NO [CANNOT] not now"
    )
    m = connect(gmail, clock)
    try:
        assert not m.compressed
        m.select("INBOX")
        assert m.noop()[0] == "OK"
    finally:
        m.logout()


def test_large_literals_arrive_whole(gmail: FakeGmail, clock: ManualClock) -> None:
    # Text that compresses well, and 3 MiB of bytes that do not.
    text = b"".join(b"line %d of a long text message\r\n" % i for i in range(150_000))
    noise = zlib.compress(text)  # incompressible
    noise += bytes(range(256)) * (3 * MiB // 256 - len(noise) // 256)
    uids = [gmail.deliver(ALICE, message(1, text)), gmail.deliver(ALICE, noise)]
    m = connect(gmail, clock)
    try:
        assert m.compressed
        m.select("INBOX")
        typ, data = m.uid("FETCH", f"{uids[0]}:{uids[1]}", "(RFC822)")
        assert typ == "OK"
        bodies = [item[1] for item in data if isinstance(item, tuple)]
        assert bodies == [message(1, text), noise]
    finally:
        m.logout()


def test_idle_works_compressed(gmail: FakeGmail, clock: ManualClock) -> None:
    m = connect(gmail, clock)
    try:
        m.select("INBOX")
        assert m.compressed
        with m.idle() as idler:
            gmail.deliver(ALICE, message(1))
            assert next(idler) == ("EXISTS", [b"1"])
            gmail.deliver(ALICE, message(2))
            assert next(idler) == ("EXISTS", [b"2"])
        assert m.noop()[0] == "OK"
    finally:
        m.logout()


def test_watch_works_compressed_across_session_ends(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    m = connect(gmail, clock)
    try:
        watcher = m.watch(backoff=Backoff.forever(sleep=lambda _: None))
        expected, seen = [], []
        for n in range(3):
            expected.append(gmail.deliver(ALICE, message(n)))
            event = next(watcher)
            assert isinstance(event, NewMessage)
            seen.append(event.uid)
            gmail.end_sessions(ALICE, "imap")
            expected.append(gmail.deliver(ALICE, message(100 + n)))
            clock.advance(timedelta(minutes=50))
            event = next(watcher)
            assert isinstance(event, NewMessage)
            seen.append(event.uid)
            assert m.compressed
        assert seen == expected
        assert m.reconnects >= 3
    finally:
        m.logout()


# --- scripted servers: the wire itself ----------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(Path(tmp_path_factory.mktemp("pki")), hosts=("127.0.0.1",))


class Deflating:
    """The server's side of a compressed session, on a scripted peer."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.wire = b""  # every compressed byte the client sent
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        self.plain = peer.buffer  # bytes after COMPRESS's line: compressed
        peer.buffer = b""
        self.plain = self.inflate.decompress(self.plain)

    def send(self, data: bytes) -> None:
        self.send_raw(self.out.compress(data + b"\r\n") + self.out.flush(2))

    def send_raw(self, data: bytes) -> None:
        self.peer.send(data, crlf=False)

    def line(self) -> bytes:
        while b"\n" not in self.plain:
            chunk = self.peer.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client gone")
            self.wire += chunk
            self.plain += self.inflate.decompress(chunk)
        line, self.plain = self.plain.split(b"\n", 1)
        line = line.rstrip(b"\r")
        self.peer.server.received.append(line)
        return line


def compressed_login(peer: Peer) -> Deflating:
    """Greeting, AUTHENTICATE, COMPRESS DEFLATE answered OK."""
    peer.send(b"* OK [CAPABILITY " + CAPS + b"] ready")
    tag = peer.tag()
    peer.send(tag + b" OK [CAPABILITY " + CAPS + b"] authenticated (Success)")
    tag = peer.tag()
    peer.send(tag + b" OK DEFLATE active")
    return Deflating(peer)


def run(
    script: Callable[[Peer], None],
    pki: PKI,
    then: Callable[[IMAP4], object] | None = None,
    *,
    limits: Limits = SMALL,
    seconds: float = 15,
    debug: bool = False,
) -> tuple[Outcome, list[bytes]]:
    old = imaplib.Debug
    with serving(script, pki.server_context()) as server:

        def call() -> object:
            imaplib.Debug = 4 if debug else 0
            imap = IMAP4(
                USER,
                StaticTokenProvider(TOKEN),
                "127.0.0.1",
                server.port,
                ssl_context=pki.client_context(),
                timeout=5,
                limits=limits,
                backoff=Backoff(attempts=1, sleep=lambda _: None),
            )
            imaplib.Debug = old
            try:
                return imap if then is None else then(imap)
            finally:
                imap.shutdown()

        try:
            outcome = attack(call, seconds=seconds)
        finally:
            imaplib.Debug = old
    assert_no_secret(outcome)
    return outcome, server.received


def test_nothing_is_sent_in_clear_after_the_ok(pki: PKI) -> None:
    seen: dict[str, bytes] = {}

    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        tag = z.line().split(b" ")[0]
        z.send(b"* 4 EXISTS")
        z.send(tag + b" OK NOOP done")
        tag = z.line().split(b" ")[0]
        z.send(tag + b" OK NOOP done")
        seen["wire"] = z.wire

    outcome, received = run(
        script, pki, lambda m: (m.compressed, m.noop(), m.noop()), debug=True
    )
    assert outcome.error is None, outcome.error
    compressed, first, _ = outcome.result
    assert compressed
    assert first == ("OK", [b"NOOP done"])
    assert received[1].split(b" ", 1)[1] == b"COMPRESS DEFLATE"
    assert [line.split(b" ", 1)[1] for line in received[2:]] == [b"NOOP", b"NOOP"]
    # On the wire after the OK: DEFLATE data only, never the plain command.
    assert b"NOOP" not in seen["wire"]
    assert zlib.decompressobj(-15).decompress(seen["wire"]).count(b"NOOP") == 2
    # Debug output shows the plain lines both ways.
    assert "COMPRESS DEFLATE" in outcome.output
    assert "NOOP done" in outcome.output and "EXISTS" in outcome.output


def bomb_segment(plain: bytes) -> bytes:
    """DEFLATE data for ``plain`` that refers to nothing before it: repeatable."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    return z.compress(plain) + z.flush(zlib.Z_FULL_FLUSH)


def test_zip_bomb_line_ends_in_limit_exceeded_with_memory_bounded(pki: PKI) -> None:
    segment = bomb_segment(b"A" * MiB)  # 1 MiB of plain text in about 1 KiB
    assert len(segment) < 2048

    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        z.line()
        for _ in range(4096):  # 4 GiB, inflated
            z.send_raw(segment)

    outcome, _ = run(script, pki, lambda m: m.noop())
    error = assert_raised(outcome, LimitExceeded)
    assert "line_bytes" in str(error)
    assert outcome.peak_bytes < 2 * MiB


def test_zip_bomb_of_literals_ends_at_response_bytes(pki: PKI) -> None:
    literal = b"* 1 FETCH (BODY[] {1000000}\r\n"
    segment = bomb_segment(literal + b"x" * 1_000_000 + b")\r\n")

    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        z.line()
        for _ in range(4096):  # 4 GB, inflated
            z.send_raw(segment)

    outcome, _ = run(script, pki, lambda m: m.noop())
    error = assert_raised(outcome, LimitExceeded)
    assert "response_bytes" in str(error)
    # The reply's own bound (2 MiB kept for the caller), not the bomb's size.
    assert outcome.peak_bytes < 8 * MiB


def test_garbage_instead_of_deflate_is_a_protocol_error(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        z.line()
        peer.send(b"* 1 EXISTS\r\n" * 10, crlf=False)  # in clear: not DEFLATE

    outcome, _ = run(script, pki, lambda m: m.noop())
    error = assert_raised(outcome, ProtocolError)
    assert not isinstance(error, LimitExceeded)
    assert "DEFLATE" in str(error)


def test_empty_blocks_without_end_are_a_protocol_error(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        z.line()
        empty = zlib.compressobj(6, zlib.DEFLATED, -15).flush(zlib.Z_SYNC_FLUSH)
        peer.flood(empty * 4096)

    outcome, _ = run(script, pki, lambda m: m.noop())
    error = assert_raised(outcome, ProtocolError)
    assert "inflate to nothing" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_trickle_through_compression_ends_at_the_reply_deadline(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        z.line()
        stream = z.out.compress(b"* 1 EXISTS\r\n" * 1000) + z.out.flush(2)
        peer.trickle(stream, every=0.01)

    outcome, _ = run(
        script, pki, lambda m: m.noop(), limits=Limits(response_seconds=0.5)
    )
    error = assert_raised(outcome, IMAPTimeout)
    assert "response_seconds" in str(error)
    assert outcome.seconds < 5


def test_idle_waits_for_a_whole_inflated_line(pki: PKI) -> None:
    """A flush marker alone, or half a line, is not a response to read."""

    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        tag = z.line().split(b" ")[0]  # SELECT
        z.send(b"* 0 EXISTS")
        z.send(tag + b" OK [READ-WRITE] done")
        tag = z.line().split(b" ")[0]  # IDLE
        z.send(b"+ idling")
        # Half a line, flushed; then an empty flush; then the rest.
        z.send_raw(z.out.compress(b"* 1 EXI") + z.out.flush(zlib.Z_SYNC_FLUSH))
        z.send_raw(z.out.flush(zlib.Z_SYNC_FLUSH))
        z.send_raw(z.out.compress(b"STS\r\n") + z.out.flush(zlib.Z_SYNC_FLUSH))
        assert z.line() == b"DONE"
        z.send(tag + b" OK IDLE terminated")

    def idle(m: IMAP4) -> object:
        m.select("INBOX")
        with m.idle(duration=5) as idler:
            return next(idler)

    outcome, _ = run(script, pki, idle)
    assert outcome.error is None, outcome.error
    assert outcome.result == ("EXISTS", [b"1"])


def test_a_bye_sent_compressed_between_commands_is_seen(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        z = compressed_login(peer)
        tag = z.line().split(b" ")[0]
        z.send(tag + b" OK NOOP done")
        z.send(b"* BYE Session expired, please login again.")

    def check(m: IMAP4) -> object:
        m.noop()
        # Wait for the BYE to arrive, then ask without blocking.
        assert m.wait_readable(5)
        return m.server_hung_up()

    outcome, _ = run(script, pki, check)
    assert outcome.error is None, outcome.error
    assert outcome.result == "BYE Session expired, please login again."
