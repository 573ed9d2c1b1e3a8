"""Property-based fuzzing: whatever a server sends, a bounded, typed, secret-free end.

Two parts. :func:`gmail_xoauth2.decode_error_challenge` is fed every shape of
input (arbitrary bytes and text, base64 of arbitrary or deeply nested JSON, of
non-UTF-8, huge inputs, stray whitespace and padding). Then the whole clients
(:class:`gmail_xoauth2.IMAP4`, ``POP3``, ``SMTP``) meet a loopback TLS server
that plays a generated conversation (:mod:`_fuzz_server`): protocol-shaped
pieces (tags, ``* ``, ``+ ``, literals of right and wrong sizes, status words,
response codes, echoes of the client's own lines, endless floods) mixed with
arbitrary bytes, and then hangs up. Each run must end within the harness bound
and a memory bound, raise only a documented exception (or succeed), and show
no secret anywhere.

Hypothesis runs derandomized and without an example database: CI runs the same
examples every time and keeps none (Hypothesis still caches Unicode tables in
``.hypothesis/``, which it git-ignores itself).
"""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import smtplib
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _fuzz_server import Conversation, Flood, Hole, Part, Player, Reply
from _hostile import (
    TOKEN,
    USER,
    Outcome,
    assert_no_secret,
    attack,
    secrets_for,
    serving,
)
from hypothesis import (
    HealthCheck,
    currently_in_test_context,
    event,
    example,
    given,
    settings,
)
from hypothesis import strategies as st

import gmail_xoauth2
from gmail_xoauth2 import ChallengeDecodeError, decode_error_challenge, sasl
from gmail_xoauth2.testing._pki import make_pki

# --- settings: the numbers, and why ------------------------------------------------
#
# The codec is pure: an example takes microseconds (a deeply nested document
# about a millisecond), and Hypothesis's own generation dominates. 300 examples
# a property (150 for arbitrary JSON, whose generation is the slow part) cost
# about 3.5 s for the seven codec properties.
#
# A wire example costs a TLS handshake or two, a few loopback round trips, a
# server thread and tracemalloc (the harness measures memory): 10 to 40 ms.
# About one run in ten also waits IDLE for a client stuck mid-reply (see
# _fuzz_server). 150 examples a protocol take 4 to 5 s a test on 2 idle cores;
# the file runs in about 20 s, about 30 s beside another test job, and each test
# stays far below the 60 s pytest-timeout backstop.
CODEC = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
WIRE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# How long the scripted server waits for the client's next command before it
# concludes that the client is waiting for more (the rest of a line, reply or
# literal). On an idle loopback a client answers within a few milliseconds, but
# a loaded runner can hold it for tens (at 50 ms, runs beside another test job
# lost every successful login to that misjudgement). Clients fall silent in
# about one run in ten, so each 10 ms here costs about 0.15 s a protocol. A
# wrong guess only changes when the rest is sent, never what the property
# demands.
IDLE = 0.15

# Small bounds, so that pieces Hypothesis can generate reach every one of them.
LIMITS = gmail_xoauth2.Limits(
    line_bytes=4096,
    literal_bytes=65536,
    response_bytes=262144,
    response_lines=1000,
    response_seconds=5,
)
# What the client may hold at once is bounded by the Limits (a reply of
# 256 KiB); about 280 KiB is the most a run was seen to allocate. A client that
# kept what it was sent (a 300 KB token, a 4 MiB flood) would pass 2 MiB.
PEAK_BYTES = 8 * LIMITS.response_bytes


# --- decode_error_challenge ---------------------------------------------------


def _check_decoded(data: bytes | str) -> sasl.ErrorChallenge | None:
    """Decode ``data``: an ErrorChallenge with a str status, or ChallengeDecodeError."""
    try:
        decoded = decode_error_challenge(data)
    except ChallengeDecodeError:
        return None
    assert isinstance(decoded, sasl.ErrorChallenge)
    assert isinstance(decoded.status, str)
    assert decoded.scope is None or isinstance(decoded.scope, str)
    assert decoded.schemes is None or isinstance(decoded.schemes, str)
    return decoded


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
status_values = st.one_of(
    st.text(), st.integers(), st.booleans(), st.none(), st.floats(), json_values
)
challenge_objects = st.one_of(
    st.fixed_dictionaries(
        {"status": status_values},
        optional={
            "schemes": json_values,
            "scope": json_values,
            "extra": json_values,
        },
    ),
    json_values,
)


