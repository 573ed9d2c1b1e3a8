"""The hot-path benchmark's flood server and raw reader: their bytes and counts."""

from __future__ import annotations

import base64
import imaplib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from clients import Endpoint
from flood_server import FloodServer, flood_block, flood_process
from scenario_hotpath import RawSession

from gmail_xoauth2 import IMAP4, StaticTokenProvider, xoauth2_response
from gmail_xoauth2.testing._pki import PKI, make_pki

USER = "flood@example.com"
TOKEN = "ya29.flood-test-token"
COUNT = 2_000


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path)


@pytest.fixture
def server(pki: PKI) -> Iterator[FloodServer]:
    with FloodServer(pki.server_context(), USER, TOKEN, count=COUNT) as server:
        yield server


def endpoint(pki: PKI, server: FloodServer, token: str = TOKEN) -> Endpoint:
    return Endpoint(server.host, server.port, pki.client_context(), USER, token)


def numbers(count: int) -> list[bytes]:
    return [str(n).encode() for n in range(1, count + 1)]


def test_flood_block_is_count_exists_lines_in_order() -> None:
    block = flood_block(12)
    lines = block.split(b"\r\n")
    assert lines[-1] == b""
    assert lines[:-1] == [b"* %d EXISTS" % n for n in range(1, 13)]
    assert len(block) == 9 * len(b"* 1 EXISTS\r\n") + 3 * len(b"* 10 EXISTS\r\n")


def test_ours_logs_in_with_sasl_ir_and_gets_every_line(
    pki: PKI, server: FloodServer
) -> None:
    conn = IMAP4(
        USER,
        StaticTokenProvider(TOKEN),
        server.host,
        server.port,
        ssl_context=pki.client_context(),
    )
    try:
        assert conn.noop()[0] == "OK"
        assert conn.untagged_responses.pop("EXISTS") == numbers(COUNT)
    finally:
        conn.logout()
    server.close()
    initial = base64.b64encode(xoauth2_response(USER, TOKEN))
    [lines] = server.lines
    [auth] = [line for line in lines if b"AUTHENTICATE" in line]
    assert auth.endswith(b" AUTHENTICATE XOAUTH2 " + initial + b"\r\n")
    assert server.noops == 1


def test_imaplib_authenticates_in_two_steps_and_gets_every_line(
    pki: PKI, server: FloodServer
) -> None:
    conn = imaplib.IMAP4_SSL(server.host, server.port, ssl_context=pki.client_context())
    conn.authenticate("XOAUTH2", lambda _: xoauth2_response(USER, TOKEN))
    for _ in range(2):
        assert conn.noop()[0] == "OK"
        assert conn.untagged_responses.pop("EXISTS") == numbers(COUNT)
    conn.logout()
    server.close()
    [lines] = server.lines
    initial = base64.b64encode(xoauth2_response(USER, TOKEN))
    assert lines[1].endswith(b" AUTHENTICATE XOAUTH2\r\n")
    assert lines[2] == initial + b"\r\n"
    assert server.noops == 2


def test_login_checks_the_token(pki: PKI, server: FloodServer) -> None:
    conn = imaplib.IMAP4_SSL(server.host, server.port, ssl_context=pki.client_context())
    with pytest.raises(imaplib.IMAP4.error, match="Invalid credentials"):
        conn.login(USER, "wrong")
    assert conn.login(USER, TOKEN)[0] == "OK"
    conn.logout()
    bad = imaplib.IMAP4_SSL(server.host, server.port, ssl_context=pki.client_context())
    with pytest.raises(imaplib.IMAP4.error, match="Invalid credentials"):
        bad.authenticate("XOAUTH2", lambda _: xoauth2_response(USER, "wrong"))
    bad.logout()


def test_raw_session_reads_exactly_the_reply(pki: PKI, server: FloodServer) -> None:
    session = RawSession(endpoint(pki, server))
    # Tag r1 was the login; the NOOP is r2, then r3.
    assert session.command(b"NOOP") == len(
        flood_block(COUNT) + b"r2 OK NOOP completed\r\n"
    )
    assert session.command(b"NOOP") == len(
        flood_block(COUNT) + b"r3 OK NOOP completed\r\n"
    )
    session.logout()
    server.close()
    assert server.noops == 2


def test_raw_session_refused_login_raises(pki: PKI, server: FloodServer) -> None:
    with pytest.raises(RuntimeError, match="Invalid credentials"):
        RawSession(endpoint(pki, server, token="wrong"))


def test_flood_process_serves_and_reports_its_noops(pki: PKI) -> None:
    with flood_process(pki, USER, TOKEN, count=COUNT) as (address, stats):
        e = Endpoint(*address, pki.client_context(), USER, TOKEN)
        session = RawSession(e)
        assert session.command(b"NOOP") > len(flood_block(COUNT))
        session.logout()
        assert stats == {}
    assert stats == {"noops": 1}
