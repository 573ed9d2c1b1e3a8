"""gmail_xoauth2.POP3 against hostile and broken servers: bounded time, memory, types.

Every case runs a scripted server on loopback (implicit TLS, or plain + STLS)
and the client under :func:`attack`'s hard wall-clock bound, then checks the
exact exception type, the peak memory where memory is at stake, and that no
secret reached the exception chain, a log record or poplib's debug output.
Time is bounded by ``Limits.response_seconds``, never by sleeping.
"""

from __future__ import annotations

import poplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _hostile import (
    TOKEN,
    USER,
    Outcome,
    Peer,
    ScriptedServer,
    assert_no_secret,
    assert_raised,
    attack,
    serving,
)

from gmail_xoauth2 import (
    POP3,
    AuthenticationFailed,
    ConnectionLost,
    Error,
    InsecureConnection,
    LimitExceeded,
    Limits,
    POPInsecureConnection,
    POPProtocolError,
    ProtocolError,
    Timeout,
    TooManyConnections,
    oauthbearer_string,
    xoauth2_string,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.testing._pki import PKI, make_pki

MiB = 1 << 20
MODES = ["tls", "stls"]
# Small bounds, so that memory at stake is measured in a few MiB.
SMALL = Limits(line_bytes=64 * 1024, literal_bytes=MiB, response_lines=10_000)
# A short reply deadline: trickles end in half a second.
QUICK = Limits(response_seconds=0.5)
CAPA_STLS = b"+OK\r\nUSER\r\nSTLS\r\nSASL XOAUTH2 OAUTHBEARER\r\n."
CAPA_TLS = b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\nSASL XOAUTH2 OAUTHBEARER\r\n."

Script = Callable[[Peer], None]
Operation = Callable[[POP3], Any]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    path: Path = tmp_path_factory.mktemp("pki")
    return make_pki(path, hosts=("127.0.0.1",))


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the server side ----------------------------------------------------------------


def expect(peer: Peer, verb: bytes) -> bytes:
    line = peer.line()
    assert line.upper().startswith(verb), line
    return line


def upgrade(peer: Peer, capa: bytes = CAPA_STLS) -> None:
    """The plain half of a STLS session: CAPA, STLS, the handshake."""
    expect(peer, b"CAPA")
    peer.send(capa)
    expect(peer, b"STLS")
    peer.send(b"+OK Begin TLS negotiation")
    peer.starttls()
    expect(peer, b"CAPA")
    peer.send(CAPA_TLS)


def greet(peer: Peer, stls: bool) -> None:
    """The greeting, and with STLS the upgrade: the client's next line is AUTH."""
    peer.send(b"+OK Gpop ready")
    if stls:
        upgrade(peer)


def greet_and_log_in(peer: Peer, stls: bool) -> None:
    greet(peer, stls)
    expect(peer, b"AUTH ")
    peer.send(b"+OK Welcome.")


def at_auth(then: Script) -> Callable[[bool], Script]:
    """A script that greets the client (over TLS), then runs ``then`` for AUTH."""

    def for_mode(stls: bool) -> Script:
        def script(peer: Peer) -> None:
            greet(peer, stls)
            then(peer)

        return script

    return for_mode


def logged_in(then: Script) -> Callable[[bool], Script]:
    """A script that logs the client in, then runs ``then``."""

    def for_mode(stls: bool) -> Script:
        def script(peer: Peer) -> None:
            greet_and_log_in(peer, stls)
            then(peer)

        return script

    return for_mode


def from_the_start(script: Script) -> Callable[[bool], Script]:
    """A script that is hostile from its first byte (the greeting), in both modes."""
    return lambda stls: script


# -- the client side ----------------------------------------------------------------


def secrets(port: int) -> list[str]:
    """The token and both SASL strings, as this client sends them to ``port``."""
    return [
        TOKEN,
        xoauth2_string(USER, TOKEN),
        oauthbearer_string(USER, TOKEN, host="127.0.0.1", port=port),
    ]


class Run:
    """One hostile case: a scripted server, a client operation, what came out."""

    def __init__(self, pki: PKI, mode: str):
        self.pki = pki
        self.stls = mode == "stls"
        self.client_context = pki.client_context()
        self.server_context = pki.server_context()
        self.server: ScriptedServer | None = None

    def __call__(
        self,
        script: Callable[[bool], Script],
        operation: Operation | None = None,
        *,
        limits: Limits | None = None,
        mechanism: str = "XOAUTH2",
        seconds: float = 10.0,
    ) -> Outcome:
        with serving(
            script(self.stls), self.server_context, implicit=not self.stls
        ) as server:
            self.server = server

            def call() -> Any:
                pop = POP3(
                    USER,
                    lambda: TOKEN,
                    "127.0.0.1",
                    server.port,
                    starttls=self.stls,
                    ssl_context=self.client_context,
                    timeout=5.0,
                    mechanism=mechanism,
                    backoff=Backoff(attempts=1, sleep=lambda _: None),
                    limits=limits,
                )
                try:
                    return operation(pop) if operation else pop.getwelcome()
                finally:
                    pop.close()

            outcome = attack(call, seconds=seconds)
        assert_no_secret(outcome, secrets(server.port))
        if isinstance(outcome.error, Error):
            # Code written for poplib catches it too.
            assert isinstance(outcome.error, poplib.error_proto), outcome.error
        return outcome

    @property
    def received(self) -> list[bytes]:
        assert self.server is not None
        return self.server.received


@pytest.fixture
def run(pki: PKI, mode: str) -> Run:
    return Run(pki, mode)


@pytest.fixture
def stls_run(pki: PKI) -> Run:
    """For the cases that exist only with STLS."""
    return Run(pki, "stls")


def stat(pop: POP3) -> object:
    return pop.stat()


def retr(pop: POP3) -> object:
    return pop.retr(1)


def no_auth_sent(run: Run) -> None:
    assert not [line for line in run.received if line.upper().startswith(b"AUTH")]


# -- greetings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "greeting",
    [
        b"HELLO THERE",
        b"\x00\xff\xfe binary \x80\x81",
        b"",
        b"+",
        b"* OK IMAP4rev1 ready",
    ],
    ids=["garbage", "binary", "empty", "bare-plus", "imap"],
)
def test_a_greeting_that_is_not_pop3_is_a_protocol_error(
    run: Run, greeting: bytes
) -> None:
    outcome = run(from_the_start(lambda peer: peer.send(greeting)))
    error = assert_raised(outcome, ProtocolError)
    assert type(error) is POPProtocolError
    no_auth_sent(run)


