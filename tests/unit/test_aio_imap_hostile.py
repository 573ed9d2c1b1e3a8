"""aio.IMAP4 against hostile and broken servers: bounded time and memory, typed errors.

The scripted servers of :mod:`_hostile` (implicit TLS, and plain + STARTTLS
where the case allows); each client run is ``asyncio.run`` inside
:func:`_hostile.attack`'s hard wall-clock bound, and asserts the exception
type (also an imaplib error, as with the sync class), a memory bound where
memory is at stake, and that no secret reaches the exception chain or a log.
STARTTLS is here too: the fake Gmail, like Gmail, has no plain IMAP port.
"""

from __future__ import annotations

import asyncio
import imaplib
import select
from collections.abc import Awaitable, Callable
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

from gmail_xoauth2 import (
    Backoff,
    ConnectionLost,
    InsecureConnection,
    LimitExceeded,
    Limits,
    ProtocolError,
    StaticTokenProvider,
    Timeout,
    aio,
    sasl,
)
from gmail_xoauth2.testing._pki import PKI, make_pki

MiB = 1024 * 1024
SMALL = Limits(
    line_bytes=64 * 1024,
    literal_bytes=1 * MiB,
    response_bytes=2 * MiB,
    response_lines=10_000,
    response_seconds=5,
)
CAPS = b"IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=OAUTHBEARER IDLE"
MODES = ["tls", "starttls"]
Then = Callable[[aio.IMAP4], Awaitable[Any]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(Path(tmp_path_factory.mktemp("pki")), hosts=("127.0.0.1",))


def greet(peer: Peer, mode: str, caps: bytes = CAPS) -> None:
    """The greeting, and STARTTLS in ``starttls`` mode (then CAPABILITY)."""
    if mode == "tls":
        peer.send(b"* OK [CAPABILITY " + caps + b"] ready")
        return
    peer.send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready")
    tag = peer.tag()
    peer.send(tag + b" OK Begin TLS negotiation now")
    peer.starttls()
    tag = peer.tag()
    peer.send(b"* CAPABILITY " + caps)
    peer.send(tag + b" OK done")


def login(peer: Peer, mode: str) -> None:
    """Greeting and a successful AUTHENTICATE with SASL-IR."""
    greet(peer, mode)
    tag = peer.tag()
    peer.send(tag + b" OK " + USER.encode() + b" authenticated (Success)")


def selected(peer: Peer, mode: str = "tls") -> None:
    """Log in and answer the client's SELECT INBOX."""
    login(peer, mode)
    tag = peer.tag()
    peer.send(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n* OK [UIDNEXT 9]")
    peer.send(tag + b" OK [READ-WRITE] SELECT completed")


def client(
    port: int, pki: PKI, mode: str, limits: Limits = SMALL, **kwargs: Any
) -> aio.IMAP4:
    kwargs.setdefault("backoff", Backoff(attempts=1, sleep=lambda _: None))
    return aio.IMAP4(
        USER,
        StaticTokenProvider(TOKEN),
        "127.0.0.1",
        port,
        starttls=mode == "starttls",
        ssl_context=pki.client_context(),
        timeout=5,
        limits=limits,
        **kwargs,
    )


def run(
    script: Callable[[Peer], None],
    pki: PKI,
    mode: str,
    then: Then | None = None,
    *,
    limits: Limits = SMALL,
    seconds: float = 15,
    trace: bool = True,
    **kwargs: Any,
) -> Outcome:
    """Serve ``script``; connect (and await ``then``) in a fresh loop, under attack."""
    with serving(script, pki.server_context(), implicit=mode == "tls") as server:
        imap = client(server.port, pki, mode, limits, **kwargs)

        async def main() -> object:
            await imap.connect()
            try:
                return imap if then is None else await then(imap)
            finally:
                imap._drop()

        outcome = attack(lambda: asyncio.run(main()), seconds=seconds, trace=trace)
        outcome.output += repr(imap)
    assert_no_secret(outcome)
    if outcome.error is not None:
        # Code written for imaplib catches every one of them with M.error.
        assert isinstance(outcome.error, imaplib.IMAP4.error), repr(outcome.error)
    return outcome


def select_then(action: Then) -> Then:
    async def go(imap: aio.IMAP4) -> object:
        await imap.select("INBOX")
        return await action(imap)

    return go


async def noop(imap: aio.IMAP4) -> object:
    return await imap.noop()


# --- memory: sizes announced, not sent -------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_huge_literal_during_authenticate_is_refused_before_any_allocation(
    pki: PKI, mode: str
) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode)
        peer.tag()
        peer.send(b"* 1 FETCH (BODY[] {99999999999}")

    outcome = run(script, pki, mode)
    error = assert_raised(outcome, LimitExceeded)
    assert "literal_bytes" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_huge_literal_after_noop_with_default_limits(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        tag = peer.tag()
        peer.send(b"* 1 FETCH (BODY[] {99999999999}")
        peer.send(tag + b" OK NOOP")

    outcome = run(script, pki, "tls", noop, limits=Limits())
    error = assert_raised(outcome, LimitExceeded)
    assert "literal_bytes" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_literal_announced_large_then_cut_costs_what_was_received(pki: PKI) -> None:
    # 60 MiB announced (within the default bound), 10 bytes sent, then BYE and
    # a hang-up in the middle of the literal: memory follows the 10 bytes.
    def script(peer: Peer) -> None:
        selected(peer)
        peer.tag()
        peer.send(b"* 1 FETCH (BODY[] {62914560}")
        peer.send(b"0123456789", crlf=False)
        peer.send(b"* BYE System Error")
        peer.close()

    outcome = run(
        script,
        pki,
        "tls",
        select_then(lambda m: m.fetch("1", "BODY[]")),
        limits=Limits(),
        reconnect=False,
    )
    error = assert_raised(outcome, ConnectionLost)
    assert isinstance(error, imaplib.IMAP4.abort)
    assert outcome.peak_bytes < 4 * MiB


def test_large_literal_arrives_whole_and_in_step(pki: PKI) -> None:
    body = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit, not aligned
    reply = (
        b"* 1 FETCH (UID 7 BODY[] {%d}\r\n" % len(body) + body + b" FLAGS (\\Seen))\r\n"
    )

    def script(peer: Peer) -> None:
        selected(peer)
        tag = peer.tag()
        peer.send(reply, crlf=False)
        peer.send(tag + b" OK FETCH completed")

    outcome = run(
        script,
        pki,
        "tls",
        select_then(lambda m: m.fetch("1", "(UID BODY[])")),
        limits=Limits(literal_bytes=4 * MiB, response_bytes=8 * MiB),
    )
    assert outcome.error is None, outcome.error
    typ, data = outcome.result
    assert typ == "OK"
    assert data[0][1] == body
    assert data[1] == b" FLAGS (\\Seen))"
    # The buffer (a bytearray grown by a little more than it holds) and the
    # body: no third copy (there was one, from bytes(buffer[:n])).
    assert outcome.peak_bytes < 2.2 * len(body)


# --- endless loops and endless replies ---------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sasl_ir", [True, False])
def test_continuation_flood_during_authenticate(
    pki: PKI, mode: str, sasl_ir: bool
) -> None:
    caps = CAPS if sasl_ir else CAPS.replace(b"SASL-IR ", b"")
    answers: list[bytes] = []

    def script(peer: Peer) -> None:
        greet(peer, mode, caps)
        peer.tag()
        for _ in range(10_000):
            peer.send(b"+ ")
            answers.append(peer.line())

    outcome = run(script, pki, mode)
    error = assert_raised(outcome, ProtocolError)
    assert "continuations" in str(error)
    # Two continuations answered at most (the initial response, if not sent
    # inline, and the error challenge's empty answer), then the client quits.
    assert len(answers) <= 2


@pytest.mark.parametrize("mode", MODES)
def test_untagged_flood_during_authenticate_without_sasl_ir(
    pki: PKI, mode: str
) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode, CAPS.replace(b"SASL-IR ", b""))
        peer.tag()
        peer.flood(b"* 1 EXISTS\r\n")

    outcome = run(script, pki, mode)
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 8 * MiB


