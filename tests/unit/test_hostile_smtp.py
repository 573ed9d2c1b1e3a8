"""SMTP against hostile and broken servers: bounded time and memory, typed errors.

Each case is a scripted server on loopback (implicit TLS, and plain + STARTTLS
where the case allows) run under :func:`_hostile.attack`'s hard wall-clock
bound; it asserts the exact exception type, a memory bound where memory is at
stake, and that no secret reaches the exception chain, a log record or
smtplib's debug output (level 2 throughout).
"""

from __future__ import annotations

import base64
import smtplib
import threading
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
    secrets_for,
    serving,
)

from gmail_xoauth2 import (
    SMTP,
    AuthenticationFailed,
    ConnectionLost,
    DeliveryUnknown,
    Error,
    InsecureConnection,
    LimitExceeded,
    Limits,
    ProtocolError,
    SMTPAuthenticationFailed,
    SMTPConnectionLost,
    SMTPDeliveryUnknown,
    SMTPInsecureConnection,
    SMTPLimitExceeded,
    SMTPProtocolError,
    SMTPTimeout,
    Timeout,
    oauthbearer_string,
    xoauth2_response,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.testing._pki import PKI, make_pki

MiB = 1024 * 1024
SMALL = Limits(line_bytes=64 * 1024, response_lines=1_000, response_seconds=5)
# A trickle must end: 0.3 s for a whole reply, however steadily bytes arrive.
SLOW = Limits(line_bytes=64 * 1024, response_lines=1_000, response_seconds=0.3)
# What a bounded reply may cost, the client's TLS and logging included; an
# unbounded one grew by about 1 GB in 10 s.
SMALL_PEAK = 4 * MiB
MODES = ["tls", "starttls"]
BOB = "bob@example.com"
MESSAGE = b"Subject: hi\r\n\r\nHello, Bob.\r\n"
FEATURES = b"250-hostile.test\r\n250-8BITMIME\r\n250 AUTH XOAUTH2 OAUTHBEARER"
# Made once, outside the measured run: the server's own copy would count.
TEN_MB = b"x" * (10 * MiB) + b"\r\n"


class DebugSMTP(SMTP):
    """SMTP with smtplib's debug output on from the greeting on."""

    debuglevel = 2


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(Path(tmp_path_factory.mktemp("pki")), hosts=("127.0.0.1",))


# -- the server's side ---------------------------------------------------------------


def expect(peer: Peer, verb: bytes) -> bytes:
    """The client's next line, which must start with ``verb``."""
    line = peer.line()
    assert line.upper().startswith(verb), line
    return line


def greet(peer: Peer, mode: str, features: bytes = FEATURES) -> None:
    """Greeting and EHLO, with STARTTLS (then EHLO again) in ``starttls`` mode."""
    peer.send(b"220 hostile.test ESMTP")
    expect(peer, b"EHLO")
    if mode == "starttls":
        peer.send(b"250-hostile.test\r\n250 STARTTLS")
        expect(peer, b"STARTTLS")
        peer.send(b"220 2.0.0 Ready to start TLS")
        peer.starttls()
        expect(peer, b"EHLO")
    peer.send(features)


def login(peer: Peer, mode: str) -> bytes:
    """Greeting, EHLO and an accepted AUTH; the AUTH line."""
    greet(peer, mode)
    line = expect(peer, b"AUTH")
    peer.send(b"235 2.7.0 Accepted")
    return line


def until_dot(peer: Peer, mode: str) -> None:
    """Log in, accept MAIL, RCPT and DATA, read the message to its final dot."""
    login(peer, mode)
    expect(peer, b"MAIL")
    peer.send(b"250 2.1.0 OK")
    expect(peer, b"RCPT")
    peer.send(b"250 2.1.5 OK")
    expect(peer, b"DATA")
    peer.send(b"354 Go ahead")
    while peer.line() != b".":
        pass


# -- the client's side ---------------------------------------------------------------


def run(
    script: Callable[[Peer], None],
    pki: PKI,
    mode: str,
    then: Callable[[SMTP], object] | None = None,
    *,
    limits: Limits | None = SMALL,
    seconds: float = 15,
    debug: bool = True,
    **kwargs: Any,
) -> tuple[Outcome, list[bytes], int]:
    """Serve ``script``; connect (and run ``then``) under attack.

    With ``debug`` (the default), smtplib's debug output is on from the
    greeting on. Returns the outcome, every line the server received, and how
    many connections the client opened.
    """

    def call() -> object:
        smtp = (DebugSMTP if debug else SMTP)(
            USER,
            lambda: TOKEN,
            "127.0.0.1",
            server.port,
            starttls=mode == "starttls",
            ssl_context=pki.client_context(),
            timeout=5,
            local_hostname="client.test",
            backoff=Backoff(attempts=1, sleep=lambda _: None),
            limits=limits,
            **kwargs,
        )
        try:
            return None if then is None else then(smtp)
        finally:
            smtp.close()

    with serving(script, pki.server_context(), implicit=mode == "tls") as server:
        outcome = attack(call, seconds=seconds)
    if isinstance(outcome.error, Error):
        # Code written for smtplib catches it too.
        assert isinstance(outcome.error, smtplib.SMTPException), outcome.error
    return outcome, list(server.received), server.connections


def send(smtp: SMTP) -> object:
    return smtp.sendmail(USER, [BOB], MESSAGE)


def secrets(port: int | None = None) -> list[str]:
    """Every form of the secret, OAUTHBEARER's with the real port too."""
    found = secrets_for()
    if port is not None:
        found.append(oauthbearer_string(USER, TOKEN, host="127.0.0.1", port=port))
    return found


# What SMTP raises for each of the library's errors: its SMTPException subclass.
AS_SMTP: dict[type[BaseException], type[BaseException]] = {
    AuthenticationFailed: SMTPAuthenticationFailed,
    ConnectionLost: SMTPConnectionLost,
    DeliveryUnknown: SMTPDeliveryUnknown,
    InsecureConnection: SMTPInsecureConnection,
    LimitExceeded: SMTPLimitExceeded,
    ProtocolError: SMTPProtocolError,
    Timeout: SMTPTimeout,
}


def raised(outcome: Outcome, expected: type[BaseException]) -> BaseException:
    """Exactly ``expected`` (as SMTP raises it) was raised, and no secret anywhere."""
    error = assert_raised(outcome, expected)
    exact = AS_SMTP.get(expected, expected)
    assert type(error) is exact, f"{type(error).__mro__}: {error}"
    assert_no_secret(outcome)
    return error


def no_auth(received: list[bytes]) -> None:
    assert not [line for line in received if line.upper().startswith(b"AUTH")]


# -- the greeting --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "greeting",
    [
        b"hello, this is not SMTP",
        bytes(range(256)),
        b"\x00\xff\xfe\r\n",
        b"999 out of range",
        b"abc def",
        b"2500 four digits",
        b"099 too small",
        b"25",
        b"",
        b" 220 leading space",
        b"+22 sign",
        b"220\rready",
        b"220-first\r\n550 second code",
    ],
    ids=lambda greeting: repr(greeting[:24]),
)
def test_a_greeting_that_is_not_smtp(pki: PKI, mode: str, greeting: bytes) -> None:
    outcome, received, _ = run(lambda peer: peer.send(greeting), pki, mode)
    raised(outcome, ProtocolError)
    assert "not an SMTP reply line" in str(outcome.error) or "changed the code" in str(
        outcome.error
    )
    assert received == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("start", "flood", "expected"),
    [
        (b"", b"x", ProtocolError),  # no code: refused on its first bytes
        (b"220", b"\r", ProtocolError),  # "220\r\r": CR without LF ends no line
        (b"220 ", b"x", LimitExceeded),  # a greeting that never ends (no LF)
        (b"220 ready", b"\r", LimitExceeded),  # CR without LF, forever
        (b"", b"220 ready\r", LimitExceeded),  # the same, repeated
        (b"", b"220-x\r\n", LimitExceeded),  # a continuation that never ends
    ],
    ids=repr,
)
def test_an_endless_greeting(
    pki: PKI, mode: str, start: bytes, flood: bytes, expected: type[BaseException]
) -> None:
    def script(peer: Peer) -> None:
        peer.send(start, crlf=False)
        peer.flood(flood)

    outcome, received, _ = run(script, pki, mode)
    raised(outcome, expected)
    assert outcome.peak_bytes < SMALL_PEAK
    assert received == []