def test_an_err_greeting_is_a_lost_connection(run: Run) -> None:
    outcome = run(from_the_start(lambda peer: peer.send(b"-ERR go away \xff")))
    error = assert_raised(outcome, ConnectionLost)
    assert "refused the connection" in str(error)


def test_a_too_many_connections_greeting(run: Run) -> None:
    line = b"-ERR Too many simultaneous connections."
    outcome = run(from_the_start(lambda peer: peer.send(line)))
    assert_raised(outcome, TooManyConnections)


def test_a_non_utf8_greeting_is_kept_as_bytes(run: Run) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"+OK \xff\xfe\x80 ready")
        if run.stls:
            upgrade(peer)
        expect(peer, b"AUTH ")
        peer.send(b"+OK \xc3\x28 welcome")

    outcome = run(lambda stls: script)
    assert outcome.error is None
    assert outcome.result == b"+OK \xff\xfe\x80 ready"


def test_a_greeting_without_end_is_cut_at_line_bytes(run: Run) -> None:
    outcome = run(
        from_the_start(lambda peer: peer.flood(b"+OK " + b"x" * 60)), limits=SMALL
    )
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 2 * MiB


def test_a_greeting_of_cr_without_lf_is_cut_at_line_bytes(run: Run) -> None:
    outcome = run(from_the_start(lambda peer: peer.flood(b"+OK ready\r")), limits=SMALL)
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 2 * MiB


def test_a_greeting_ending_in_cr_alone_times_out(run: Run) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"+OK ready\r", crlf=False)
        peer.hang()

    outcome = run(from_the_start(script), limits=QUICK)
    assert_raised(outcome, Timeout)
    assert outcome.seconds < 3