def _nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"status":' * depth + '"400"' + "}" * depth
    # A status beside a deep value: the depth, not the status, must decide.
    return '{"status":"400","scope":' + "[" * depth + "]" * depth + "}"


def _mangle(encoded: bytes, how: str, where: int) -> bytes:
    """Damage a base64 string the ways a broken server might."""
    cut = where % (len(encoded) + 1)
    return {
        "none": encoded,
        "crlf": encoded + b"\r\n",
        "spaces": b"  " + encoded + b" \t",
        "inner-space": encoded[:cut] + b" " + encoded[cut:],
        "inner-newline": encoded[:cut] + b"\r\n" + encoded[cut:],
        "no-padding": encoded.rstrip(b"="),
        "extra-padding": encoded + b"==",
        "urlsafe": encoded.replace(b"+", b"-").replace(b"/", b"_"),
        "truncated": encoded[:cut],
        "nul": encoded[:cut] + b"\x00" + encoded[cut:],
    }[how]


manglings = st.sampled_from(
    [
        "none",
        "crlf",
        "spaces",
        "inner-space",
        "inner-newline",
        "no-padding",
        "extra-padding",
        "urlsafe",
        "truncated",
        "nul",
    ]
)


@CODEC
@given(st.binary(max_size=300))
def test_decode_error_challenge_any_bytes(data: bytes) -> None:
    _check_decoded(data)


@CODEC
@given(st.text(max_size=300))
def test_decode_error_challenge_any_text(data: str) -> None:
    _check_decoded(data)


@settings(CODEC, max_examples=150)
@given(challenge_objects, manglings, st.integers(0, 1 << 16), st.booleans())
@example({"status": 400}, "none", 0, False).via("Gmail-like, integer status")
@example({"status": True}, "none", 0, False).via("a bool is not a status")
@example({"status": 10**4299}, "none", 0, False).via("at int->str's digit limit")
@example({"status": float("nan")}, "none", 0, False).via("NaN")
@example({"status": "\ud800"}, "crlf", 0, False).via("a lone surrogate")
def test_decode_error_challenge_any_json(
    obj: Any, how: str, where: int, as_text: bool
) -> None:
    encoded = _mangle(base64.b64encode(json.dumps(obj).encode()), how, where)
    decoded = _check_decoded(encoded.decode("latin-1") if as_text else encoded)
    if (
        decoded is None
        and how in ("none", "crlf", "spaces")
        and isinstance(obj, dict)
        and isinstance(obj.get("status"), str)
        and len(encoded) <= sasl.MAX_CHALLENGE
    ):
        pytest.fail(f"a well-formed challenge was refused: {obj!r}")


@CODEC
@given(
    st.integers(1, 12_000),
    st.sampled_from(["array", "object", "deep-scope"]),
    manglings,
)
@example(1_000, "array", "none").via("just past the default recursion limit")
@example(5_000, "object", "none").via("deep, still under MAX_CHALLENGE")
def test_decode_error_challenge_deep_json(depth: int, kind: str, how: str) -> None:
    encoded = _mangle(base64.b64encode(_nested(depth, kind).encode()), how, depth)
    _check_decoded(encoded)


@CODEC
@given(st.binary(max_size=2000), manglings, st.integers(0, 1 << 16))
def test_decode_error_challenge_non_utf8(raw: bytes, how: str, where: int) -> None:
    _check_decoded(_mangle(base64.b64encode(raw), how, where))


@CODEC
@given(
    st.integers(sasl.MAX_CHALLENGE - 4, 4 * sasl.MAX_CHALLENGE),
    st.sampled_from([b"A", b"=", b" ", b"\xff", b"e30="]),
)
@example(sasl.MAX_CHALLENGE + 1, b"A").via("one byte over")
@example(10_000_000, b"A").via("10 MB")
def test_decode_error_challenge_huge(size: int, filler: bytes) -> None:
    data = (filler * size)[:size]
    if len(data) > sasl.MAX_CHALLENGE:
        with pytest.raises(ChallengeDecodeError):
            decode_error_challenge(data)
    else:
        _check_decoded(data)