@pytest.mark.parametrize("mode", MODES)
def test_a_greeting_cut_at_cr_then_silence_times_out(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 ready\r", crlf=False)
        peer.hang()

    outcome, _, _ = run(script, pki, mode, limits=SLOW)
    raised(outcome, Timeout)
    assert outcome.seconds < 5


@pytest.mark.parametrize("mode", MODES)
def test_a_10_mb_line(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 ", crlf=False)
        peer.send(TEN_MB, crlf=False)

    outcome, _, _ = run(script, pki, mode, limits=Limits(line_bytes=MiB))
    error = raised(outcome, LimitExceeded)
    assert "Limits.line_bytes" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_a_10_mb_greeting_within_the_default_limits_is_read(pki: PKI) -> None:
    # Longer than smtplib's 8192 bytes, shorter than Limits.line_bytes: read.
    def script(peer: Peer) -> None:
        peer.send(b"220-", crlf=False)
        peer.send(TEN_MB, crlf=False)
        login(peer, "tls")
        expect(peer, b"NOOP")
        peer.send(b"250 2.0.0 OK")

    # Without debug output: printing 10 MB, scrubbed, is not what is measured.
    outcome, _, _ = run(
        script, pki, "tls", lambda smtp: smtp.noop(), limits=None, debug=False
    )
    assert outcome.error is None, outcome.error
    assert outcome.result == (250, b"2.0.0 OK")


@pytest.mark.parametrize("mode", MODES)
def test_a_trickling_greeting_times_out(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220-slow")
        peer.trickle(b"220-still going\r\n")

    outcome, _, _ = run(script, pki, mode, limits=SLOW)
    error = raised(outcome, Timeout)
    assert "Limits.response_seconds" in str(error)
    assert 0.25 < outcome.seconds < 5


@pytest.mark.parametrize("mode", MODES)
def test_non_utf8_bytes_are_read_and_shown_safely(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 \xff\xfe\xc3( hostile")
        expect(peer, b"EHLO")
        if mode == "starttls":
            peer.send(b"250-\xff\xfe\r\n250 STARTTLS")
            expect(peer, b"STARTTLS")
            peer.send(b"220 \x80\x81 go")
            peer.starttls()
            expect(peer, b"EHLO")
        peer.send(b"250-\xff\xfe\r\n250-\x80\x81\r\n250 AUTH XOAUTH2")
        for _ in range(2):  # the refusal, then the retry with a refreshed token
            expect(peer, b"AUTH")
            peer.send(b"535 5.7.8 \xff\xfe\xc3( no")

    outcome, _, _ = run(script, pki, mode)
    error = raised(outcome, AuthenticationFailed)
    assert isinstance(error, AuthenticationFailed)
    assert error.server_text == "535 5.7.8 \ufffd\ufffd\ufffd( no"


# -- EHLO ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "reply",
    [
        b"999 x",
        b"abc",
        b"2500 x",
        b"250-hostile.test\r\n251 AUTH XOAUTH2",
        b"250-hostile.test\r\n550 AUTH XOAUTH2",
        b"250-hostile.test\r\n\x00\x01\x02",
    ],
    ids=repr,
)
def test_an_ehlo_reply_that_is_not_smtp(pki: PKI, mode: str, reply: bytes) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode, features=reply)

    outcome, received, _ = run(script, pki, mode)
    raised(outcome, ProtocolError)
    no_auth(received)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("start", "flood", "bound"),
    [
        (b"", b"250-x\r\n", "response_lines"),
        (b"", b"250-" + b"x" * 1000 + b"\r\n", "line_bytes"),
        (b"250-", b"x", "line_bytes"),  # one line without its end
    ],
    ids=["short lines", "long lines", "one endless line"],
)
def test_an_endless_ehlo_reply(
    pki: PKI, mode: str, start: bytes, flood: bytes, bound: str
) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode, features=b"250-hostile.test")
        peer.send(start, crlf=False)
        peer.flood(flood)

    outcome, received, _ = run(script, pki, mode)
    error = raised(outcome, LimitExceeded)
    assert f"Limits.{bound}" in str(error)
    assert outcome.peak_bytes < SMALL_PEAK
    no_auth(received)


def test_an_endless_ehlo_reply_ends_within_the_default_limits(pki: PKI) -> None:
    line = b"250-" + b"x" * 1000 + b"\r\n"

    def script(peer: Peer) -> None:
        greet(peer, "tls", features=b"250-hostile.test")
        peer.flood(line)

    # Without debug output: printing 16 MiB, scrubbed, is not what is measured.
    outcome, received, _ = run(script, pki, "tls", limits=None, debug=False)
    error = raised(outcome, LimitExceeded)
    assert "Limits.line_bytes" in str(error)
    # The reply is kept as it arrived: 16 MiB of text, not a list of lines.
    assert outcome.peak_bytes < 64 * MiB
    assert outcome.seconds < 10
    no_auth(received)


@pytest.mark.parametrize("mode", MODES)
def test_a_trickling_ehlo_reply_times_out(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode, features=b"250-hostile.test")
        peer.trickle(b"250-slow\r\n")

    outcome, received, _ = run(script, pki, mode, limits=SLOW)
    raised(outcome, Timeout)
    assert 0.25 < outcome.seconds < 5
    no_auth(received)


# -- STARTTLS ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"454 4.7.0 TLS not available", InsecureConnection),
        (b"554 5.7.0 no", InsecureConnection),
        (b"250 2.0.0 not quite", InsecureConnection),
        (b"hello", InsecureConnection),
        (b"999 x", InsecureConnection),
        (b"220-go\r\n454 no", InsecureConnection),
        # Bytes after the answer, before the handshake: CVE-2011-0411.
        (b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN", InsecureConnection),
    ],
    ids=repr,
)
def test_starttls_refused_or_garbled_sends_no_token(
    pki: PKI, answer: bytes, expected: type[BaseException]
) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 hostile.test ESMTP")
        expect(peer, b"EHLO")
        peer.send(b"250-hostile.test\r\n250 STARTTLS")
        expect(peer, b"STARTTLS")
        peer.send(answer)

    outcome, received, _ = run(script, pki, "starttls")
    error = raised(outcome, expected)
    if b"injected" in answer:
        assert "before the TLS handshake" in str(error)
    assert received == [b"ehlo client.test", b"STARTTLS"]