def test_a_trickling_greeting_times_out(run: Run) -> None:
    outcome = run(
        from_the_start(lambda peer: peer.trickle(b"+OK " + b"slow " * 1000)),
        limits=QUICK,
    )
    error = assert_raised(outcome, Timeout)
    assert "response_seconds" in str(error)
    assert outcome.seconds < 3


def test_a_greeting_that_ends_without_lf_is_a_dead_connection(run: Run) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"+OK ready", crlf=False)
        peer.close()

    outcome = run(from_the_start(script))
    assert_raised(outcome, ConnectionLost)


def test_a_10_mb_greeting_line_is_cut_at_line_bytes(run: Run) -> None:
    outcome = run(
        from_the_start(lambda peer: peer.flood(b"+OK " + b"y" * 4092, limit=10 * MiB)),
        limits=Limits(line_bytes=MiB),
    )
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 3 * MiB


# -- AUTH ----------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_a_continuation_flood_during_auth_is_a_protocol_error(
    run: Run, mechanism: str
) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"AUTH ")
        peer.flood(b"+ \r\n")

    outcome = run(at_auth(then), mechanism=mechanism, limits=SMALL)
    # Unasked continuations are out of step: the client stops before answering.
    assert type(assert_raised(outcome, ProtocolError)) is POPProtocolError
    assert outcome.peak_bytes < 2 * MiB


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_continuations_in_the_two_line_form_are_bounded(
    run: Run, mechanism: str
) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"AUTH ")
        peer.send(b"-ERR unknown command")  # the one-line form refused
        expect(peer, b"AUTH ")
        while True:  # "+ " to every line, for ever
            peer.send(b"+ ")
            peer.line()

    outcome = run(at_auth(then), mechanism=mechanism)
    assert type(assert_raised(outcome, ProtocolError)) is POPProtocolError
    # The initial response, then the abort (SASL_ROUNDS = 2), and nothing more.
    auth = run.received[-4:]
    assert [line.split(b" ")[:2] for line in auth[:2]] == [
        [b"AUTH", mechanism.encode()]
    ] * 2
    assert auth[2] == auth[0].split(b" ")[2]
    assert auth[3] == (b"" if mechanism == "XOAUTH2" else b"AQ==")


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("code", [b"[AUTH] ", b""], ids=["auth-code", "no-code"])
def test_a_refusal_that_echoes_the_secret_leaks_nothing(
    run: Run, mechanism: str, code: bytes
) -> None:
    def then(peer: Peer) -> None:
        while True:
            line = expect(peer, b"AUTH ")
            if len(line.split()) == 2:  # the two-line form: echo the response
                peer.send(b"+ ")
                line = peer.line()
            peer.send(b"-ERR " + code + b"rejected: " + line)

    outcome = run(at_auth(then), mechanism=mechanism)
    error = assert_raised(outcome, AuthenticationFailed)
    assert isinstance(error, AuthenticationFailed)
    assert "<redacted>" in error.server_text
    assert "<redacted>" in str(error)


def test_debug_output_of_an_echoing_server_holds_no_secret(run: Run) -> None:
    def script(stls: bool) -> Script:
        def serve(peer: Peer) -> None:
            if peer.index == 0:
                greet_and_log_in(peer, stls)
                expect(peer, b"STAT")
                peer.close()
            greet(peer, stls)
            while True:
                line = expect(peer, b"AUTH ")
                peer.send(b"+ " + line)  # a "challenge" quoting the secret
                peer.send(b"-ERR [AUTH] you said " + peer.line() + b" after " + line)

        return serve

    def debugged(pop: POP3) -> object:
        pop.set_debuglevel(2)
        return pop.stat()

    outcome = run(script, debugged)
    assert_raised(outcome, AuthenticationFailed)
    assert "*cmd* 'AUTH XOAUTH2 <redacted>'" in outcome.output
    assert "<redacted>" in outcome.output.split("*get*", 1)[1]


def test_an_err_to_a_command_that_echoes_the_secret_is_scrubbed(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"STAT")
        token = TOKEN.encode()
        peer.send(b"-ERR I remember " + token)

    def debugged(pop: POP3) -> object:
        pop.set_debuglevel(2)
        return pop.stat()

    outcome = run(logged_in(then), debugged)
    error = assert_raised(outcome, poplib.error_proto)
    assert b"<redacted>" in error.args[0]