@CODEC
@given(
    st.text(),
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text()),
    st.sampled_from([b"", b"\r\n", b"\n", b" "]),
)
@example("400", "Bearer", sasl.MAIL_SCOPE, b"\r\n").via("Gmail's own")
@example("invalid_token", None, sasl.IMAP_ADMIN_SCOPE, b"").via("OAUTHBEARER")
def test_error_challenge_round_trip(
    status: str, schemes: str | None, scope: str | None, suffix: bytes
) -> None:
    encoded = sasl.encode_error_challenge(status, schemes=schemes, scope=scope)
    data = encoded + suffix
    if len(data) > sasl.MAX_CHALLENGE:
        with pytest.raises(ChallengeDecodeError):
            decode_error_challenge(data)
        return
    decoded = decode_error_challenge(data)
    assert (decoded.status, decoded.schemes, decoded.scope) == (status, schemes, scope)
    # The str form (as a line read with a text API) decodes the same.
    assert decode_error_challenge(data.decode("ascii")) == decoded


# --- what a hostile server says ---------------------------------------------------

_WORDS: dict[str, list[bytes]] = {
    "imap": [
        b"* ",
        b"+ ",
        b"OK ",
        b"NO ",
        b"BAD ",
        b"* BYE ",
        b"* OK ",
        b"PREAUTH ",
        b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2",
        b"[CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ",
        b"[ALERT] ",
        b"[AUTHENTICATIONFAILED] ",
        b"[UNAVAILABLE] ",
        b"[READ-ONLY] ",
        b"* 3 EXISTS",
        b"* 1 FETCH (BODY[] ",
        b"(",
        b")",
        b"NIL",
        b'"',
        b"[",
        b"]",
        b"Too many simultaneous connections. (Failure)",
    ],
    "pop": [
        b"+OK ",
        b"-ERR ",
        b"+",
        b"+ ",
        b".",
        b"..",
        b".\r\n",
        b"[AUTH] ",
        b"[SYS/TEMP] ",
        b"[SYS/PERM] ",
        b"[IN-USE] ",
        b"[LOGIN-DELAY] ",
        b"SASL XOAUTH2",
        b"STLS",
        b"2 320",
        b"Session expired",
        b"Too many simultaneous connections",
    ],
    "smtp": [
        b"220 ",
        b"250 ",
        b"250-",
        b"235 ",
        b"334 ",
        b"354 ",
        b"421 ",
        b"451 ",
        b"454 ",
        b"535 ",
        b"535-",
        b"550 ",
        b"4.4.2 Timeout - closing connection.",
        b"4.7.0 Try again later, closing connection.",
        b"5.7.8 Username and Password not accepted.",
        b"AUTH XOAUTH2 OAUTHBEARER",
        b"STARTTLS",
        b"Too many simultaneous connections",
        b"999 ",
        b"25",
        b"2500000000000000000000 ",
    ],
}
_ALL_WORDS = sorted({w for words in _WORDS.values() for w in words})

line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
numbers = st.one_of(
    st.integers(-3, 10_000).map(lambda n: str(n).encode()),
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    st.just(b"9" * 5000),
)
literals = st.one_of(
    # Right size, and the bytes that follow.
    st.binary(max_size=64).map(lambda b: b"{%d}\r\n%s" % (len(b), b)),
    # Any size, with whatever follows: short, long, negative, absurd.
    st.tuples(
        st.one_of(st.integers(-2, 100_000), st.integers(0, 2**70)),
        st.sampled_from([b"{%d}\r\n", b"{%d+}\r\n", b"~{%d}\r\n", b"{%d}", b"{%d}\n"]),
        st.binary(max_size=32),
    ).map(lambda t: t[1] % t[0] + t[2]),
)
challenges = st.one_of(
    st.just(sasl.encode_error_challenge()),
    st.just(sasl.encode_error_challenge("invalid_token", scope=sasl.IMAP_ADMIN_SCOPE)),
    st.binary(max_size=64).map(base64.b64encode),
    st.integers(1, 20_000).map(
        lambda n: base64.b64encode(b'{"status":' * n + b'"400"' + b"}" * n)
    ),
    st.sampled_from([b"=", b"e30=", b"bnVsbA==", b"!!!"]),
)
# Long tokens: past Limits.line_bytes (4096), response_bytes (256 KiB) and the
# stdlib's own line limits (poplib 2048, smtplib 8192, imaplib 1,000,000).
long_tokens = st.tuples(
    st.sampled_from([b"A", b"* ", b"{", b"\x80", b"250-", b"\r\n", b".\r\n"]),
    st.integers(1_000, 300_000),
).map(lambda t: (t[0] * t[1])[: t[1]])
holes = st.sampled_from([Hole.ANSWER, Hole.TAG, Hole.ECHO, Hole.SECRET])
# Endless replies: the same bytes until the client hangs up.
floods = st.builds(
    Flood,
    st.sampled_from([b"* 1 EXISTS\r\n", b"A", b"+OK\r\n", b"250-x\r\n", b"\r\n"])
    | st.binary(min_size=1, max_size=16),
)


