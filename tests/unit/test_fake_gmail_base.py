"""The fake Gmail's shared parts: mail store, CA, SASL backend, line server."""

from __future__ import annotations

import json
import os
import pathlib
import smtplib
import socket
import ssl
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from gmail_xoauth2.sasl import oauthbearer_string, xoauth2_string
from gmail_xoauth2.testing._mailstore import (
    ALL_MAIL,
    INBOX,
    SENT,
    TRASH,
    MailEvent,
    MailStore,
    NoSuchMailbox,
    NoSuchUser,
)
from gmail_xoauth2.testing._pki import PKI, make_pki
from gmail_xoauth2.testing._server import (
    AuthFailure,
    Backend,
    Connection,
    Faults,
    Grant,
    LineServer,
    TranscriptLine,
)
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail
from gmail_xoauth2.testing.google import FakeGoogle

ALICE = "alice@example.com"
BOB = "bob@example.com"


# -- the mail store -------------------------------------------------------------


def test_every_user_has_gmails_folders() -> None:
    store = MailStore([ALICE])
    boxes = {box.name: box.attributes for box in store.mailboxes(ALICE)}
    assert boxes == {
        "INBOX": ("\\HasNoChildren",),
        "[Gmail]": ("\\HasChildren", "\\Noselect"),
        "[Gmail]/All Mail": ("\\All", "\\HasNoChildren"),
        "[Gmail]/Drafts": ("\\Drafts", "\\HasNoChildren"),
        "[Gmail]/Important": ("\\HasNoChildren", "\\Important"),
        "[Gmail]/Sent Mail": ("\\HasNoChildren", "\\Sent"),
        "[Gmail]/Spam": ("\\HasNoChildren", "\\Junk"),
        "[Gmail]/Starred": ("\\Flagged", "\\HasNoChildren"),
        "[Gmail]/Trash": ("\\HasNoChildren", "\\Trash"),
    }
    with pytest.raises(NoSuchMailbox):
        store.status(ALICE, "[Gmail]")
    with pytest.raises(NoSuchUser):
        store.messages("nobody@example.com")
    assert store.messages(ALICE, "inbox") == []


def test_delivery_reaches_all_mail_with_shared_ids_and_labels() -> None:
    clock = ManualClock()
    store = MailStore([ALICE], clock=clock)
    assert store.deliver(ALICE, b"Subject: a\r\n\r\n1\r\n") == 1
    assert store.deliver(ALICE, b"Subject: b\r\n\r\n2\r\n") == 2
    inbox = store.status(ALICE, INBOX)
    every = store.status(ALICE, ALL_MAIL)
    assert (inbox.uidnext, inbox.exists, inbox.unseen) == (3, 2, 2)
    assert [m.gm_msgid for m in inbox.messages] == [m.gm_msgid for m in every.messages]
    assert inbox.uidvalidity != every.uidvalidity
    assert inbox.messages[0].labels == {"\\Inbox"}
    assert inbox.messages[0].internaldate == clock()
    assert inbox.messages[0].size == len(b"Subject: a\r\n\r\n1\r\n")
    # Trash is outside All Mail.
    store.deliver(ALICE, b"Subject: c\r\n\r\n3\r\n", TRASH)
    assert store.status(ALICE, ALL_MAIL).exists == 2


def test_replies_join_the_thread() -> None:
    store = MailStore([ALICE])
    store.deliver(ALICE, b"Message-ID: <1@x>\r\nSubject: a\r\n\r\n.\r\n")
    store.deliver(ALICE, b"Message-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\n\r\n.\r\n")
    store.deliver(ALICE, b"Message-ID: <3@x>\r\n\r\n.\r\n")
    first, reply, other = store.status(ALICE, INBOX).messages
    assert reply.gm_thrid == first.gm_thrid == first.gm_msgid
    assert other.gm_thrid == other.gm_msgid != first.gm_thrid