def test_untagged_flood_after_noop_with_small_limits(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.flood(b"* 3 RECENT\r\n")

    limits = Limits(response_lines=500, response_bytes=64 * 1024)
    outcome = run(script, pki, "tls", noop, limits=limits)
    error = assert_raised(outcome, LimitExceeded)
    assert "response_" in str(error)
    assert outcome.peak_bytes < 8 * MiB


def test_untagged_flood_after_idle_done(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.send(b"+ idling")
        peer.line()  # DONE
        peer.flood(b"* 4 EXISTS\r\n")

    async def idle_once(imap: aio.IMAP4) -> None:
        async with imap.idle(duration=0.05) as idler:
            assert [item async for item in idler] == []

    outcome = run(script, pki, "tls", idle_once)
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 8 * MiB


def test_idle_duration_holds_while_responses_keep_coming(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        tag = peer.tag()
        peer.send(b"+ idling")
        # Keep-alives every 10 ms until the client says DONE.
        while not select.select([peer.sock], [], [], 0.01)[0]:
            peer.send(b"* OK still here")
        assert peer.line() == b"DONE"
        peer.send(tag + b" OK IDLE terminated")

    async def idle(imap: aio.IMAP4) -> int:
        async with imap.idle(duration=0.5) as idler:
            return len([item async for item in idler])

    outcome = run(script, pki, "tls", idle)
    assert outcome.error is None, outcome.error
    assert outcome.result > 0
    assert outcome.seconds < 5


def test_continuation_flood_during_idle(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.flood(b"+ idling\r\n")

    async def idle(imap: aio.IMAP4) -> list[Any]:
        async with imap.idle(duration=1) as idler:
            return [item async for item in idler]

    outcome = run(script, pki, "tls", idle)
    assert_raised(outcome, ProtocolError)


@pytest.mark.parametrize("mode", MODES)
def test_line_without_end_is_limit_exceeded(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        if mode == "starttls":
            greet(peer, mode)
            peer.tag()
        peer.flood(b"* OK " + b"A" * 4096)

    outcome = run(script, pki, mode)
    error = assert_raised(outcome, LimitExceeded)
    assert "line_bytes" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_cr_without_lf_is_one_endless_line(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.flood(b"* OK hello\r")

    outcome = run(script, pki, "tls")
    assert_raised(outcome, LimitExceeded)


def test_line_ending_in_lf_alone_is_a_protocol_error(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* OK [CAPABILITY " + CAPS + b"] ready\n", crlf=False)

    outcome = run(script, pki, "tls")
    assert_raised(outcome, ProtocolError)


def test_ten_megabyte_line_over_a_smaller_bound(pki: PKI) -> None:
    line = b"* SEARCH " + b"1 " * (5 * MiB) + b"\r\n"  # made before tracing starts

    def script(peer: Peer) -> None:
        selected(peer)
        tag = peer.tag()
        peer.send(line, crlf=False)
        peer.send(tag + b" OK SEARCH completed")

    outcome = run(script, pki, "tls", select_then(lambda m: m.search(None, "ALL")))
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 4 * MiB


@pytest.mark.parametrize("mode", MODES)
def test_trickling_greeting_ends_at_the_reply_deadline(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        if mode == "starttls":
            greet(peer, mode)
            peer.tag()
        peer.trickle(b"* OK still greeting ")

    outcome = run(script, pki, mode, limits=Limits(response_seconds=0.5))
    error = assert_raised(outcome, Timeout)
    assert "response_seconds" in str(error)
    assert outcome.seconds < 5


def test_trickling_reply_to_noop_ends_at_the_reply_deadline(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.trickle(b"* 1 EXISTS\r\n")

    outcome = run(script, pki, "tls", noop, limits=Limits(response_seconds=0.5))
    error = assert_raised(outcome, Timeout)
    assert "response_seconds" in str(error)
    assert outcome.seconds < 5


# --- not IMAP, out of step ------------------------------------------------------------


@pytest.mark.parametrize(
    "greeting",
    [
        b"\x00\x01\x02\xff\xfe garbage",
        b"+OK Gpop ready",
        b"220 smtp.gmail.com ESMTP",
        b"* \xff\xfe OK hi",
        b"",
    ],
)
def test_greetings_that_are_not_imap(pki: PKI, greeting: bytes) -> None:
    def script(peer: Peer) -> None:
        peer.send(greeting)

    outcome = run(script, pki, "tls")
    error = assert_raised(outcome, ProtocolError)
    assert "did not greet like an IMAP server" in str(error)


def test_wrong_tag_is_a_protocol_error(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.send(b"ZZZZ99 OK NOOP completed")

    outcome = run(script, pki, "tls", noop)
    error = assert_raised(outcome, ProtocolError)
    assert "ZZZZ99" in str(error)


def test_bye_in_the_middle_of_a_literal(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        selected(peer)
        peer.tag()
        peer.send(b"* 1 FETCH (BODY[] {100}")
        peer.send(b"* BYE System Error")
        peer.close()

    outcome = run(
        script,
        pki,
        "tls",
        select_then(lambda m: m.fetch("1", "BODY[]")),
        reconnect=False,
    )
    error = assert_raised(outcome, ConnectionLost)
    assert isinstance(error, imaplib.IMAP4.abort)


def test_bye_quoting_the_token_leaks_nothing(pki: PKI) -> None:
    raw = sasl.xoauth2_string(USER, TOKEN).encode()

    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.send(b"* BYE you sent " + raw + b" and " + TOKEN.encode())

    outcome = run(script, pki, "tls", noop, reconnect=False)
    assert_raised(outcome, ConnectionLost)


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_refusal_quoting_the_auth_line_leaks_nothing(pki: PKI, mechanism: str) -> None:
    from gmail_xoauth2 import AuthenticationFailed

    def script(peer: Peer) -> None:
        greet(peer, "tls")
        line = peer.line()
        tag = line.split()[0]
        peer.send(tag + b" NO rejected: " + line[len(tag) + 1 :])

    outcome = run(script, pki, "tls", mechanism=mechanism)
    error = assert_raised(outcome, AuthenticationFailed)
    assert isinstance(error, AuthenticationFailed)
    assert "<redacted>" in error.server_text


# --- STARTTLS -----------------------------------------------------------------------


def test_starttls_then_fresh_capabilities_then_authenticate(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        # SASL-IR offered in clear must be forgotten (RFC 3501 section 6.2.1):
        # after the handshake there is none, so the client waits for "+ ".
        peer.send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS SASL-IR AUTH=XOAUTH2] hi")
        tag = peer.tag()
        peer.send(tag + b" OK Begin TLS negotiation now")
        peer.starttls()
        tag = peer.tag()
        peer.send(b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2")
        peer.send(tag + b" OK done")
        tag = peer.tag()
        peer.send(b"+ ")
        peer.line()
        peer.send(tag + b" OK alice@example.com authenticated (Success)")

    with serving(script, pki.server_context(), implicit=False) as server:
        imap = client(server.port, pki, "starttls")

        async def main() -> tuple[str, ...]:
            await imap.connect()
            imap._drop()
            return imap.capabilities

        outcome = attack(lambda: asyncio.run(main()))
        received = list(server.received)
    assert outcome.error is None, outcome.error
    assert "SASL-IR" not in outcome.result
    verbs = [line.split()[1] for line in received if b" " in line]
    assert verbs == [b"STARTTLS", b"CAPABILITY", b"AUTHENTICATE"]
    # The initial response, alone on its line after the "+ ".
    assert received[3] == sasl.xoauth2_string(USER, TOKEN).encode()
    assert received[2].split()[1:] == [b"AUTHENTICATE", b"XOAUTH2"]
    assert_no_secret(outcome)


def test_no_starttls_offered_refuses_before_any_command(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready")

    with serving(script, pki.server_context(), implicit=False) as server:
        imap = client(server.port, pki, "starttls")
        outcome = attack(lambda: asyncio.run(imap.connect()))
        received = list(server.received)
    assert_raised(outcome, InsecureConnection)
    assert_no_secret(outcome)
    assert received == []


@pytest.mark.parametrize("answer", [b"BAD no TLS here", b"NO not now"])
def test_starttls_refused_is_insecure_connection_with_nothing_sent(
    pki: PKI, answer: bytes
) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2] ready")
        tag = peer.tag()
        peer.send(tag + b" " + answer)

    with serving(script, pki.server_context(), implicit=False) as server:
        imap = client(server.port, pki, "starttls")
        outcome = attack(lambda: asyncio.run(imap.connect()))
        received = list(server.received)
    error = assert_raised(outcome, InsecureConnection)
    assert isinstance(error, imaplib.IMAP4.error)
    assert_no_secret(outcome)
    assert [line.split()[1] for line in received] == [b"STARTTLS"]


def test_preauth_in_clear_with_starttls_is_insecure_connection(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] welcome back")

    with serving(script, pki.server_context(), implicit=False) as server:
        imap = client(server.port, pki, "starttls")
        outcome = attack(lambda: asyncio.run(imap.connect()))
        received = list(server.received)
    assert_raised(outcome, InsecureConnection)
    assert_no_secret(outcome)
    assert received == []


def test_bytes_injected_in_clear_after_starttls_ok_are_refused(pki: PKI) -> None:
    # A man in the middle appends a CAPABILITY (with SASL-IR) to the STARTTLS
    # reply in one segment: the client must not believe it, nor go on.
    def script(peer: Peer) -> None:
        peer.send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2] hi")
        tag = peer.tag()
        peer.send(
            tag + b" OK Begin TLS negotiation now\r\n"
            b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2"
        )
        peer.starttls()

    with serving(script, pki.server_context(), implicit=False) as server:
        imap = client(server.port, pki, "starttls")
        outcome = attack(lambda: asyncio.run(imap.connect()))
        received = list(server.received)
    assert_raised(outcome, InsecureConnection)
    assert_no_secret(outcome)
    assert [line.split()[1] for line in received] == [b"STARTTLS"]


def test_starttls_refused_on_a_reconnect_is_insecure_connection(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        if peer.index == 0:
            login(peer, "starttls")
            peer.tag()
            peer.send(b"* BYE Session expired, please login again.")
            return
        peer.send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2] ready")
        tag = peer.tag()
        peer.send(tag + b" BAD STARTTLS not available")

    outcome = run(script, pki, "starttls", noop)
    assert_raised(outcome, InsecureConnection)