def pieces(protocol: str) -> st.SearchStrategy[Part]:
    """One part of a reply: protocol-shaped, or anything at all."""
    return st.one_of(
        st.sampled_from(_WORDS[protocol]),
        holes,
        st.sampled_from(_ALL_WORDS),
        line_ends,
        numbers,
        literals,
        challenges,
        st.binary(max_size=40),
        st.binary(min_size=1, max_size=8).map(lambda b: bytes(c | 0x80 for c in b)),
        long_tokens,
        floods,
    )


def lines(protocol: str) -> st.SearchStrategy[list[Part]]:
    """A line: a few pieces, then (usually) CRLF."""
    return st.tuples(st.lists(pieces(protocol), max_size=6), line_ends).map(
        lambda t: [*t[0], t[1]]
    )


RIGHT: Reply = (Hole.ANSWER,)


def faults(protocol: str) -> st.SearchStrategy[Reply]:
    """A wrong reply to one command: wrong, right then wrong, or wrong then right."""
    fuzz = st.lists(lines(protocol), min_size=1, max_size=4).map(
        lambda ls: tuple(p for line in ls for p in line)
    )
    return st.one_of(fuzz, fuzz.map(lambda f: RIGHT + f), fuzz.map(lambda f: f + RIGHT))


# The replies a run needs to reach its command and hear the answer: IMAP
# AUTHENTICATE, NOOP (and CAPABILITY first when the greeting has none); POP
# AUTH, STAT; SMTP EHLO, AUTH, NOOP, or EHLO, AUTH, MAIL, RCPT, DATA, message.
STEPS = {"imap": 2, "pop": 2, "smtp": 6}


def _focused(protocol: str, length: int, wrong: dict[int, Reply]) -> Conversation:
    said = [wrong.get(i, RIGHT) for i in range(length + 1)]
    return Conversation(protocol, said[0], tuple(said[1:]))


def conversations(protocol: str) -> st.SearchStrategy[Conversation]:
    """A right conversation with a fault or two (at the greeting, during login
    or in the command's reply), or one where anything goes anywhere."""
    steps = STEPS[protocol]
    fault = faults(protocol)
    focused = st.builds(
        _focused,
        st.just(protocol),
        # Replies after the greeting: enough for the whole run, or fewer (the
        # server hangs up midway).
        st.one_of(st.just(steps + 1), st.integers(0, steps + 2)),
        st.dictionaries(st.integers(0, steps + 1), fault, max_size=2),
    )
    reply = st.one_of(st.just(RIGHT), fault)
    free = st.builds(
        Conversation,
        st.just(protocol),
        reply,
        st.lists(reply, max_size=steps + 2).map(tuple),
    )
    return st.one_of(focused, free)


def _good(protocol: str, n: int) -> Conversation:
    return Conversation(protocol, (Hole.ANSWER,), ((Hole.ANSWER,),) * n)


def _echoing(protocol: str, n: int, verdict: bytes) -> Conversation:
    """A server that quotes the client's every line back in its refusal."""
    refusal: Reply = (Hole.TAG, b" ", verdict, b" ", Hole.ECHO, b"\r\n")
    if protocol != "imap":
        refusal = (verdict, b" ", Hole.ECHO, b" ", Hole.SECRET, b"\r\n")
    return Conversation(protocol, (Hole.ANSWER,), (refusal,) * n)


# --- the clients -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server, client) TLS contexts, made once for the module."""
    pki = make_pki(tmp_path_factory.mktemp("fuzz-pki"), hosts=("127.0.0.1",))
    yield pki.server_context(), pki.client_context()


