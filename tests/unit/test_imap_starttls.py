"""IMAP4 with STARTTLS, and the greeting's capabilities, against tiny plain servers.

The fake Gmail speaks IMAP only over implicit TLS (as Gmail does), so these
tests run a small scripted server: it records every line the client sends.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gmail_xoauth2 import errors, sasl
from gmail_xoauth2._tokens import StaticTokenProvider
from gmail_xoauth2.imap import IMAP4
from gmail_xoauth2.testing._pki import PKI, make_pki

ALICE = "alice@example.com"
TOKEN = "ya29.starttls-token"

Script = Callable[["Peer"], None]


class Peer:
    """The server side of one connection: read lines, send lines, go TLS."""

    def __init__(self, sock: socket.socket, received: list[bytes]) -> None:
        self.sock: socket.socket = sock
        self.received = received
        self.buffer = b""

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\r\n")

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        self.received.append(line)
        return line

    def starttls(self, context: ssl.SSLContext) -> None:
        self.buffer = b""
        self.sock = context.wrap_socket(self.sock, server_side=True)


class TinyServer:
    """One connection, served by ``script`` in a thread; errors are re-raised."""

    def __init__(self, script: Script) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, args=(script,))
        self.thread.start()

    def _serve(self, script: Script) -> None:
        conn, _ = self.listener.accept()
        peer = Peer(conn, self.received)
        try:
            script(peer)
            while True:  # until the client hangs up
                peer.line()
        except (EOFError, OSError):
            pass
        except BaseException as exc:
            self.error = exc
        finally:
            peer.sock.close()

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()
        if self.error is not None:
            raise self.error


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path, hosts=("127.0.0.1",))


@pytest.fixture
def serve() -> Iterator[Callable[[Script], TinyServer]]:
    servers: list[TinyServer] = []

    def start(script: Script) -> TinyServer:
        servers.append(TinyServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def connect(port: int, pki: PKI, **kwargs: object) -> IMAP4:
    return IMAP4(
        ALICE,
        StaticTokenProvider(TOKEN),
        "127.0.0.1",
        port,
        starttls=True,
        ssl_context=pki.client_context(),
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


def test_no_starttls_offered_in_greeting_refuses_before_any_command(
    serve: Callable[[Script], TinyServer], pki: PKI
) -> None:
    def script(peer: Peer) -> None:
        # Dovecot-style greeting with capabilities: no CAPABILITY is needed.
        peer.send(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready")

    server = serve(script)
    with pytest.raises(errors.InsecureConnection, match="STARTTLS"):
        connect(server.port, pki)
    server.close()
    assert server.received == []


def test_no_starttls_in_capability_refuses_and_never_authenticates(
    serve: Callable[[Script], TinyServer], pki: PKI
) -> None:
    def script(peer: Peer) -> None:
        peer.send(b"* OK Gimap ready")
        tag = peer.line().split()[0]
        peer.send(b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2")
        peer.send(tag + b" OK Thats all she wrote!")

    server = serve(script)
    with pytest.raises(errors.InsecureConnection):
        connect(server.port, pki)
    server.close()
    assert [line.split()[1] for line in server.received] == [b"CAPABILITY"]
    assert not any(b"AUTHENTICATE" in line for line in server.received)


def test_starttls_then_fresh_capabilities_then_two_step_authenticate(
    serve: Callable[[Script], TinyServer], pki: PKI
) -> None:
    def script(peer: Peer) -> None:
        # Capabilities before TLS (with SASL-IR) must be forgotten: after the
        # handshake the server offers no SASL-IR, so the client waits for "+ ".
        peer.send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS SASL-IR AUTH=XOAUTH2] hi")
        tag = peer.line().split()[0]
        peer.send(tag + b" OK Begin TLS negotiation now")
        peer.starttls(pki.server_context())
        tag = peer.line().split()[0]
        peer.send(b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2")
        peer.send(tag + b" OK done")
        tag, verb, mech = peer.line().split()
        assert (verb, mech) == (b"AUTHENTICATE", b"XOAUTH2")
        peer.send(b"+ ")
        parsed = sasl.parse_client_response("XOAUTH2", peer.line())
        assert (parsed.user, parsed.token) == (ALICE, TOKEN)
        peer.send(tag + b" OK alice@example.com authenticated (Success)")
        tag = peer.line().split()[0]
        peer.send(b"* BYE bye")
        peer.send(tag + b" OK LOGOUT done")

    server = serve(script)
    with connect(server.port, pki) as m:
        assert m.state == "AUTH"
        assert "SASL-IR" not in m.capabilities
    server.close()
    received = server.received
    assert len(received) == 5
    verbs = [received[i].split()[1] for i in (0, 1, 2, 4)]
    assert verbs == [b"STARTTLS", b"CAPABILITY", b"AUTHENTICATE", b"LOGOUT"]
    assert b" " not in received[3]  # the initial response, alone on its line


def test_lines_injected_in_clear_after_starttls_ok_are_discarded(
    serve: Callable[[Script], TinyServer], pki: PKI
) -> None:
    def script(peer: Peer) -> None:
        # A man in the middle appends a CAPABILITY (with SASL-IR) and a tagged
        # OK for the client's next command to the STARTTLS reply, in one
        # segment: the client must not believe either (RFC 3501 section 6.2.1).
        peer.send(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2] hi")
        tag = peer.line().split()[0]
        peer.send(
            tag + b" OK Begin TLS negotiation now\r\n"
            b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2\r\n"
            b"A" + tag[1:] + b"9 OK injected"
        )
        peer.starttls(pki.server_context())
        tag = peer.line().split()[0]
        peer.send(b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2")
        peer.send(tag + b" OK done")
        tag, verb, mech = peer.line().split()
        assert (verb, mech) == (b"AUTHENTICATE", b"XOAUTH2")
        peer.send(b"+ ")
        peer.line()
        peer.send(tag + b" OK authenticated (Success)")
        tag = peer.line().split()[0]
        peer.send(b"* BYE bye")
        peer.send(tag + b" OK LOGOUT done")

    server = serve(script)
    with connect(server.port, pki) as m:
        assert m.state == "AUTH"
        assert "SASL-IR" not in m.capabilities
    server.close()
    verbs = [line.split()[1] for line in server.received if b" " in line]
    assert verbs == [b"STARTTLS", b"CAPABILITY", b"AUTHENTICATE", b"LOGOUT"]
