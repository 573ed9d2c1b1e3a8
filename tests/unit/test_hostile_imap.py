"""IMAP4 against hostile and broken servers: bounded time and memory, typed errors.

Each case is a scripted server on loopback (implicit TLS, and plain + STARTTLS
where the case allows) run under :func:`_hostile.attack`'s hard wall-clock
bound; it asserts the exception type, a memory bound where memory is at stake,
and that no secret reaches the exception chain, a log record or debug output.
"""

from __future__ import annotations

import base64
import imaplib
import select
from collections.abc import Callable
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
    AuthenticationFailed,
    ConnectionLost,
    InsecureConnection,
    LimitExceeded,
    Limits,
    ProtocolError,
    StaticTokenProvider,
    Timeout,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.imap import IMAP4
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


def client(
    port: int, pki: PKI, mode: str, limits: Limits = SMALL, **kwargs: Any
) -> Callable[[], IMAP4]:
    def connect() -> IMAP4:
        return IMAP4(
            USER,
            StaticTokenProvider(TOKEN),
            "127.0.0.1",
            port,
            starttls=mode == "starttls",
            ssl_context=pki.client_context(),
            timeout=5,
            limits=limits,
            backoff=Backoff(attempts=1, sleep=lambda _: None),
            **kwargs,
        )

    return connect


def run(
    script: Callable[[Peer], None],
    pki: PKI,
    mode: str,
    then: Callable[[IMAP4], object] | None = None,
    *,
    limits: Limits = SMALL,
    seconds: float = 15,
    debug: bool = False,
    trace: bool = True,
    **kwargs: Any,
) -> Outcome:
    """Serve ``script``; connect (and run ``then`` on the connection) under attack.

    With ``debug``, imaplib's debug output (level 4, every line) is on during
    the whole exchange, and checked for secrets like everything else.
    """
    old = imaplib.Debug
    with serving(script, pki.server_context(), implicit=mode == "tls") as server:
        connect = client(server.port, pki, mode, limits, **kwargs)

        def call() -> object:
            imaplib.Debug = 4 if debug else 0
            imap = connect()
            imaplib.Debug = old
            if then is None:
                return imap
            try:
                return then(imap)
            finally:
                imap.shutdown()

        try:
            outcome = attack(call, seconds=seconds, trace=trace)
        finally:
            imaplib.Debug = old
    assert_no_secret(outcome)
    if outcome.error is not None:
        # Code written for imaplib catches every one of them with M.error.
        assert isinstance(outcome.error, imaplib.IMAP4.error), repr(outcome.error)
    return outcome


def selected(peer: Peer, mode: str = "tls") -> None:
    """Log in and answer the client's SELECT INBOX."""
    login(peer, mode)
    tag = peer.tag()
    peer.send(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n* OK [UIDNEXT 9]")
    peer.send(tag + b" OK [READ-WRITE] SELECT completed")


def select_then(action: Callable[[IMAP4], object]) -> Callable[[IMAP4], object]:
    def run(imap: IMAP4) -> object:
        imap.select("INBOX")
        return action(imap)

    return run


# --- memory: sizes announced, not sent --------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_huge_literal_during_authenticate_is_refused_before_any_allocation(
    pki: PKI, mode: str
) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode)
        peer.tag()
        peer.send(b"* 1 FETCH (BODY[] {99999999999}")

    outcome = run(script, pki, mode)
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 4 * MiB