def _documented(error: BaseException, protocol: str, logged_in: bool) -> bool:
    """Is ``error`` one the library documents for this moment of the run?"""
    if isinstance(error, gmail_xoauth2.Error):
        return True
    if not logged_in:
        return False
    # After login, and only for the command's own error reply: the stdlib's.
    if protocol == "imap":
        return type(error) is imaplib.IMAP4.error and str(error).startswith(
            "NOOP command error: BAD"
        )
    if protocol == "pop":
        line = error.args[0] if error.args else None
        return (
            type(error) is poplib.error_proto
            and isinstance(line, bytes)
            and line.startswith(b"-ERR")
        )
    return isinstance(
        error, smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused
    )


def _send(client: Any) -> Any:
    return client.sendmail(
        USER, ["bob@example.com"], b"Subject: hi\r\n\r\nHello, Bob.\r\n"
    )


# The command run after login, by protocol; the first is the default.
_ACTIONS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "imap": {"noop": lambda client: client.noop()},
    "pop": {"stat": lambda client: client.stat(), "noop": lambda client: client.noop()},
    "smtp": {"noop": lambda client: client.noop(), "sendmail": _send},
}


def _close(client: Any) -> None:
    """Hang up without a word (errors here count as the run's too)."""
    if isinstance(client, gmail_xoauth2.IMAP4):
        client.shutdown()
    else:
        client.close()


_CLASSES = {"imap": "IMAP4", "pop": "POP3", "smtp": "SMTP"}


def _run(
    conversation: Conversation,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    *,
    mechanism: str = "XOAUTH2",
    action: str | None = None,
) -> tuple[Outcome, list[str]]:
    """Play ``conversation`` to a client; check the end is bounded and typed.

    Returns the outcome and the secrets of the run, for further checks.
    """
    protocol = conversation.protocol
    server_tls, client_tls = tls
    cls = getattr(gmail_xoauth2, _CLASSES[protocol])
    actions = _ACTIONS[protocol]
    command = actions[action or next(iter(actions))]
    logged_in = False

    player = Player(conversation, idle=IDLE)
    with serving(player, server_tls) as server:

        def call() -> Any:
            nonlocal logged_in
            client = cls(
                USER,
                lambda: TOKEN,
                "127.0.0.1",
                server.port,
                ssl_context=client_tls,
                mechanism=mechanism,
                timeout=5,
                reconnect=False,
                limits=LIMITS,
            )
            logged_in = True
            try:
                return command(client)
            finally:
                _close(client)

        outcome = attack(call, seconds=20)
    error = outcome.error
    # pytest --hypothesis-show-statistics: how far the runs got, and how.
    if currently_in_test_context():
        event("logged in" if logged_in else "refused before login")
        event(f"ended with {type(error).__name__ if error else 'success'}")
        event(f"the client fell silent: {'yes' if player.silences else 'no'}")
    if error is not None:
        if not _documented(error, protocol, logged_in):
            raise AssertionError(
                f"undocumented {type(error).__module__}.{type(error).__qualname__} "
                f"({'after' if logged_in else 'before'} login): {error!r}"
            ) from error
    secrets = [
        *secrets_for(),
        sasl.oauthbearer_string(USER, TOKEN, host="127.0.0.1", port=server.port),
    ]
    # Exceptions, log records, debug output, and the value the command returned.
    assert_no_secret(outcome, secrets)
    assert outcome.peak_bytes < PEAK_BYTES, f"peak memory {outcome.peak_bytes} B"
    return outcome, secrets


mechanisms = st.sampled_from(["XOAUTH2", "OAUTHBEARER"])


@WIRE
@given(conversations("imap"), mechanisms)
@example(_good("imap", 2), "XOAUTH2").via("Gmail: greeting, AUTHENTICATE, NOOP")
@example(_good("imap", 0), "XOAUTH2").via("a greeting, then nothing")
@example(_echoing("imap", 3, b"NO"), "XOAUTH2").via("a refusal quoting the line")
@example(_echoing("imap", 3, b"BAD"), "OAUTHBEARER").via("BAD quoting the line")
def test_imap_against_a_hostile_server(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    conversation: Conversation,
    mechanism: str,
) -> None:
    _run(conversation, tls, mechanism=mechanism)