def test_starttls_answered_by_plain_text_instead_of_tls(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 hostile.test ESMTP")
        expect(peer, b"EHLO")
        peer.send(b"250-hostile.test\r\n250 STARTTLS")
        expect(peer, b"STARTTLS")
        peer.send(b"220 go ahead")
        peer.send(b"250 this is not a TLS handshake")
        peer.hang()

    outcome, received, _ = run(script, pki, "starttls")
    error = raised(outcome, InsecureConnection)
    assert "TLS handshake" in str(error)
    assert received[:2] == [b"ehlo client.test", b"STARTTLS"]  # then a ClientHello
    no_auth(received)


@pytest.mark.parametrize("flood", [b"220-x\r\n", b"220 x"], ids=repr)
def test_an_endless_starttls_answer(pki: PKI, flood: bytes) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 hostile.test ESMTP")
        expect(peer, b"EHLO")
        peer.send(b"250-hostile.test\r\n250 STARTTLS")
        expect(peer, b"STARTTLS")
        peer.flood(flood)

    outcome, received, _ = run(script, pki, "starttls")
    raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < SMALL_PEAK
    assert received == [b"ehlo client.test", b"STARTTLS"]


# -- AUTH ----------------------------------------------------------------------------


CHALLENGE = b"334 eyJzdGF0dXMiOiI0MDAifQ=="  # {"status":"400"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_a_334_flood_during_auth(pki: PKI, mode: str, mechanism: str) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode)
        expect(peer, b"AUTH")
        peer.flood(CHALLENGE + b"\r\n")

    outcome, _, _ = run(script, pki, mode, mechanism=mechanism)
    error = raised(outcome, ProtocolError)
    assert "334" in str(error)
    assert outcome.peak_bytes < SMALL_PEAK


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_one_continuation_is_answered_never_more(
    pki: PKI, mode: str, mechanism: str
) -> None:
    answers: list[bytes] = []

    def script(peer: Peer) -> None:
        greet(peer, mode)
        expect(peer, b"AUTH")
        while True:
            peer.send(CHALLENGE)
            answers.append(peer.line())

    outcome, _, _ = run(script, pki, mode, mechanism=mechanism)
    raised(outcome, ProtocolError)
    # The error challenge is answered (RFC 7628 section 3.2.3), then no more.
    assert answers == [b"" if mechanism == "XOAUTH2" else b"AQ=="]


@pytest.mark.parametrize("mode", MODES)
def test_an_endless_334_continuation(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        greet(peer, mode)
        expect(peer, b"AUTH")
        peer.flood(b"334-x\r\n")

    outcome, _, _ = run(script, pki, mode)
    raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < SMALL_PEAK


def _raw(mechanism: str, port: int) -> bytes:
    if mechanism == "XOAUTH2":
        return xoauth2_response(USER, TOKEN)
    return base64.b64decode(
        oauthbearer_string(USER, TOKEN, host="127.0.0.1", port=port)
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        (b"535 5.7.8 rejected:", AuthenticationFailed),
        (b"454 4.7.0 try later:", ConnectionLost),
        (b"999 rejected:", ProtocolError),
        (b"535-5.7.8 rejected:\r\n535 5.7.8", AuthenticationFailed),
    ],
    ids=["535", "454", "999", "multi-line"],
)
def test_a_refusal_that_echoes_the_auth_line(
    pki: PKI,
    mode: str,
    mechanism: str,
    verdict: bytes,
    expected: type[BaseException],
) -> None:
    ports: list[int] = []

    def script(peer: Peer) -> None:
        greet(peer, mode)
        port = peer.sock.getsockname()[1]
        ports.append(port)
        while True:  # as many tries as the client makes
            line = expect(peer, b"AUTH")
            raw = _raw(mechanism, port).replace(b"\x01", b" ")
            # The AUTH line, its decoded SASL string (with the token) quoted.
            peer.send(verdict + b" " + line + b" " + raw)

    outcome, _, _ = run(script, pki, mode, mechanism=mechanism)
    raised(outcome, expected)
    assert_no_secret(outcome, secrets(ports[0]))
    assert "<redacted>" in "".join(outcome.texts())
    assert outcome.output  # the debug output was there, and clean


@pytest.mark.parametrize("mode", MODES)
def test_a_refusal_of_mail_that_echoes_the_auth_line(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        auth = login(peer, mode)
        expect(peer, b"MAIL")
        peer.send(b"550 5.7.1 you said " + auth)
        expect(peer, b"RSET")
        peer.send(b"250 2.0.0 OK")

    outcome, _, _ = run(script, pki, mode, send)
    error = raised(outcome, smtplib.SMTPSenderRefused)
    assert isinstance(error, smtplib.SMTPSenderRefused)
    assert b"<redacted>" in error.smtp_error


# -- after the final dot: never sent twice ---------------------------------------------


AFTER_DOT: dict[str, tuple[Callable[[Peer], None], Limits, type[BaseException]]] = {
    # Hang up at once, without a word (nor TLS's close_notify).
    "closed": (lambda peer: peer.sock.close(), SMALL, smtplib.SMTPServerDisconnected),
    "endless 250-": (lambda peer: peer.flood(b"250-x\r\n"), SMALL, LimitExceeded),
    "endless line": (
        lambda peer: peer.flood(b"250 " + b"x" * 1000),
        SMALL,
        LimitExceeded,
    ),
    "trickle": (lambda peer: peer.trickle(b"250-slow\r\n"), SLOW, Timeout),
    "silence": (lambda peer: peer.hang(), SLOW, Timeout),
    "999": (lambda peer: peer.send(b"999 x"), SMALL, ProtocolError),
    "abc": (lambda peer: peer.send(b"abc"), SMALL, ProtocolError),
    "2500": (lambda peer: peer.send(b"2500 queued"), SMALL, ProtocolError),
    "mixed codes": (
        lambda peer: peer.send(b"250-2.0.0 OK\r\n554 5.7.1 no"),
        SMALL,
        ProtocolError,
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(AFTER_DOT))
def test_after_the_final_dot_the_outcome_is_unknown(
    pki: PKI, mode: str, case: str
) -> None:
    then, limits, cause = AFTER_DOT[case]

    def script(peer: Peer) -> None:
        until_dot(peer, mode)
        then(peer)

    outcome, received, connections = run(script, pki, mode, send, limits=limits)
    error = raised(outcome, DeliveryUnknown)
    assert isinstance(error, DeliveryUnknown) and error.outcome_unknown
    assert isinstance(error.__cause__, cause), repr(error.__cause__)
    # Sent once, on one connection: never again.
    assert len([line for line in received if line.upper().startswith(b"MAIL")]) == 1
    assert connections == 1
    if case not in ("trickle", "silence"):
        assert outcome.peak_bytes < SMALL_PEAK
    assert outcome.seconds < 5


@pytest.mark.parametrize("mode", MODES)
def test_an_error_verdict_survives_a_garbled_reset(pki: PKI, mode: str) -> None:
    def script(peer: Peer) -> None:
        until_dot(peer, mode)
        peer.send(b"554 5.7.1 rejected")
        expect(peer, b"RSET")
        peer.send(b"999 garbage")

    outcome, _, connections = run(script, pki, mode, send)
    error = raised(outcome, smtplib.SMTPDataError)
    assert isinstance(error, smtplib.SMTPDataError)
    assert error.smtp_code == 554
    assert connections == 1


# -- commands after login --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"999 x", ProtocolError),
        (b"250-ok\r\n421 bye", ProtocolError),
        (b"250-" + b"x" * 100_000, LimitExceeded),
    ],
    ids=["999", "mixed codes", "long"],
)
def test_a_broken_reply_to_mail_is_not_sent(
    pki: PKI, mode: str, reply: bytes, expected: type[BaseException]
) -> None:
    def script(peer: Peer) -> None:
        login(peer, mode)
        expect(peer, b"MAIL")
        peer.send(reply)

    outcome, received, _ = run(script, pki, mode, send)
    raised(outcome, expected)
    assert not [line for line in received if line.upper().startswith(b"DATA")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "answer",
    [b"999 bye", b"221-bye\r\n250 no", b"221-x\r\n" * 2000],
    ids=["999", "mixed codes", "too many lines"],
)
def test_a_broken_answer_to_quit_just_closes(
    pki: PKI, mode: str, answer: bytes
) -> None:
    def script(peer: Peer) -> None:
        login(peer, mode)
        expect(peer, b"QUIT")
        peer.send(answer)

    def quit(smtp: SMTP) -> object:
        with smtp:
            pass
        return smtp.sock

    outcome, received, _ = run(script, pki, mode, quit)
    assert outcome.error is None, outcome.error
    assert outcome.result is None  # closed
    assert received[-1] == b"quit"


@pytest.mark.parametrize("mode", MODES)
def test_an_endless_goodbye_before_a_send_is_read_within_limits(
    pki: PKI, mode: str
) -> None:
    ready = threading.Event()

    def script(peer: Peer) -> None:
        if peer.index == 0:
            login(peer, mode)
            # Something on the wire before the client looks, then more.
            peer.send(b"421-4.7.0 closing\r\n" * 100, crlf=False)
            ready.set()
            peer.flood(b"421-4.7.0 closing\r\n")
        else:
            until_dot(peer, mode)
            peer.send(b"250 2.0.0 OK")

    def wait_then_send(smtp: SMTP) -> object:
        assert ready.wait(5)
        return send(smtp)

    outcome, received, connections = run(script, pki, mode, wait_then_send)
    assert outcome.error is None, outcome.error
    assert outcome.result == {}
    assert connections == 2
    assert outcome.peak_bytes < SMALL_PEAK
    assert len([line for line in received if line.upper().startswith(b"MAIL")]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_250_that_echoes_the_auth_line_is_returned_without_it(
    pki: PKI, mode: str
) -> None:
    def script(peer: Peer) -> None:
        auth = login(peer, mode)
        expect(peer, b"NOOP")
        peer.send(b"250-2.0.0 OK, you said\r\n250 " + auth)

    outcome, _, _ = run(script, pki, mode, lambda smtp: smtp.noop())
    assert outcome.error is None, outcome.error
    assert outcome.result[0] == 250
    assert b"AUTH XOAUTH2 <redacted>" in outcome.result[1]
    assert_no_secret(outcome)  # the returned reply included