def test_an_ok_that_echoes_the_secret_is_returned_without_it(run: Run) -> None:
    def then(peer: Peer) -> None:
        auth = expect(peer, b"AUTH ")
        peer.send(b"+OK welcome, " + auth)
        expect(peer, b"NOOP")
        peer.send(b"+OK you are " + TOKEN.encode())

    def noop(pop: POP3) -> object:
        return pop.noop()

    outcome = run(at_auth(then), noop)
    assert outcome.result == b"+OK you are <redacted>"


def test_garbage_in_answer_to_auth_is_a_protocol_error(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"AUTH ")
        peer.send(b"\xff\xfe what? \x80")

    outcome = run(at_auth(then))
    assert type(assert_raised(outcome, ProtocolError)) is POPProtocolError


def test_a_binary_refusal_is_an_authentication_failure(run: Run) -> None:
    def then(peer: Peer) -> None:
        while True:
            expect(peer, b"AUTH ")
            peer.send(b"-ERR [AUTH] \xff\xfe\x00 nope")

    outcome = run(at_auth(then))
    assert_raised(outcome, AuthenticationFailed)


def test_an_endless_trickle_in_answer_to_auth_times_out(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"AUTH ")
        peer.trickle(b"+OK slowly ")

    outcome = run(at_auth(then), limits=QUICK)
    assert_raised(outcome, Timeout)
    assert outcome.seconds < 3


# -- STLS ----------------------------------------------------------------------------


def plain(then: Script) -> Callable[[bool], Script]:
    """A STLS-only case: the scripted server speaks plain POP3, then ``then``."""

    def script(peer: Peer) -> None:
        peer.send(b"+OK plain POP ready")
        then(peer)

    return lambda stls: script


def test_blank_capa_lines_around_stls_are_harmless(stls_run: Run) -> None:
    def then(peer: Peer) -> None:
        upgrade(peer, b"+OK\r\n\r\n   \r\nSTLS\r\n\r\n.")
        expect(peer, b"AUTH ")
        peer.send(b"+OK Welcome.")
        expect(peer, b"CAPA")
        peer.send(b"+OK\r\n\r\nTOP\r\n \t \r\nX-\xff\xfe-BINARY 1\r\n.")

    outcome = stls_run(plain(then), POP3.capa)
    assert outcome.error is None
    assert set(outcome.result) == {"TOP", "X-\ufffd\ufffd-BINARY"}


