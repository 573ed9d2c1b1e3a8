"""A loopback TLS IMAP server that answers NOOP with a flood of untagged lines.

It measures a client's reply loop and nothing else: after login, every NOOP is
answered with ``count`` lines ``* n EXISTS`` (n = 1, 2, ...) and then the
tagged OK. The flood is built once, as one bytes block, so sending it costs the
server a TLS encryption and no Python per line; the client's parsing is what
the clock sees.

It speaks just enough IMAP for imaplib and gmail_xoauth2: a greeting with
``[CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2]``, CAPABILITY, AUTHENTICATE
XOAUTH2 with or without the initial response (RFC 4959), LOGIN, NOOP and
LOGOUT. The XOAUTH2 string and the LOGIN password are checked against the one
user and token it was given.

The benchmark runs it in a process of its own (:func:`flood_process`), so its
sending never competes with the measured client for the GIL; the tests run
:class:`FloodServer` in a thread.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gmail_xoauth2 import xoauth2_response
from gmail_xoauth2.testing._pki import PKI

__all__ = ["FloodServer", "flood_block", "flood_process"]

CAPABILITIES = b"IMAP4rev1 SASL-IR AUTH=XOAUTH2"
_CRLF = b"\r\n"
# The peer going away mid-reply is how a client ends a session, not a fault.
_PEER_GONE = (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


def flood_block(count: int) -> bytes:
    """``* 1 EXISTS`` to ``* count EXISTS``, each with its CRLF."""
    return b"".join(b"* %d EXISTS\r\n" % n for n in range(1, count + 1))


class FloodServer:
    """Serve every connection to ``127.0.0.1:<port>`` in its own thread.

    Use as a context manager. ``noops`` counts the NOOPs answered (a whole
    flood each) and ``lines`` records every line received, in order, per
    connection. An error in a connection's thread is raised again by
    :meth:`close`.

    Args:
        context: the server-side TLS context.
        user: the address to accept.
        token: the access token to accept.
        count: EXISTS lines per NOOP.
    """

    def __init__(
        self, context: ssl.SSLContext, user: str, token: str, *, count: int
    ) -> None:
        self.count = count
        self.flood = flood_block(count)
        self.noops = 0
        self.lines: list[list[bytes]] = []
        self._context = context
        self._user = user.encode()
        self._token = token.encode()
        self._xoauth2 = xoauth2_response(user, token)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._errors: list[BaseException] = []
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._acceptor = threading.Thread(
            target=self._accept, name="flood-server", daemon=True
        )
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            # The handshake waits for the client: it runs in the connection's thread.
            tls = self._context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
            with self._lock:
                if self._closed.is_set():
                    tls.close()
                    return
                lines: list[bytes] = []
                self.lines.append(lines)
                self._sockets.append(tls)
                thread = threading.Thread(
                    target=self._serve,
                    args=(tls, lines),
                    name=f"flood-conn{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
            thread.start()

    def _serve(self, tls: ssl.SSLSocket, lines: list[bytes]) -> None:
        try:
            with tls:
                tls.do_handshake()
                with tls.makefile("rb") as reader:
                    self._session(tls, reader, lines)
        except _PEER_GONE:
            pass
        except BaseException as exc:
            if isinstance(exc, OSError) and self._closed.is_set():
                return  # cut by close()
            with self._lock:
                self._errors.append(exc)

    def _session(
        self, tls: ssl.SSLSocket, reader: BinaryIO, lines: list[bytes]
    ) -> None:
        tls.sendall(b"* OK [CAPABILITY " + CAPABILITIES + b"] flood server ready\r\n")
        while line := reader.readline():
            lines.append(line)
            tag, _, rest = line.rstrip(_CRLF).partition(b" ")
            verb, _, args = rest.partition(b" ")
            verb = verb.upper()
            if verb == b"NOOP":
                tls.sendall(self.flood)
                tls.sendall(tag + b" OK NOOP completed\r\n")
                with self._lock:
                    self.noops += 1
            elif verb == b"CAPABILITY":
                tls.sendall(b"* CAPABILITY " + CAPABILITIES + _CRLF)
                tls.sendall(tag + b" OK CAPABILITY completed\r\n")
            elif verb == b"AUTHENTICATE":
                mechanism, _, initial = args.partition(b" ")
                if mechanism.upper() != b"XOAUTH2":
                    tls.sendall(tag + b" NO unsupported mechanism\r\n")
                    continue
                if not initial:
                    tls.sendall(b"+ \r\n")
                    initial = reader.readline()
                    lines.append(initial)
                self._answer_login(tls, tag, self._decode(initial) == self._xoauth2)
            elif verb == b"LOGIN":
                user, _, password = args.partition(b" ")
                given = (user.strip(b'"'), password.strip(b'"'))
                self._answer_login(tls, tag, given == (self._user, self._token))
            elif verb == b"LOGOUT":
                tls.sendall(b"* BYE logging out\r\n")
                tls.sendall(tag + b" OK LOGOUT completed\r\n")
                return
            else:
                tls.sendall(tag + b" BAD unknown command\r\n")

    @staticmethod
    def _decode(initial: bytes) -> bytes:
        try:
            return base64.b64decode(initial.strip(), validate=True)
        except ValueError:
            return b""

    @staticmethod
    def _answer_login(tls: ssl.SSLSocket, tag: bytes, ok: bool) -> None:
        if ok:
            tls.sendall(tag + b" OK authenticated\r\n")
        else:
            tls.sendall(tag + b" NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")

    def close(self) -> None:
        """Stop accepting, cut every connection, join every thread, raise errors."""
        self._closed.set()
        # shutdown() wakes the thread blocked in accept(); close() alone does not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join()
        for sock in sockets:
            sock.close()
        if self._errors:
            raise self._errors[0]

    def __enter__(self) -> FloodServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def flood_process(
    pki: PKI, user: str, token: str, *, count: int
) -> Iterator[tuple[tuple[str, int], dict[str, int]]]:
    """Run a :class:`FloodServer` in a child process until the block ends.

    Yields its ``(host, port)`` and a dict that, once the block has ended,
    holds the child's ``noops``.
    """
    config = {
        "cert_file": str(pki.cert_file),
        "key_file": str(pki.key_file),
        "ca_file": str(pki.ca_file),
        "user": user,
        "token": token,
        "count": count,
    }
    child = subprocess.Popen(
        [sys.executable, __file__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    stats: dict[str, int] = {}
    try:
        child.stdin.write(json.dumps(config) + "\n")
        child.stdin.flush()
        ready = json.loads(child.stdout.readline() or "{}")
        if "port" not in ready:
            raise RuntimeError("the flood server did not start")
        yield (ready["host"], ready["port"]), stats
    finally:
        # Closing its stdin is the child's signal to stop.
        out, _ = child.communicate(timeout=60)
    if child.returncode != 0:
        raise RuntimeError(f"the flood server failed (exit {child.returncode})")
    stats.update(json.loads(out))


def _main() -> int:
    """Child process: config on stdin, address on stdout, serve until stdin closes."""
    config = json.loads(sys.stdin.readline())
    pki = PKI(
        Path(config["ca_file"]), Path(config["cert_file"]), Path(config["key_file"])
    )
    with FloodServer(
        pki.server_context(), config["user"], config["token"], count=config["count"]
    ) as server:
        print(json.dumps({"host": server.host, "port": server.port}), flush=True)
        sys.stdin.read()
    print(json.dumps({"noops": server.noops}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