@pytest.mark.parametrize("mode", MODES)
def test_huge_literal_after_noop_with_default_limits(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        login(peer, mode)
        tag = peer.tag()
        peer.send(b"* 1 FETCH (BODY[] {99999999999}")
        peer.send(tag + b" OK NOOP")

    outcome = run(script, pki, mode, lambda m: m.noop(), limits=Limits())
    error = assert_raised(outcome, LimitExceeded)
    assert "literal_bytes" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_literal_announced_large_then_cut_costs_what_was_received(pki: PKI) -> None:
    # 60 MiB announced (within the default literal bound), 10 bytes sent:
    # memory follows the 10 bytes, not the 60 MiB.
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.send(b"* 1 FETCH (BODY[] {62914560}")
        peer.send(b"0123456789", crlf=False)
        peer.close()

    outcome = run(script, pki, "tls", lambda m: m.noop(), limits=Limits())
    assert_raised(outcome, ConnectionLost)
    assert outcome.peak_bytes < 4 * MiB


def test_large_literal_arrives_whole_and_in_step(pki: PKI) -> None:
    body = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit, not aligned
    # Made before tracing starts: only the client's allocations are measured.
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
    assert outcome.error is None
    typ, data = outcome.result
    assert typ == "OK"
    assert data[0][1] == body
    assert data[1] == b" FLAGS (\\Seen))"
    assert outcome.peak_bytes < 2 * len(body)


# --- endless loops and endless replies ----------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sasl_ir", [True, False])
def test_continuation_flood_during_authenticate(
    pki: PKI, mode: str, sasl_ir: bool
) -> None:
    caps = CAPS if sasl_ir else CAPS.replace(b"SASL-IR ", b"")

    def script(peer: Peer) -> None:
        greet(peer, mode, caps)
        peer.tag()
        for _ in range(10_000):
            peer.send(b"+ ")
            peer.line()

    outcome = run(script, pki, mode)
    error = assert_raised(outcome, ProtocolError)
    assert "continuations" in str(error)


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


@pytest.mark.parametrize("mode", MODES)
def test_untagged_flood_after_noop(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        login(peer, mode)
        peer.tag()
        peer.flood(b"* 3 RECENT\r\n")

    outcome = run(script, pki, mode, lambda m: m.noop())
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 8 * MiB


def test_untagged_flood_after_idle_done(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.send(b"+ idling")
        peer.line()  # DONE
        peer.flood(b"* 4 EXISTS\r\n")

    def idle_once(imap: IMAP4) -> None:
        with imap.idle(duration=0.05) as idler:
            list(idler)

    outcome = run(script, pki, "tls", idle_once)
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 8 * MiB


def test_continuation_flood_during_idle(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.flood(b"+ idling\r\n")

    def idle(imap: IMAP4) -> list[Any]:
        with imap.idle(duration=1) as idler:
            return list(idler)

    outcome = run(script, pki, "tls", idle)
    assert_raised(outcome, ProtocolError)


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

    def idle(imap: IMAP4) -> int:
        with imap.idle(duration=0.5) as idler:
            return sum(1 for _ in idler)

    outcome = run(script, pki, "tls", idle)
    assert outcome.error is None, outcome.error
    assert outcome.result > 0
    assert outcome.seconds < 5


@pytest.mark.parametrize("mode", MODES)
def test_greeting_without_end_of_line(pki: PKI, mode: str) -> None:
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


def test_lines_ending_in_lf_alone_are_malformed(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* OK [CAPABILITY " + CAPS + b"] ready\n", crlf=False)

    outcome = run(script, pki, "tls")
    assert_raised(outcome, ProtocolError)


@pytest.mark.parametrize("size", [10 * MiB])
def test_ten_megabyte_line_is_read_with_default_limits(pki: PKI, size: int) -> None:
    # A SEARCH reply of a very large mailbox is one line of megabytes.
    uids = b" ".join(b"%d" % n for n in range(1, size // 8))

    def script(peer: Peer) -> None:
        selected(peer)
        tag = peer.tag()
        peer.send(b"* SEARCH " + uids)
        peer.send(tag + b" OK SEARCH completed")

    outcome = run(
        script,
        pki,
        "tls",
        select_then(lambda m: m.search(None, "ALL")),
        limits=Limits(),
    )
    assert outcome.error is None, outcome.error
    assert outcome.result == ("OK", [uids])


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


def test_trickling_reply_to_noop(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.trickle(b"* 1 EXISTS\r\n")

    outcome = run(
        script, pki, "tls", lambda m: m.noop(), limits=Limits(response_seconds=0.5)
    )
    assert_raised(outcome, Timeout)
    assert outcome.seconds < 5


# --- echoed secrets --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_refusal_quoting_the_auth_line_leaks_nothing(
    pki: PKI, mode: str, mechanism: str
) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode)
        line = peer.line()
        tag = line.split()[0]
        peer.send(tag + b" NO rejected: " + line[len(tag) + 1 :])
        # The retry with a "refreshed" (same) token is never sent: nothing to do.

    outcome = run(script, pki, mode, mechanism=mechanism, debug=True)
    error = assert_raised(outcome, AuthenticationFailed)
    assert isinstance(error, AuthenticationFailed)
    assert "<redacted>" in error.server_text


def test_bye_quoting_the_token_leaks_nothing(pki: PKI) -> None:
    raw = base64.b64encode(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode())

    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.send(b"* BYE you sent " + raw + b" and " + TOKEN.encode())

    outcome = run(script, pki, "tls", lambda m: m.noop(), reconnect=False, debug=True)
    assert_raised(outcome, ConnectionLost)


def test_error_challenge_of_deeply_nested_json(pki: PKI) -> None:
    nested = base64.b64encode(b"[" * 30_000)

    def script(peer: Peer) -> None:
        greet(peer, "tls")
        tag = peer.tag()
        peer.send(b"+ " + nested)
        peer.line()
        peer.send(tag + b" NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")

    outcome = run(script, pki, "tls")
    error = assert_raised(outcome, AuthenticationFailed)
    assert isinstance(error, AuthenticationFailed) and error.status is None


# --- stray exception types ----------------------------------------------------


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
    assert_raised(outcome, ProtocolError)


@pytest.mark.parametrize("where", ["greeting", "capability"])
def test_non_ascii_capabilities_are_tolerated(pki: PKI, where: str) -> None:
    odd = CAPS + b" X-\xff\xfe\xc3\xa9"

    def script(peer: Peer) -> None:
        if where == "greeting":
            peer.send(b"* OK [CAPABILITY " + odd + b"] ready")
        else:
            peer.send(b"* OK ready")
            tag = peer.tag()
            peer.send(b"* CAPABILITY " + odd)
            peer.send(tag + b" OK done")
        tag = peer.tag()
        peer.send(tag + b" OK authenticated (Success)")

    outcome = run(script, pki, "tls", lambda m: m.capabilities)
    assert outcome.error is None, outcome.error
    assert "SASL-IR" in outcome.result


def test_wrong_tag_is_a_protocol_error(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        login(peer, "tls")
        peer.tag()
        peer.send(b"ZZZZ99 OK NOOP completed")

    outcome = run(script, pki, "tls", lambda m: m.noop())
    assert_raised(outcome, ProtocolError)


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
    assert_raised(outcome, ConnectionLost)


def test_no_capability_reply(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* OK ready")
        tag = peer.tag()
        peer.send(tag + b" OK no capabilities for you")

    outcome = run(script, pki, "tls")
    assert_raised(outcome, ProtocolError)


# --- STARTTLS ----------------------------------------------------------------------


@pytest.mark.parametrize("answer", [b"BAD no TLS here", b"NO not now"])
def test_starttls_refused_is_insecure_connection(pki: PKI, answer: bytes) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2] ready")
        tag = peer.tag()
        peer.send(tag + b" " + answer)

    with serving(script, pki.server_context(), implicit=False) as server:
        outcome = attack(client(server.port, pki, "starttls"))
        received = list(server.received)
    assert_raised(outcome, InsecureConnection)
    assert_no_secret(outcome)
    assert [line.split()[1] for line in received] == [b"STARTTLS"]


def test_preauth_in_clear_with_starttls_is_insecure_connection(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] welcome back")

    with serving(script, pki.server_context(), implicit=False) as server:
        outcome = attack(client(server.port, pki, "starttls"))
        received = list(server.received)
    assert_raised(outcome, InsecureConnection)
    assert received == []


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

    outcome = run(script, pki, "starttls", lambda m: m.noop())
    assert_raised(outcome, InsecureConnection)
