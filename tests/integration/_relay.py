"""A small SMTP sink for Dovecot's submission relay that delivers through LMTP.

Dovecot's submission service does not deliver mail itself: it relays to an MTA
(``submission_relay_host``). This sink plays that MTA. It answers the final dot
only after Dovecot's LMTP has delivered the message into every recipient's
INBOX, so when the client's ``sendmail`` returns, the mail is already there.
"""

from __future__ import annotations

import logging
import smtplib
import socketserver
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

_MAX_LINE = 4096


@dataclass(frozen=True)
class Relayed:
    """One message the sink accepted and delivered."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes


def _address(arg: str) -> str:
    # "FROM:<a@b> SIZE=12" -> "a@b"
    _, _, rest = arg.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1 : rest.index(">")]
    return rest.split(" ", 1)[0]


class _Handler(socketserver.StreamRequestHandler):
    server: RelaySink._Server

    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode("ascii") + b"\r\n")

    def handle(self) -> None:
        self._reply("220 relay.test ESMTP sink")
        mail_from: str | None = None
        rcpts: list[str] = []
        while True:
            raw = self.rfile.readline(_MAX_LINE)
            if not raw:
                return
            verb, _, arg = raw.decode("ascii", "replace").rstrip("\r\n").partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO", "LHLO"):
                self._reply("250-relay.test")
                self._reply("250-8BITMIME")
                self._reply("250 ENHANCEDSTATUSCODES")
            elif verb == "MAIL":
                mail_from, rcpts = _address(arg), []
                self._reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                if mail_from is None:
                    self._reply("503 5.5.1 MAIL first")
                else:
                    rcpts.append(_address(arg))
                    self._reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if mail_from is None or not rcpts:
                    self._reply("503 5.5.1 RCPT first")
                    continue
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                data = self._read_data()
                if data is None:
                    return
                self._reply(self.server.sink.deliver(mail_from, tuple(rcpts), data))
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self._reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self._reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self._reply("221 2.0.0 Bye")
                return
            else:
                self._reply("502 5.5.2 Command not implemented")

    def _read_data(self) -> bytes | None:
        lines: list[bytes] = []
        while True:
            raw = self.rfile.readline(_MAX_LINE)
            if not raw:
                return None
            if raw == b".\r\n":
                return b"".join(lines)
            # RFC 5321 section 4.5.2: remove one leading dot.
            lines.append(raw[1:] if raw.startswith(b".") else raw)


class RelaySink:
    """An SMTP server on 127.0.0.1 that delivers each message via LMTP.

    Args:
        lmtp_socket: path of Dovecot's LMTP unix socket.

    Use as a context manager; :attr:`port` is bound before the thread starts.
    """

    class _Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        sink: RelaySink

    def __init__(self, lmtp_socket: str) -> None:
        self.lmtp_socket = lmtp_socket
        self._lock = threading.Lock()
        self._relayed: list[Relayed] = []
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.sink = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="relay-sink", daemon=True
        )

    @property
    def port(self) -> int:
        """The TCP port the sink listens on."""
        return int(self._server.server_address[1])

    @property
    def relayed(self) -> list[Relayed]:
        """Every message delivered so far, oldest first."""
        with self._lock:
            return list(self._relayed)

    def deliver(self, mail_from: str, rcpt_to: tuple[str, ...], data: bytes) -> str:
        """Hand one message to LMTP, one transaction per recipient; return the reply."""
        try:
            for rcpt in rcpt_to:
                with smtplib.LMTP(self.lmtp_socket) as lmtp:
                    lmtp.sendmail(mail_from, [rcpt], data)
        except (OSError, smtplib.SMTPException) as exc:
            log.exception("LMTP delivery failed")
            return f"451 4.3.0 LMTP delivery failed: {type(exc).__name__}"
        with self._lock:
            self._relayed.append(Relayed(mail_from, rcpt_to, data))
        return "250 2.0.0 Ok: delivered"

    def __enter__(self) -> RelaySink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