def test_capa_without_stls_sends_no_token(stls_run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(b"+OK\r\nUSER\r\n\r\nSASL XOAUTH2\r\n.")

    outcome = stls_run(plain(then))
    assert_raised(outcome, InsecureConnection)
    assert stls_run.received == [b"CAPA"]


@pytest.mark.parametrize(
    "answer",
    [
        b"-ERR [SYS/PERM] no TLS for you",
        b"-ERR \xff\xfe",
        b"+ go ahead",
        b"\x16\x03\x01 not POP3",
        b"",
    ],
    ids=["err", "err-binary", "continuation", "garbage", "empty"],
)
def test_an_odd_answer_to_stls_sends_no_token(stls_run: Run, answer: bytes) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(CAPA_STLS)
        expect(peer, b"STLS")
        peer.send(answer)

    outcome = stls_run(plain(then))
    assert_raised(outcome, InsecureConnection)
    assert stls_run.received == [b"CAPA", b"STLS"]


def test_plaintext_injected_after_stls_is_refused(stls_run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(CAPA_STLS)
        expect(peer, b"STLS")
        peer.send(b"+OK Begin TLS\r\n+OK Welcome.")  # one write: one segment
        peer.hang()

    outcome = stls_run(plain(then))
    error = assert_raised(outcome, InsecureConnection)
    assert "after its answer to STLS" in str(error)


def test_a_broken_handshake_after_stls_is_insecure(stls_run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(CAPA_STLS)
        expect(peer, b"STLS")
        peer.send(b"+OK Begin TLS")
        peer.send(b"this is not a TLS record at all\r\n" * 10)
        peer.close()

    outcome = stls_run(plain(then))
    assert_raised(outcome, InsecureConnection)


def test_a_certificate_from_another_ca_sends_no_token(run: Run, tmp_path: Path) -> None:
    run.server_context = make_pki(tmp_path, hosts=("127.0.0.1",)).server_context()
    outcome = run(logged_in(lambda peer: None))
    assert_raised(outcome, InsecureConnection)
    no_auth_sent(run)


def test_an_endless_capa_before_stls_is_cut(stls_run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(b"+OK")
        peer.flood(b"X-FILLER " + b"z" * 90 + b"\r\n")

    outcome = stls_run(plain(then), limits=SMALL)
    assert_raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 3 * MiB


def test_replies_out_of_step_before_stls_are_insecure(stls_run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(CAPA_STLS + b"\r\n+OK Begin TLS")  # STLS answered in advance
        peer.hang()

    outcome = stls_run(plain(then))
    assert_raised(outcome, InsecureConnection)
    assert stls_run.received == [b"CAPA"]


# -- multi-line replies ----------------------------------------------------------------


def test_an_endless_multiline_reply_is_cut_within_small_limits(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK message follows")
        peer.flood(b"a line of a message that never ends" * 3 + b"\r\n")

    outcome = run(logged_in(then), retr, limits=SMALL)
    error = assert_raised(outcome, LimitExceeded)
    assert "literal_bytes" in str(error)
    assert outcome.peak_bytes < 4 * MiB


# 64 MiB through TLS under tracemalloc takes seconds: once (the reader after
# STLS is the same), in implicit TLS.
@pytest.mark.parametrize("mode", ["tls"])
def test_an_endless_multiline_reply_ends_within_default_limits(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK message follows")
        peer.flood(b"q" * 1022 + b"\r\n")

    outcome = run(logged_in(then), retr, seconds=14)
    assert_raised(outcome, LimitExceeded)
    # 64 MiB of lines (Limits.literal_bytes), their list, and not much more.
    assert outcome.peak_bytes < 100 * MiB


def test_endless_short_lines_are_cut_at_response_lines(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"UIDL")
        peer.send(b"+OK")
        peer.flood(b"1 x\r\n")

    outcome = run(logged_in(then), POP3.uidl, limits=SMALL)
    error = assert_raised(outcome, LimitExceeded)
    assert "response_lines" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_a_trickling_multiline_reply_times_out(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK message follows\r\nSubject: hi\r\n")
        peer.trickle(b"slow body line\r\n")

    outcome = run(logged_in(then), retr, limits=QUICK)
    error = assert_raised(outcome, Timeout)
    assert "response_seconds" in str(error)
    assert outcome.seconds < 3


def test_a_trickling_single_line_reply_times_out(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"STAT")
        peer.trickle(b"+OK 1 ")

    outcome = run(logged_in(then), stat, limits=QUICK)
    assert_raised(outcome, Timeout)
    assert outcome.seconds < 3


def test_a_10_mb_message_line_is_legitimate_within_default_limits(run: Run) -> None:
    big = b"B" * (10 * MiB)

    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK\r\nSubject: big\r\n\r\n" + big + b"\r\n..dot\r\n.")

    outcome = run(logged_in(then), retr)
    assert outcome.error is None
    _, lines, octets = outcome.result
    assert lines == [b"Subject: big", b"", big, b".dot"]
    assert octets == 14 + 2 + len(big) + 2 + 6  # as poplib counts: "..dot" is 6


def test_a_10_mb_line_is_cut_at_line_bytes(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK")
        peer.flood(b"B" * 4096, limit=10 * MiB)

    outcome = run(logged_in(then), retr, limits=Limits(line_bytes=MiB))
    error = assert_raised(outcome, LimitExceeded)
    assert "line_bytes" in str(error)
    assert outcome.peak_bytes < 3 * MiB


def test_non_utf8_message_bytes_are_returned_as_they_are(run: Run) -> None:
    body = [b"\xff\xfe\x00\x80", b"caf\xe9", b"\x1b[31m"]

    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK \xff octets\r\n" + b"\r\n".join(body) + b"\r\n.")

    outcome = run(logged_in(then), retr)
    assert outcome.error is None
    assert outcome.result[1] == body


def test_a_connection_closed_mid_multiline_reply_is_lost(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK\r\nSubject: half\r\n-ERR [SYS/TEMP] shutting down")
        peer.close()

    outcome = run(logged_in(then), retr)
    error = assert_raised(outcome, ConnectionLost)
    assert "again" in str(error)  # repeated once on a new connection, as a read
    assert run.server is not None and run.server.connections == 2


def test_a_line_cut_by_eof_is_a_dead_connection(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"STAT")
        peer.send(b"+OK 1 2", crlf=False)
        peer.close()

    outcome = run(logged_in(then), stat)
    assert_raised(outcome, ConnectionLost)


# -- single-line replies -------------------------------------------------------------


MALFORMED = [b"+OK", b"+OK \xff\xfe", b"+OK 1", b"+OK -1 -2", b"+OK 1 " + b"9" * 5000]
SINGLE_LINE: list[tuple[bytes, Operation, bytes]] = [
    *((b"STAT", stat, reply) for reply in MALFORMED),
    *((b"LIST", lambda pop: pop.list(1), reply) for reply in MALFORMED[:3]),
    # A unique id may be any printable word: "+OK 1 999..." is well formed.
    *((b"UIDL", lambda pop: pop.uidl(1), reply) for reply in MALFORMED[:3]),
]


@pytest.mark.parametrize(
    ("verb", "operation", "reply"),
    SINGLE_LINE,
    ids=[f"{verb.decode()}-{reply[:12]!r}" for verb, _, reply in SINGLE_LINE],
)
def test_a_malformed_single_line_reply_is_a_protocol_error(
    run: Run, verb: bytes, operation: Operation, reply: bytes
) -> None:
    def then(peer: Peer) -> None:
        expect(peer, verb)
        peer.send(reply)
        peer.hang()

    outcome = run(logged_in(then), operation)
    assert type(assert_raised(outcome, ProtocolError)) is POPProtocolError


def test_a_reply_that_is_neither_ok_nor_err_is_a_protocol_error(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"NOOP")
        peer.send(b"+ maybe")

    outcome = run(logged_in(then), POP3.noop)
    assert type(assert_raised(outcome, ProtocolError)) is POPProtocolError


def test_replies_out_of_step_are_a_protocol_error(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"AUTH ")
        peer.send(b"+OK Welcome.\r\n+OK 3 300")  # STAT answered in advance
        peer.hang()

    outcome = run(at_auth(then), stat)
    assert type(assert_raised(outcome, ProtocolError)) is POPProtocolError
    assert not [line for line in run.received if line == b"STAT"]


def test_a_greeting_answered_twice_sends_no_token(run: Run) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"+OK Gpop ready\r\n+OK Welcome.")
        peer.hang()

    outcome = run(from_the_start(script))
    expected = POPInsecureConnection if run.stls else POPProtocolError
    assert type(assert_raised(outcome, expected)) is expected
    no_auth_sent(run)


def test_blank_and_binary_capa_lines_after_login(run: Run) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(b"+OK\r\n\r\n \r\nUIDL\r\n\xff\xfe\r\n.")

    outcome = run(logged_in(then), POP3.capa)
    assert outcome.error is None
    assert set(outcome.result) == {"UIDL", "\ufffd\ufffd"}


# -- deletions under attack ------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        lambda peer: peer.send(b"HTTP/1.1 200 OK"),
        lambda peer: peer.trickle(b"+OK bye"),
        lambda peer: peer.flood(b"+OK "),
        Peer.close,
    ],
    ids=["garbage", "trickle", "flood", "closed"],
)
def test_deletions_are_never_reported_applied_without_ok(
    run: Run, answer: Script
) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"DELE 1")
        peer.send(b"+OK marked")
        expect(peer, b"QUIT")
        answer(peer)

    def delete(pop: POP3) -> object:
        pop.dele(1)
        return pop.quit()

    limits = Limits(line_bytes=MiB, response_seconds=0.5)
    outcome = run(logged_in(then), delete, limits=limits)
    error = assert_raised(outcome, ConnectionLost)
    assert isinstance(error, ConnectionLost)
    assert error.outcome_unknown
    assert "may not have been applied" in str(error)
    assert outcome.peak_bytes < 4 * MiB
