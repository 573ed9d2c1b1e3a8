"""Driving the fake Gmail from another process: the /_control endpoint and its CLI."""

from __future__ import annotations

import imaplib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gmail_xoauth2 import IMAP4, cli
from gmail_xoauth2.sasl import xoauth2_response
from gmail_xoauth2.testing import FakeGmail
from gmail_xoauth2.testing._control import (
    CONTROL_ENV,
    ControlError,
    display_host,
    is_loopback,
    post_control,
)

ALICE = "alice@example.com"
MESSAGE = (
    "From: carol@example.com\r\nTo: alice@example.com\r\n"
    "Subject: from outside\r\n\r\nDelivered by the control endpoint.\r\n"
)


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail(users=(ALICE, "bob@example.com")) as fake:
        yield fake


def imap_login(gmail: FakeGmail, token: str) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL(
        display_host(gmail.host), gmail.imap_port, ssl_context=gmail.ssl_context()
    )
    try:
        imap.authenticate("XOAUTH2", lambda _: xoauth2_response(ALICE, token))
    except imaplib.IMAP4.error:
        imap.shutdown()
        raise
    return imap


def raw_post(url: str, body: bytes, content_type: str = "application/json") -> int:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code


# -- the endpoint ------------------------------------------------------------------


def test_control_url_is_next_to_the_fake_google(gmail: FakeGmail) -> None:
    assert gmail.control_url == gmail.google.url + "/_control"
    assert gmail.control_url.startswith("http://127.0.0.1:")


def test_expire_tokens_refuses_the_old_token_and_takes_a_refreshed_one(
    gmail: FakeGmail,
) -> None:
    provider = gmail.token_provider(ALICE)
    token = provider.token()
    imap_login(gmail, token).logout()
    answer = post_control(gmail.control_url, "expire-tokens", {"user": ALICE})
    assert answer == {"user": ALICE, "expired": True}
    with pytest.raises(imaplib.IMAP4.error, match="Invalid credentials"):
        imap_login(gmail, token)
    refreshed = provider.token(force_refresh=True)
    assert refreshed != token
    imap_login(gmail, refreshed).logout()


def test_end_sessions_sends_bye_and_the_client_reconnects(gmail: FakeGmail) -> None:
    provider = gmail.token_provider(ALICE)
    with IMAP4(
        ALICE,
        provider,
        display_host(gmail.host),
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
    ) as imap:
        imap.select("INBOX")
        answer = post_control(
            gmail.control_url, "end-sessions", {"user": ALICE, "protocol": "imap"}
        )
        assert answer == {"user": ALICE, "protocol": "imap", "ended": 1}
        assert imap.noop()[0] == "OK"
        assert imap.reconnects == 1
    said = [line.data for line in gmail.transcript("imap") if line.direction == "S"]
    assert b"* BYE Session expired, please login again." in said
    assert gmail.connection_count("imap") == 2


def test_end_sessions_of_every_protocol_counts_none_when_idle(
    gmail: FakeGmail,
) -> None:
    answer = post_control(gmail.control_url, "end-sessions", {"user": ALICE})
    assert answer == {"user": ALICE, "protocol": None, "ended": 0}


def test_deliver_puts_the_message_in_inbox_with_the_next_uid(gmail: FakeGmail) -> None:
    first = post_control(
        gmail.control_url, "deliver", {"user": ALICE, "message": MESSAGE}
    )
    assert first == {"user": ALICE, "mailbox": "INBOX", "uid": 1}
    second = post_control(
        gmail.control_url,
        "deliver",
        {"user": ALICE, "mailbox": "INBOX", "message": MESSAGE},
    )
    assert second["uid"] == 2
    assert gmail.messages(ALICE) == [MESSAGE.encode()] * 2
    imap = imap_login(gmail, gmail.mint_token(ALICE))
    imap.select("INBOX")
    assert imap.uid("SEARCH", "SUBJECT", '"from outside"')[1] == [b"1 2"]
    imap.logout()


def test_deliver_keeps_bytes_that_are_not_utf8(gmail: FakeGmail) -> None:
    raw = b"Subject: caf\xe9\r\n\r\nLatin-1, as old mailers send it.\r\n"
    text = raw.decode("utf-8", "surrogateescape")
    post_control(gmail.control_url, "deliver", {"user": ALICE, "message": text})
    assert gmail.messages(ALICE) == [raw]