@WIRE
@given(conversations("pop"), mechanisms, st.sampled_from(["stat", "noop"]))
@example(_good("pop", 2), "XOAUTH2", "stat").via("Gmail: greeting, AUTH, STAT")
@example(_good("pop", 0), "XOAUTH2", "stat").via("a greeting, then nothing")
@example(_echoing("pop", 3, b"-ERR"), "XOAUTH2", "stat").via("-ERR quoting AUTH")
@example(_echoing("pop", 3, b"+OK"), "XOAUTH2", "noop").via("+OK quoting NOOP")
def test_pop_against_a_hostile_server(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    conversation: Conversation,
    mechanism: str,
    action: str,
) -> None:
    _run(conversation, tls, mechanism=mechanism, action=action)


@WIRE
@given(conversations("smtp"), mechanisms, st.sampled_from(["noop", "sendmail"]))
@example(_good("smtp", 3), "XOAUTH2", "noop").via("Gmail: EHLO, AUTH, NOOP")
@example(_good("smtp", 6), "XOAUTH2", "sendmail").via("a message sent")
@example(_good("smtp", 5), "XOAUTH2", "sendmail").via("a hang-up after the 354")
@example(
    Conversation("smtp", RIGHT, (*((RIGHT,) * 5), (b"",))), "XOAUTH2", "sendmail"
).via("a hang-up after the final dot")
@example(_echoing("smtp", 3, b"535"), "OAUTHBEARER", "noop").via("535 quoting AUTH")
def test_smtp_against_a_hostile_server(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    conversation: Conversation,
    mechanism: str,
    action: str,
) -> None:
    _run(conversation, tls, mechanism=mechanism, action=action)


def test_the_good_conversations_succeed(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """The fuzz server speaks each protocol right when every reply is right."""
    for protocol, n, action in (
        ("imap", 2, "noop"),
        ("pop", 2, "stat"),
        ("smtp", 3, "noop"),
        ("smtp", 6, "sendmail"),
    ):
        outcome, secrets = _run(_good(protocol, n), tls, action=action)
        assert outcome.error is None, (protocol, action, outcome.error)
        assert_no_secret(outcome, secrets)


def test_a_stuck_client_costs_one_idle_wait(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A literal announced longer than sent: the client waits, the server ends it."""
    stuck: Reply = (b"* 1 FETCH (BODY[] {100}\r\nshort",)
    conversation = Conversation("imap", (Hole.ANSWER,), ((Hole.ANSWER,), stuck, stuck))
    outcome, _ = _run(conversation, tls)
    assert isinstance(outcome.error, gmail_xoauth2.ConnectionLost)
    assert outcome.seconds < 5


@pytest.mark.parametrize(
    ("protocol", "steps", "action", "reply"),
    [
        pytest.param(
            "imap",
            2,
            "noop",
            (Hole.TAG, b" OK ", Hole.SECRET, b"\r\n"),
            id="imap",
        ),
        pytest.param("pop", 2, "noop", (b"+OK ", Hole.SECRET, b"\r\n"), id="pop"),
        pytest.param("smtp", 3, "noop", (b"250 ", Hole.SECRET, b"\r\n"), id="smtp"),
    ],
)
def test_a_sasl_string_echoed_into_a_reply_is_not_returned(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    protocol: str,
    steps: int,
    action: str,
    reply: Reply,
) -> None:
    """A successful reply that quotes the SASL string is returned without it."""
    said = (*((RIGHT,) * (steps - 1)), reply)
    outcome, secrets = _run(Conversation(protocol, RIGHT, said), tls, action=action)
    assert outcome.error is None, outcome.error
    assert_no_secret(outcome, secrets)


def test_checks_catch_what_they_look_for() -> None:
    """The oracle itself: a stdlib error before login, or a raw abort, is caught."""
    assert not _documented(imaplib.IMAP4.abort("EOF"), "imap", True)
    assert not _documented(poplib.error_proto("-ERR EOF"), "pop", True)
    assert not _documented(poplib.error_proto(b"-ERR no"), "pop", False)
    assert not _documented(smtplib.SMTPServerDisconnected("gone"), "smtp", True)
    assert not _documented(ValueError("x"), "smtp", True)
    assert _documented(smtplib.SMTPDataError(554, b"no"), "smtp", True)
    assert _documented(gmail_xoauth2.Timeout("slow"), "pop", False)