def test_expunge_reports_sequence_numbers_as_imap_sends_them() -> None:
    store = MailStore([ALICE])
    for n in range(1, 6):
        store.deliver(ALICE, f"Subject: {n}\r\n\r\n.\r\n".encode())
    store.store_flags(ALICE, INBOX, [2, 3, 5], ["\\Deleted"], "add")
    assert store.expunge(ALICE, INBOX) == [2, 2, 3]
    assert [m.uid for m in store.status(ALICE, INBOX).messages] == [1, 4]
    # The copies in All Mail stay; the INBOX label is gone from the others.
    assert store.status(ALICE, ALL_MAIL).exists == 5
    labels = [m.labels for m in store.status(ALICE, ALL_MAIL).messages]
    assert labels == [{"\\Inbox"}, set(), set(), {"\\Inbox"}, set()]


def test_flags_copy_move_and_listeners() -> None:
    store = MailStore([ALICE])
    events: list[MailEvent] = []
    store.add_listener(events.append)
    store.deliver(ALICE, b"Subject: a\r\n\r\n.\r\n")
    store.deliver(ALICE, b"Subject: b\r\n\r\n.\r\n")
    changed = store.store_flags(ALICE, INBOX, [1], ["\\Seen", "\\Flagged"], "set")
    assert changed[0].flags == {"\\Seen", "\\Flagged"}
    store.store_flags(ALICE, INBOX, [1], ["\\Flagged"], "remove")
    assert store.status(ALICE, INBOX).messages[0].flags == {"\\Seen"}
    store.create(ALICE, "Work")
    assert store.copy(ALICE, INBOX, [1, 2], "Work") == [(1, 1), (2, 2)]
    # Copying to All Mail adds nothing: the message is there already.
    assert store.copy(ALICE, INBOX, [1], ALL_MAIL) == [(1, 1)]
    assert store.status(ALICE, "Work").messages[0].labels == {"\\Inbox", "Work"}
    pairs, expunged = store.move(ALICE, INBOX, [2], SENT)
    assert (pairs, expunged) == ([(2, 1)], [2])
    assert store.status(ALICE, SENT).messages[0].labels == {"\\Sent", "Work"}
    store.remove_listener(events.append)
    store.deliver(ALICE, b"Subject: c\r\n\r\n.\r\n")
    kinds = [(e.mailbox, e.kind, e.uids) for e in events]
    assert kinds[:5] == [
        (INBOX, "exists", (1,)),
        (ALL_MAIL, "exists", (1,)),
        (INBOX, "exists", (2,)),
        (ALL_MAIL, "exists", (2,)),
        (INBOX, "flags", (1,)),
    ]
    assert (INBOX, "expunge", (2,)) in kinds
    assert len(kinds) == 10
    with pytest.raises(ValueError, match="exists"):
        store.create(ALICE, "Work")


# -- the CA ---------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> PKI:
    return make_pki(tmp_path)


def test_key_is_private_and_only_our_ca_is_trusted(pki: PKI) -> None:
    assert stat.S_IMODE(os.stat(pki.key_file).st_mode) == 0o600
    assert b"PRIVATE KEY" not in pki.ca_file.read_bytes()
    assert b"PRIVATE KEY" not in pki.cert_file.read_bytes()
    with EchoServer(backend(), ssl_context=pki.server_context()) as server:
        for name in ("127.0.0.1", "localhost"):
            with tls_client(server.port, pki.client_context(), name) as client:
                assert client.readline() == b"* hello\r\n"
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_client(server.port, ssl.create_default_context(), "localhost")
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_client(server.port, pki.client_context(), "imap.gmail.com")


# -- the SASL backend ---------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def google(clock: ManualClock) -> FakeGoogle:
    google = FakeGoogle(clock=clock)
    google.add_user(ALICE)
    google.add_user(BOB)
    return google