@pytest.mark.parametrize(
    ("action", "payload", "status", "says"),
    [
        ("expire-tokens", {}, 400, '"user" (an account address) is required'),
        (
            "expire-tokens",
            {"user": "eve@example.com"},
            404,
            "no user 'eve@example.com'",
        ),
        ("end-sessions", {"user": ALICE, "protocol": "jmap"}, 400, "must be one of"),
        ("deliver", {"user": ALICE}, 400, '"message" (the raw RFC 5322 text)'),
        (
            "deliver",
            {"user": ALICE, "mailbox": "Nope", "message": MESSAGE},
            404,
            "alice@example.com has no mailbox 'Nope'",
        ),
        ("reboot", {"user": ALICE}, 404, "the actions are expire-tokens, end-sessions"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_why(
    gmail: FakeGmail, action: str, payload: dict[str, object], status: int, says: str
) -> None:
    with pytest.raises(ControlError) as caught:
        post_control(gmail.control_url, action, payload)
    assert caught.value.status == status
    assert says in str(caught.value)


def test_only_a_json_object_posted_is_taken(gmail: FakeGmail) -> None:
    url = gmail.control_url + "/expire-tokens"
    body = json.dumps({"user": ALICE}).encode()
    # A web page can POST text/plain to loopback without a CORS preflight.
    assert raw_post(url, body, "text/plain") == 415
    assert raw_post(url, b"[1, 2]") == 400
    assert raw_post(url, b"{not json") == 400
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(url, timeout=30)
    with caught.value as response:
        assert response.code == 405
    assert gmail.google.request_count("/token") == 0


def test_loopback_is_all_it_answers_and_all_the_client_calls() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("10.0.0.1", "192.168.1.2", "::ffff:10.0.0.1", "example.com", ""):
        assert not is_loopback(host), host
    assert display_host("127.0.0.1") == "localhost"
    with pytest.raises(ControlError, match="not a loopback http:// URL"):
        post_control("http://192.0.2.1:9/_control", "expire-tokens", {"user": ALICE})


def test_nothing_listening_says_how_to_find_the_fake() -> None:
    with socket.socket() as bound:  # bound, not listening: connections refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/_control"
        with pytest.raises(ControlError, match="is `gmail-xoauth2 fake-gmail` running"):
            post_control(url, "expire-tokens", {"user": ALICE})


# -- the command line ----------------------------------------------------------------


def test_cli_expire_tokens_and_end_sessions(
    gmail: FakeGmail, capsys: pytest.CaptureFixture[str]
) -> None:
    token = gmail.mint_token(ALICE)
    argv = ["fake-gmail", "expire-tokens", "--control", gmail.control_url]
    assert cli.main([*argv, "--user", ALICE]) == 0
    assert capsys.readouterr().out == (
        "Expired the access tokens of alice@example.com; their sessions ended.\n"
    )
    assert gmail.google.lookup(token) is None
    imap = imap_login(gmail, gmail.mint_token(ALICE))
    argv = ["fake-gmail", "end-sessions", "--control", gmail.control_url]
    assert cli.main([*argv, "--user", ALICE, "--protocol", "imap"]) == 0
    assert capsys.readouterr().out == "Ended 1 session(s) of alice@example.com.\n"
    with pytest.raises(imaplib.IMAP4.abort, match="Session expired"):
        imap.noop()
    imap.shutdown()


def test_cli_deliver_finds_the_fake_through_the_environment(
    gmail: FakeGmail,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(CONTROL_ENV, gmail.control_url)
    eml = tmp_path / "message.eml"
    eml.write_bytes(MESSAGE.encode())
    assert cli.main(["fake-gmail", "deliver", "--user", ALICE, str(eml)]) == 0
    assert capsys.readouterr().out == (
        "Delivered to alice@example.com's INBOX as UID 1.\n"
    )
    assert gmail.messages(ALICE) == [MESSAGE.encode()]


def test_cli_failures_say_what_to_do(
    gmail: FakeGmail,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(CONTROL_ENV, raising=False)
    assert cli.main(["fake-gmail", "expire-tokens", "--user", ALICE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gmail-xoauth2: error: which fake Gmail? Pass --control URL")
    control = ["--control", gmail.control_url]
    assert cli.main(["fake-gmail", "expire-tokens", *control, "--user", "eve@x"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "gmail-xoauth2: error: no user 'eve@x' on this fake; its users are "
        "alice@example.com, bob@example.com\n"
    )
    missing = str(tmp_path / "missing.eml")
    argv = ["fake-gmail", "deliver", *control, "--user", ALICE, missing]
    assert cli.main(argv) == 1
    assert "cannot read " in capsys.readouterr().err
    assert cli.main(["fake-gmail", "deliver", *control]) == 2  # no --user, no FILE


def test_the_cli_spells_the_environment_variable_as_the_fake_prints_it() -> None:
    assert cli._FAKE_CONTROL_ENV == CONTROL_ENV
