"""gmail_xoauth2.aio.SMTP against the fake Gmail and scripted hostile servers.

The scenarios of test_smtp.py and test_hostile_smtp.py, driven through
aiosmtplib: login (both mechanisms, 465 and 587), the error challenge, one
refresh, sessions ended and tokens expired, no message sent twice, STARTTLS
required, bounded replies, no secret anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib
import pytest
from _hostile import TOKEN, USER, Peer, assert_no_secret, attack, secrets_for, serving
from test_smtp import (
    ALICE,
    BOB,
    CHALLENGE,
    MESSAGE,
    MintingProvider,
    client_lines,
    commands,
)

from gmail_xoauth2 import (
    MAIL_SCOPE,
    AuthenticationFailed,
    ConfigurationError,
    ConnectionLost,
    DeliveryUnknown,
    InsecureConnection,
    LimitExceeded,
    Limits,
    ProtocolError,
    StaticTokenProvider,
    Timeout,
    aio,
    xoauth2_string,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.testing._pki import PKI, make_pki
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

T = TypeVar("T")
SMALL = Limits(line_bytes=64 * 1024, response_lines=1_000, response_seconds=5)
SLOW = Limits(line_bytes=64 * 1024, response_lines=1_000, response_seconds=0.3)
EHLO = b"EHLO client.test"  # aiosmtplib's capitals (smtplib writes "ehlo")
FEATURES = b"250-hostile.test\r\n250-8BITMIME\r\n250 AUTH XOAUTH2 OAUTHBEARER"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        yield fake


def client(
    gmail: FakeGmail,
    tokens: object = None,
    *,
    submission: bool = False,
    sleeps: list[float] | None = None,
    **kwargs: Any,
) -> aio.SMTP:
    provider = tokens if tokens is not None else MintingProvider(gmail, ALICE)
    backoff = Backoff(attempts=2, sleep=(sleeps if sleeps is not None else []).append)
    return aio.SMTP(
        ALICE,
        provider,  # type: ignore[arg-type]
        gmail.host,
        gmail.submission_port if submission else gmail.smtp_port,
        starttls=True if submission else None,
        ssl_context=gmail.ssl_context(),
        clock=gmail.clock,
        backoff=backoff,
        local_hostname="client.test",
        **kwargs,
    )


async def send(smtp: aio.SMTP) -> tuple[dict[str, Any], str]:
    return await smtp.sendmail(ALICE, [BOB], MESSAGE)


# -- login ----------------------------------------------------------------------


def test_is_an_aiosmtplib_smtp_and_creating_one_does_no_io(gmail: FakeGmail) -> None:
    smtp = client(gmail)
    assert isinstance(smtp, aiosmtplib.SMTP)
    assert not smtp.is_connected
    assert gmail.connection_count("smtp") == 0
    with pytest.raises(ConfigurationError, match="mechanism"):
        aio.SMTP(ALICE, lambda: "ya29.x", mechanism="PLAIN")
    with pytest.raises(ConfigurationError, match=r"gmail_xoauth2\.Limits"):
        aio.SMTP(ALICE, lambda: "ya29.x", limits={"line_bytes": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("submission", [False, True], ids=["465", "587"])
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_send_on_465_and_587_with_both_mechanisms(
    gmail: FakeGmail, mechanism: str, submission: bool
) -> None:
    provider = MintingProvider(gmail, ALICE)

    async def main() -> None:
        async with client(
            gmail, provider, submission=submission, mechanism=mechanism
        ) as smtp:
            errors, verdict = await send(smtp)
            assert errors == {} and verdict.startswith("2.0.0 OK")
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = ALICE, BOB, "obj"
            message.set_content("hello")
            errors, _ = await smtp.send_message(message)
            assert errors == {}

    run(main())
    lines = client_lines(gmail, 1)
    start = [EHLO, b"STARTTLS", EHLO] if submission else [EHLO]
    assert lines[: len(start)] == start
    assert lines[len(start)].startswith(f"AUTH {mechanism} ".encode())
    assert lines[-1].upper() == b"QUIT"
    assert len(gmail.messages(BOB)) == 2
    assert provider.calls == [False]


@pytest.mark.parametrize(
    ("mechanism", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")]
)
def test_bad_token_challenge_is_answered_then_refreshed_once(
    gmail: FakeGmail, mechanism: str, answer: bytes
) -> None:
    smtp = client(gmail, StaticTokenProvider("ya29.bogus"), mechanism=mechanism)
    with pytest.raises(AuthenticationFailed) as info:
        run(smtp.connect())
    error = info.value
    assert (error.protocol, error.mechanism, error.status) == ("smtp", mechanism, "400")
    assert error.scope == MAIL_SCOPE
    assert error.server_text.startswith("535 5.7.8 Username and Password not accepted")
    # The sync class's error, and aiosmtplib's too (code ported from it catches it).
    assert isinstance(error, smtplib.SMTPAuthenticationError)
    assert isinstance(error, aiosmtplib.SMTPAuthenticationError)
    assert (error.code, error.smtp_code) == (535, 535)  # type: ignore[attr-defined]
    assert error.message == str(error)  # type: ignore[attr-defined]
    wire = [(line.direction, line.data) for line in gmail.transcript("smtp", 1)]
    challenges = [i for i, x in enumerate(wire) if x == ("S", b"334 " + CHALLENGE)]
    assert len(challenges) == 2  # the first try and the one retry
    for index in challenges:
        assert wire[index + 1] == ("C", answer)
        assert wire[index + 2][1].startswith(b"535-5.7.8")


def test_rejected_token_is_refreshed_once_and_recovers(gmail: FakeGmail) -> None:
    stale = gmail.mint_token(ALICE)
    gmail.google.revoke(stale)
    provider = MintingProvider(gmail, ALICE, first=stale)

    async def main() -> None:
        async with client(gmail, provider) as smtp:
            await send(smtp)

    run(main())
    assert provider.calls == [False, True]
    assert commands(gmail, b"AUTH") == [
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, stale).encode(),
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, provider.issued[1]).encode(),
    ]
    assert len(gmail.messages(BOB)) == 1


def test_a_refused_starttls_sends_no_token(gmail: FakeGmail) -> None:
    gmail.fail_next("smtp", "STARTTLS", "reply", line="454 4.7.0 TLS not available")
    provider = MintingProvider(gmail, ALICE)
    with pytest.raises(InsecureConnection, match="refused STARTTLS") as info:
        run(client(gmail, provider, submission=True).connect())
    assert "454 4.7.0 TLS not available" in str(info.value)
    assert client_lines(gmail, 1) == [EHLO, b"STARTTLS"]
    assert provider.calls == []


# -- sessions end, tokens expire ------------------------------------------------------


def test_a_send_after_gmail_ends_the_session(gmail: FakeGmail) -> None:
    async def main() -> None:
        async with client(gmail, submission=True) as smtp:
            assert gmail.end_sessions(ALICE, "smtp") == 1
            await send(smtp)
            assert client_lines(gmail, 2)[:3] == [EHLO, b"STARTTLS", EHLO]

    run(main())
    assert len(gmail.messages(BOB)) == 1


def test_a_send_after_the_token_expired(gmail: FakeGmail, clock: ManualClock) -> None:
    provider = MintingProvider(gmail, ALICE, ttl=600)

    async def main() -> None:
        async with client(gmail, provider) as smtp:
            await send(smtp)
            clock.advance(timedelta(seconds=601))  # the fake ends the session
            await asyncio.sleep(0)
            await send(smtp)

    run(main())
    assert gmail.connection_count("smtp") == 2
    assert len(gmail.messages(BOB)) == 2  # one copy each
    assert len(commands(gmail, b"MAIL")) == 2
    assert len(set(provider.issued)) == 2


def test_proactive_reconnect_before_the_token_expires(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    provider = MintingProvider(gmail, ALICE, ttl=240)

    async def main() -> None:
        async with client(gmail, provider) as smtp:
            clock.advance(timedelta(seconds=200))  # 40 s before expiry: due
            await send(smtp)

    run(main())
    assert client_lines(gmail, 1)[-1].upper() == b"QUIT"
    assert len(commands(gmail, b"MAIL")) == 1  # sent once, on the new connection
    assert client_lines(gmail, 2)[:2] == [
        EHLO,
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, provider.issued[-1]).encode(),
    ]
    assert len(gmail.messages(BOB)) == 1


def test_no_reconnect_when_disabled(gmail: FakeGmail) -> None:
    async def main() -> None:
        async with client(gmail, reconnect=False) as smtp:
            gmail.end_sessions(ALICE, "smtp")
            with pytest.raises(ConnectionLost, match="reconnect=False"):
                await send(smtp)

    run(main())
    assert gmail.connection_count("smtp") == 1
    assert gmail.messages(BOB) == []


def test_unavailable_server_backs_off_then_gives_up(gmail: FakeGmail) -> None:
    sleeps: list[float] = []

    async def main() -> None:
        async with client(gmail, sleeps=sleeps) as smtp:
            gmail.end_sessions(ALICE, "smtp")
            gmail.fail_next("smtp", "GREETING", "drop_before", count=3)
            with pytest.raises(ConnectionLost, match="after 3 attempts"):
                await send(smtp)
            assert len(sleeps) == 2
            await send(smtp)

    run(main())
    assert len(gmail.messages(BOB)) == 1


@pytest.mark.parametrize("verb", ["noop", "rset"])
def test_noop_and_rset_after_gmail_ends_the_session(
    gmail: FakeGmail, verb: str
) -> None:
    async def main() -> None:
        async with client(gmail) as smtp:
            gmail.end_sessions(ALICE, "smtp")
            assert (await getattr(smtp, verb)()).code == 250
            await send(smtp)

    run(main())
    assert len(gmail.messages(BOB)) == 1


# -- never sent twice -----------------------------------------------------------------


def test_drop_after_the_final_dot_is_delivery_unknown(gmail: FakeGmail) -> None:
    async def main() -> None:
        async with client(gmail) as smtp:
            gmail.fail_next("smtp", "DATA", "drop_after")
            with pytest.raises(DeliveryUnknown) as info:
                await send(smtp)
            assert info.value.outcome_unknown
            assert isinstance(info.value, aiosmtplib.SMTPServerDisconnected)
            assert isinstance(info.value, smtplib.SMTPServerDisconnected)
            assert len(commands(gmail, b"MAIL")) == 1
            await send(smtp)  # the connection is replaced for the next send

    run(main())
    assert len(gmail.messages(BOB)) == 2
    assert len(commands(gmail, b"MAIL")) == 2


@pytest.mark.parametrize(
    ("verb", "action"),
    [
        ("MAIL", "drop_before"),
        ("RCPT", "drop_after"),
        ("DATA", "drop_before"),
    ],
)
def test_a_drop_before_the_final_dot_is_retried_once(
    gmail: FakeGmail, verb: str, action: str
) -> None:
    async def main() -> None:
        async with client(gmail) as smtp:
            gmail.fail_next("smtp", verb, action)  # type: ignore[arg-type]
            await send(smtp)

    run(main())
    assert gmail.connection_count("smtp") == 2
    assert len(gmail.messages(BOB)) == 1


def test_dropped_twice_before_the_dot_is_not_sent(gmail: FakeGmail) -> None:
    async def main() -> None:
        async with client(gmail) as smtp:
            gmail.fail_next("smtp", "RCPT", "drop_before", count=2)
            with pytest.raises(ConnectionLost, match="not sent") as info:
                await send(smtp)
            assert not info.value.outcome_unknown

    run(main())
    assert gmail.messages(BOB) == []


def test_a_421_reply_is_retried_and_a_refusal_is_aiosmtplibs(gmail: FakeGmail) -> None:
    async def main() -> None:
        async with client(gmail) as smtp:
            gmail.fail_next(
                "smtp", "MAIL", "reply", line="421 4.7.0 closing connection."
            )
            await send(smtp)
            gmail.fail_next("smtp", "RCPT", "reply", line="550 5.1.1 No such user")
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await send(smtp)
            await send(smtp)

    run(main())
    assert gmail.connection_count("smtp") == 2
    assert len(gmail.messages(BOB)) == 2


# -- many tasks, one refresh -----------------------------------------------------------


def test_many_tasks_with_an_expired_token_share_one_refresh(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    provider = gmail.token_provider(ALICE)
    tasks = 20

    async def main() -> None:
        shared = client(gmail, provider)
        own = [client(gmail, provider) for _ in range(4)]
        for smtp in (shared, *own):
            await smtp.connect()
        clock.advance(timedelta(hours=2))  # every token expired, every session too
        await asyncio.gather(
            *(send(shared) for _ in range(tasks)), *(send(smtp) for smtp in own)
        )
        for smtp in (shared, *own):
            await smtp.quit()

    before = gmail.google.request_count(grant_type="refresh_token")
    run(main())
    assert gmail.google.request_count(grant_type="refresh_token") == before + 1
    assert len(gmail.messages(BOB)) == tasks + 4


# -- hostile servers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(Path(tmp_path_factory.mktemp("pki")), hosts=("127.0.0.1",))


def expect(peer: Peer, verb: bytes) -> bytes:
    line = peer.line()
    assert line.upper().startswith(verb), line
    return line


def until_dot(peer: Peer) -> None:
    peer.send(b"220 hostile.test ESMTP")
    expect(peer, b"EHLO")
    peer.send(FEATURES)
    expect(peer, b"AUTH")
    peer.send(b"235 2.7.0 Accepted")
    for verb, reply in ((b"MAIL", b"250 OK"), (b"RCPT", b"250 OK"), (b"DATA", b"354")):
        expect(peer, verb)
        peer.send(reply)
    while peer.line() != b".":
        pass


def hostile(
    script: Callable[[Peer], None],
    pki: PKI,
    then: Callable[[aio.SMTP], Awaitable[object]] | None = None,
    *,
    starttls: bool = False,
    limits: Limits = SMALL,
    **kwargs: Any,
) -> tuple[Any, list[bytes], int]:
    async def main(port: int) -> object:
        smtp = aio.SMTP(
            USER,
            lambda: TOKEN,
            "127.0.0.1",
            port,
            starttls=starttls,
            ssl_context=pki.client_context(),
            timeout=5,
            local_hostname="client.test",
            backoff=Backoff(attempts=1, sleep=lambda _: None),
            limits=limits,
            **kwargs,
        )
        try:
            await smtp.connect()
            return None if then is None else await then(smtp)
        finally:
            smtp.close()

    with serving(script, pki.server_context(), implicit=not starttls) as server:
        outcome = attack(lambda: asyncio.run(main(server.port)), seconds=15)
    assert_no_secret(outcome, secrets_for())
    return outcome, list(server.received), server.connections


AFTER_DOT: dict[str, tuple[Callable[[Peer], None], Limits]] = {
    "closed": (lambda peer: peer.sock.close(), SMALL),
    "endless 250-": (lambda peer: peer.flood(b"250-x\r\n"), SMALL),
    "trickle": (lambda peer: peer.trickle(b"250-slow\r\n"), SLOW),
    "999": (lambda peer: peer.send(b"999 x"), SMALL),
    "abc": (lambda peer: peer.send(b"abc"), SMALL),
}


@pytest.mark.parametrize("case", list(AFTER_DOT))
def test_after_the_final_dot_the_outcome_is_unknown(pki: PKI, case: str) -> None:
    then, limits = AFTER_DOT[case]

    def script(peer: Peer) -> None:
        until_dot(peer)
        then(peer)

    outcome, received, connections = hostile(
        script, pki, lambda smtp: smtp.sendmail(USER, [BOB], MESSAGE), limits=limits
    )
    assert isinstance(outcome.error, DeliveryUnknown), repr(outcome.error)
    assert len([x for x in received if x.upper().startswith(b"MAIL")]) == 1
    assert connections == 1
    assert outcome.seconds < 5


def test_starttls_missing_is_refused_before_any_token(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 mitm.example ESMTP")
        expect(peer, b"EHLO")
        peer.send(b"250-mitm.example\r\n250 AUTH XOAUTH2")  # STARTTLS stripped

    outcome, received, _ = hostile(script, pki, starttls=True)
    assert isinstance(outcome.error, InsecureConnection), repr(outcome.error)
    assert received == [b"EHLO client.test"]


@pytest.mark.parametrize(
    ("greeting", "expected"),
    [
        (b"hello there", ProtocolError),
        (b"999 x", ProtocolError),
        (b"220-" + b"x" * 100_000, LimitExceeded),
        (b"220-x\r\n" * 2_000 + b"220 x", LimitExceeded),
    ],
    ids=["garbage", "999", "long line", "many lines"],
)
def test_hostile_greetings_end_in_bounded_typed_errors(
    pki: PKI, greeting: bytes, expected: type[BaseException]
) -> None:
    outcome, received, _ = hostile(lambda peer: peer.send(greeting), pki)
    assert isinstance(outcome.error, expected), repr(outcome.error)
    assert received == []
    assert outcome.peak_bytes < 4 * 1024 * 1024


def test_a_trickling_greeting_times_out(pki: PKI) -> None:
    outcome, _, _ = hostile(
        lambda peer: peer.trickle(b"220-slow\r\n"), pki, limits=SLOW
    )
    assert isinstance(outcome.error, Timeout), repr(outcome.error)
    assert isinstance(outcome.error, aiosmtplib.SMTPTimeoutError)
    assert outcome.seconds < 3


def test_a_334_flood_during_auth(pki: PKI) -> None:
    answers: list[bytes] = []

    def script(peer: Peer) -> None:
        peer.send(b"220 hostile.test ESMTP")
        expect(peer, b"EHLO")
        peer.send(FEATURES)
        expect(peer, b"AUTH")
        while True:
            peer.send(b"334 eyJzdGF0dXMiOiI0MDAifQ==")
            answers.append(peer.line())

    outcome, _, _ = hostile(script, pki)
    assert isinstance(outcome.error, ProtocolError), repr(outcome.error)
    assert answers == [b""]


def test_a_refusal_that_echoes_the_auth_line_shows_no_secret(pki: PKI) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"220 hostile.test ESMTP")
        expect(peer, b"EHLO")
        peer.send(FEATURES)
        while True:  # the first token, then the refreshed one
            line = expect(peer, b"AUTH")
            peer.send(b"535 5.7.8 you sent " + line + b" " + TOKEN.encode())

    outcome, _, _ = hostile(script, pki)
    assert isinstance(outcome.error, AuthenticationFailed), repr(outcome.error)
    assert "<redacted>" in str(outcome.error)


def test_no_secret_in_logs_across_a_refresh(
    gmail: FakeGmail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stale = gmail.mint_token(ALICE)
    provider = MintingProvider(gmail, ALICE, first=stale)

    async def main() -> None:
        async with client(gmail, provider, submission=True) as smtp:
            gmail.google.revoke(stale)
            gmail.end_sessions(ALICE, "smtp")
            await send(smtp)

    run(main())
    assert len(set(provider.issued)) == 2
    for token in provider.issued:
        assert token not in caplog.text
        assert xoauth2_string(ALICE, token) not in caplog.text