def backend(
    google: FakeGoogle | None = None,
    clock: ManualClock | None = None,
    **kwargs: object,
) -> Backend:
    clock = clock or ManualClock()
    if google is None:
        google = FakeGoogle(clock=clock)
        google.add_user(ALICE)
    return Backend(google, MailStore([ALICE, BOB]), clock=clock, **kwargs)  # type: ignore[arg-type]


def test_authenticate_accepts_a_live_mail_token(
    google: FakeGoogle, clock: ManualClock
) -> None:
    shared = backend(google, clock)
    token = google.mint_access_token(ALICE, ttl=600)
    grant = shared.authenticate("xoauth2", xoauth2_string("Alice@Example.com", token))
    assert grant == Grant(ALICE, "XOAUTH2", clock() + timedelta(seconds=600))
    bearer = shared.authenticate("OAUTHBEARER", oauthbearer_string(ALICE, token))
    assert isinstance(bearer, Grant)
    assert bearer.mechanism == "OAUTHBEARER"


def test_authenticate_refuses_every_kind_of_bad_token(
    google: FakeGoogle, clock: ManualClock
) -> None:
    shared = backend(google, clock)
    expired = google.mint_access_token(ALICE, ttl=10)
    revoked = google.mint_access_token(ALICE)
    google.revoke(revoked)
    narrow = google.mint_access_token(
        ALICE, scopes=["https://www.googleapis.com/auth/gmail.modify"]
    )
    bobs = google.mint_access_token(BOB)
    clock.advance(10)
    cases = {
        "ya29.unknown": "unknown token",
        expired: "unknown token",
        revoked: "unknown token",
        narrow: "wrong scope",
        bobs: "other user",
    }
    for token, reason in cases.items():
        outcome = shared.authenticate("XOAUTH2", xoauth2_string(ALICE, token))
        assert outcome == AuthFailure(reason)
    assert shared.authenticate("XOAUTH2", "bm9wZQ==") == AuthFailure(
        "malformed", malformed=True
    )
    assert shared.authenticate("PLAIN", "AGEAYg==") == AuthFailure(
        "unsupported mechanism"
    )
    assert repr(outcome).count("ya29") == 0


def test_faults_are_counted_matched_and_validated() -> None:
    faults = Faults()
    faults.fail_next("smtp", "data", "drop_before", count=2)
    faults.fail_next("pop", "*", "reply", line="-ERR x")
    assert faults.take("smtp", "MAIL") == (None, None)
    first, _ = faults.take("smtp", "DATA")
    second, _ = faults.take("smtp", "DATA")
    assert first is second is not None
    assert faults.take("smtp", "DATA") == (None, None)
    fault, _ = faults.take("pop", "RETR")
    assert fault is not None and fault.line == b"-ERR x"
    with pytest.raises(ValueError, match="action"):
        faults.fail_next("smtp", "DATA", "explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="line"):
        faults.fail_next("smtp", "DATA", "reply")
    event = faults.hold_next("imap", "FETCH")
    faults.release_all()
    assert event.is_set()
    assert faults.hold_next("imap", "FETCH").is_set()


# -- the line server, with a tiny protocol of its own ---------------------------------


class EchoConnection(Connection):
    protocol = "echo"

    def greet(self) -> None:
        self.send_line(b"* hello")

    def is_continuation(self, line: bytes) -> bool:
        return line.startswith(b"+")

    def session_end_lines(self, reason: str, text: str | None) -> list[bytes]:
        return [(text or f"* BYE {reason}").encode()]

    def handle_line(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        name = verb.decode().upper()
        method = getattr(self, "cmd_" + name, self.cmd_ECHO)
        self.dispatch(name, lambda: method(arg))

    def cmd_ECHO(self, arg: bytes) -> None:
        self.send_line(b"OK " + arg)

    def cmd_TWO(self, arg: bytes) -> None:
        self.send_line(b"+ go on")
        self.send_line(b"OK got " + self.readline())

    def cmd_LIT(self, arg: bytes) -> None:
        self.send_line(b"OK " + self.read_exact(int(arg)).upper())

    def cmd_TLS(self, arg: bytes) -> None:
        self.send_line(b"OK go")
        self.starttls()

    def cmd_LOGIN(self, arg: bytes) -> None:
        outcome = self.sasl_exchange("XOAUTH2", arg, challenge_prefix=b"+ ")
        if isinstance(outcome, Grant) and self.backend.open_session(self, outcome):
            self.send_line(b"OK " + outcome.user.encode())
        else:
            self.send_line(b"NO")

    def cmd_BOOM(self, arg: bytes) -> None:
        raise RuntimeError("the fake itself failed")


class EchoServer(LineServer):
    protocol = "echo"
    connection_class = EchoConnection


def tls_client(port: int, context: ssl.SSLContext, name: str) -> Client:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return Client(context.wrap_socket(raw, server_hostname=name))
    except BaseException:
        raw.close()
        raise


class Client:
    """A line client over a socket, for the echo protocol."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        return self.file.readline()

    def starttls(self, context: ssl.SSLContext) -> None:
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture
def echo(pki: PKI, google: FakeGoogle, clock: ManualClock) -> Iterator[EchoServer]:
    server = EchoServer(
        backend(google, clock, session_limits={"echo": 1}),
        ssl_context=pki.server_context(),
        implicit_tls=False,
    )
    server.start()
    yield server
    server.close()


def plain(server: EchoServer) -> Client:
    client = Client(socket.create_connection(("127.0.0.1", server.port), timeout=10))
    assert client.readline() == b"* hello\r\n"
    return client


def lines(server: EchoServer) -> list[tuple[str, bytes]]:
    return [(line.direction, line.data) for line in server.backend.transcript("echo")]


def test_transcript_records_lines_and_literals_both_ways(echo: EchoServer) -> None:
    with plain(echo) as client:
        client.send(b"ECHO hi\r\nLIT 3\r\nabcTWO\r\nmore\r\n")
        assert client.readline() == b"OK hi\r\n"
        assert client.readline() == b"OK ABC\r\n"
        assert client.readline() == b"+ go on\r\n"
        assert client.readline() == b"OK got more\r\n"
    assert lines(echo) == [
        ("S", b"* hello"),
        ("C", b"ECHO hi"),
        ("S", b"OK hi"),
        ("C", b"LIT 3"),
        ("C", b"abc"),
        ("S", b"OK ABC"),
        ("C", b"TWO"),
        ("S", b"+ go on"),
        ("C", b"more"),
        ("S", b"OK got more"),
    ]
    assert echo.backend.transcript("echo", 1)[0] == TranscriptLine(
        "echo", 1, "S", b"* hello"
    )
    assert echo.backend.transcript("imap") == []


def test_fault_drop_before(echo: EchoServer) -> None:
    echo.backend.faults.fail_next("echo", "TWO", "drop_before")
    with plain(echo) as client:
        client.send(b"TWO\r\n")
        assert client.readline() == b""
    assert lines(echo)[-1] == ("C", b"TWO")


def test_fault_drop_after_runs_the_command_without_its_reply(echo: EchoServer) -> None:
    echo.backend.faults.fail_next("echo", "TWO", "drop_after")
    with plain(echo) as client:
        client.send(b"TWO\r\n")
        assert client.readline() == b"+ go on\r\n"
        client.send(b"more\r\n")
        assert client.readline() == b""
    assert lines(echo)[-2:] == [("S", b"+ go on"), ("C", b"more")]


def test_fault_reply_and_wildcard(echo: EchoServer) -> None:
    echo.backend.faults.fail_next("echo", "*", "reply", line=b"* BYE System Error")
    with plain(echo) as client:
        client.send(b"BOOM\r\nECHO x\r\n")
        assert client.readline() == b"* BYE System Error\r\n"
        assert client.readline() == b"OK x\r\n"


def test_fault_on_the_greeting(echo: EchoServer) -> None:
    echo.backend.faults.fail_next("echo", "GREETING", "drop_before")
    with Client(socket.create_connection(("127.0.0.1", echo.port))) as client:
        assert client.readline() == b""


def test_hold_next_and_close_release(echo: EchoServer) -> None:
    release = echo.backend.faults.hold_next("echo", "TWO")
    with plain(echo) as client:
        client.send(b"TWO\r\n")
        # Continuations are not held: the exchange goes on.
        assert client.readline() == b"+ go on\r\n"
        client.send(b"more\r\n")
        release.set()
        assert client.readline() == b"OK got more\r\n"


def test_starttls_discards_what_was_sent_in_the_clear(
    echo: EchoServer, pki: PKI
) -> None:
    with plain(echo) as client:
        client.send(b"TLS\r\nECHO injected\r\n")
        assert client.readline() == b"OK go\r\n"
        client.starttls(pki.client_context())
        client.send(b"ECHO safe\r\n")
        assert client.readline() == b"OK safe\r\n"
    assert ("C", b"ECHO injected") not in lines(echo)


def test_sessions_expire_on_the_clock_and_are_limited(
    echo: EchoServer, google: FakeGoogle, clock: ManualClock
) -> None:
    token = google.mint_access_token(ALICE, ttl=100)
    with plain(echo) as first, plain(echo) as second, plain(echo) as third:
        first.send(b"LOGIN " + xoauth2_string(ALICE, token).encode() + b"\r\n")
        assert first.readline() == b"OK alice@example.com\r\n"
        # One session per user for this protocol: the second is refused.
        second.send(b"LOGIN " + xoauth2_string(ALICE, token).encode() + b"\r\n")
        assert second.readline() == b"NO\r\n"
        third.send(b"LOGIN " + xoauth2_string(ALICE, "ya29.bad").encode() + b"\r\n")
        assert third.readline().startswith(b"+ eyJzdGF0dXMiOiI0MDAi")
        third.send(b"\r\n")
        assert third.readline() == b"NO\r\n"
        clock.advance(99)
        first.send(b"ECHO still\r\n")
        assert first.readline() == b"OK still\r\n"
        clock.advance(1)
        assert first.readline() == b"* BYE expired\r\n"
        assert first.readline() == b""
        second.send(b"ECHO alive\r\n")
        assert second.readline() == b"OK alive\r\n"


def test_end_sessions_with_a_line(
    echo: EchoServer, google: FakeGoogle, clock: ManualClock
) -> None:
    token = google.mint_access_token(ALICE)
    with plain(echo) as client:
        client.send(b"LOGIN " + xoauth2_string(ALICE, token).encode() + b"\r\n")
        assert client.readline() == b"OK alice@example.com\r\n"
        assert echo.end_sessions(BOB) == 0
        assert echo.end_sessions(ALICE, "* BYE System Error") == 1
        assert client.readline() == b"* BYE System Error\r\n"
        assert client.readline() == b""


def test_handler_errors_are_raised_at_close(pki: PKI) -> None:
    server = EchoServer(backend(), ssl_context=pki.server_context(), implicit_tls=False)
    server.start()
    with plain(server) as client:  # type: ignore[arg-type]
        client.send(b"BOOM\r\n")
        assert client.readline() == b""
    with pytest.raises(RuntimeError, match="the fake itself failed"):
        server.close()


# -- FakeGmail ------------------------------------------------------------------------


def test_fake_gmail_starts_and_leaves_nothing_behind() -> None:
    before = set(threading.enumerate())
    gmail = FakeGmail(users=[ALICE])
    with pytest.raises(RuntimeError, match="not started"):
        _ = gmail.smtp_port
    with gmail:
        ports = {gmail.imap_port, gmail.pop_port, gmail.smtp_port}
        ports.add(gmail.submission_port)
        assert len(ports) == 4
        assert gmail.token_uri.startswith("http://127.0.0.1:")
        ca_file = pathlib.Path(gmail.ca_file)
        assert ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert gmail.users == (ALICE,)
        assert "smtp=" in repr(gmail)
        with smtplib.SMTP_SSL(
            gmail.host, gmail.smtp_port, context=gmail.ssl_context()
        ) as smtp:
            smtp.noop()
    assert not ca_file.exists()
    assert set(threading.enumerate()) <= before
    assert "not started" in repr(gmail)


def test_token_provider_is_a_real_provider_against_the_fake_google(
    clock: ManualClock,
) -> None:
    with FakeGmail(clock=clock) as gmail:
        provider = gmail.token_provider(ALICE)
        token = provider.token()
        info = gmail.google.lookup(token)
        assert info is not None and info.email == ALICE
        with smtplib.SMTP_SSL(
            gmail.host, gmail.smtp_port, context=gmail.ssl_context()
        ) as smtp:
            smtp.ehlo()
            code, _ = smtp.docmd("AUTH", "XOAUTH2 " + xoauth2_string(ALICE, token))
            assert code == 235
        assert provider.token(force_refresh=True) != token


def test_module_main_prints_where_the_fake_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gmail_xoauth2.testing.__main__ import main

    stop = threading.Event()
    stop.set()
    assert main(["--json", "--user", "carol@example.com"], stop=stop) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["users"] == ["carol@example.com"]
    assert (details["host"], details["address"]) == ("localhost", "127.0.0.1")
    assert details["control_url"].endswith("/_control")
    assert details["access_token"].startswith("ya29.")
    assert isinstance(details["smtp_port"], int)
    assert not pathlib.Path(details["ca_file"]).exists()
    assert main([], stop=stop) == 0
    text = capsys.readouterr().out
    assert text.startswith(
        "Fake Gmail on localhost, listening on 127.0.0.1 (Ctrl-C to stop)\n"
    )
    assert "alice@example.com, bob@example.com" in text


def test_port_base_puts_every_service_on_a_fixed_port() -> None:
    import socket

    from _ports import free_port_base

    from gmail_xoauth2.testing import FakeGmail

    base = free_port_base()
    with FakeGmail(port_base=base) as gmail:
        assert (
            gmail.imap_port,
            gmail.pop_port,
            gmail.smtp_port,
            gmail.submission_port,
        ) == (base, base + 1, base + 2, base + 3)
        assert gmail.google.url.endswith(f":{base + 4}")
        with socket.create_connection((gmail.host, base + 3)) as plain:
            assert plain.recv(100).startswith(b"220 smtp.gmail.com ESMTP ")


def test_port_base_must_fit() -> None:
    from gmail_xoauth2.testing import FakeGmail

    with pytest.raises(ValueError):
        FakeGmail(port_base=65533)


# -- closing while a client is in the TLS handshake ---------------------------------


def closes_promptly(close: Callable[[], object]) -> bool:
    """Run ``close`` in a thread; whether it returned (a hang fails, not blocks)."""
    done = threading.Event()

    def run() -> None:
        close()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(10)


def test_close_ends_a_starttls_handshake_the_client_never_finishes(
    echo: EchoServer,
) -> None:
    with plain(echo) as client:
        client.send(b"TLS\r\n")
        assert client.readline() == b"OK go\r\n"
        # The server now waits for a ClientHello that never comes.
        assert closes_promptly(echo.close)


def test_close_ends_an_implicit_tls_handshake_the_client_never_finishes() -> None:
    gmail = FakeGmail(users=[ALICE]).start()
    with socket.create_connection((gmail.host, gmail.pop_port), timeout=10) as raw:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = gmail.ssl_context().wrap_bio(
            incoming, outgoing, server_hostname=gmail.host
        )
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        raw.sendall(outgoing.read())
        # The server's hello arrived: it is in the handshake, waiting for ours.
        assert raw.recv(65536)
        assert closes_promptly(gmail.close)
