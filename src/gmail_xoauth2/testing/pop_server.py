"""The fake Gmail's POP3 server (implicit TLS, like pop.gmail.com:995).

Gmail's POP shows the INBOX as it was at login; DELE marks messages and QUIT
removes them from the INBOX (they stay in All Mail, like Gmail's "archive
Gmail's copy" setting). RFC 1939 (POP3), RFC 2449 (CAPA), RFC 5034 (AUTH).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ._mailstore import INBOX
from ._server import AuthFailure, Connection, LineServer

__all__ = ["FakePOPServer", "POPConnection"]

_CAPABILITIES = (
    b"USER",
    b"RESP-CODES",
    b"EXPIRE 0",
    b"LOGIN-DELAY 300",
    b"TOP",
    b"UIDL",
    b"X-GOOGLE-RICO",
    b"SASL PLAIN XOAUTH2 OAUTHBEARER",
)
_BAD_CREDENTIALS = b"-ERR [AUTH] Invalid credentials."
_BAD_PASSWORD = b"-ERR [AUTH] Username and password not accepted."
_BAD_COMMAND = b"-ERR bad command"


@dataclass
class _Drop:
    number: int
    uid: int
    gm_msgid: int
    raw: bytes
    deleted: bool = False


class POPConnection(Connection):
    """One POP3 session, in Gmail's words."""

    protocol = "pop"

    def __init__(self, server: LineServer, sock: socket.socket, peer: str) -> None:
        super().__init__(server, sock, peer)
        self.user_arg: bytes | None = None
        self.maildrop: list[_Drop] | None = None

    # -- base hooks ---------------------------------------------------------------

    def greet(self) -> None:
        greeting = f"+OK Gpop ready for requests from {self.peer} {self.gmail_id}"
        self.send_line(greeting.encode())

    def is_continuation(self, line: bytes) -> bool:
        return line.startswith(b"+ ") or line == b"+"

    def handle_line(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        name = verb.upper().decode("ascii", "replace")
        method = getattr(self, "cmd_" + name, None)
        if method is None or not name.isalpha():
            self.dispatch(name, lambda: self.send_line(_BAD_COMMAND))
            return
        self.dispatch(name, lambda: method(arg.strip()))

    def _multiline(self, first: bytes, lines: list[bytes]) -> None:
        self.send_line(first)
        for line in lines:
            # RFC 1939 section 3: byte-stuff lines that start with a dot.
            self.send_line(b"." + line if line.startswith(b".") else line)
        self.send_line(b".")

    # -- authorization state --------------------------------------------------------

    def cmd_CAPA(self, arg: bytes) -> None:
        self._multiline(b"+OK Capability list follows", list(_CAPABILITIES))

    def cmd_USER(self, arg: bytes) -> None:
        if self.maildrop is not None or not arg:
            self.send_line(_BAD_COMMAND)
            return
        self.user_arg = arg
        self.send_line(b"+OK send PASS")

    def cmd_PASS(self, arg: bytes) -> None:
        if self.maildrop is not None or self.user_arg is None:
            self.send_line(_BAD_COMMAND)
            return
        # An OAuth-only account has no password the fake would accept.
        self.user_arg = None
        self.send_line(_BAD_PASSWORD)

    def cmd_AUTH(self, arg: bytes) -> None:
        if self.maildrop is not None:
            self.send_line(_BAD_COMMAND)
            return
        mech_bytes, _, initial_bytes = arg.partition(b" ")
        mechanism = mech_bytes.upper().decode("ascii", "replace")
        if mechanism not in ("XOAUTH2", "OAUTHBEARER", "PLAIN"):
            self.send_line(_BAD_COMMAND)
            return
        initial = initial_bytes.strip() or None
        if mechanism == "PLAIN":
            if initial is None:
                self.send_line(b"+ ")
                self.readline()
            self.send_line(_BAD_PASSWORD)
            return
        outcome = self.sasl_exchange(mechanism, initial, challenge_prefix=b"+ ")
        if outcome is None:
            self.send_line(b"-ERR [AUTH] Authentication aborted.")
        elif isinstance(outcome, AuthFailure):
            self.send_line(_BAD_CREDENTIALS)
        elif not self.backend.open_session(self, outcome):
            self.send_line(b"-ERR [SYS/TEMP] Too many simultaneous connections.")
        else:
            status = self.backend.store.status(outcome.user, INBOX)
            self.maildrop = [
                _Drop(number, m.uid, m.gm_msgid, m.raw)
                for number, m in enumerate(status.messages, start=1)
            ]
            self.send_line(b"+OK Welcome.")

    # -- transaction state ------------------------------------------------------------

    def _drop(self, arg: bytes) -> _Drop | None:
        """The message numbered ``arg``, or None after sending the -ERR."""
        assert self.maildrop is not None
        if not arg.isdigit() or not 1 <= int(arg) <= len(self.maildrop):
            self.send_line(b"-ERR no such message")
            return None
        drop = self.maildrop[int(arg) - 1]
        if drop.deleted:
            self.send_line(b"-ERR message already deleted")
            return None
        return drop

    def _live(self) -> list[_Drop] | None:
        if self.maildrop is None:
            self.send_line(_BAD_COMMAND)
            return None
        return [d for d in self.maildrop if not d.deleted]

    def cmd_STAT(self, arg: bytes) -> None:
        live = self._live()
        if live is not None:
            size = sum(len(d.raw) for d in live)
            self.send_line(f"+OK {len(live)} {size}".encode())

    def cmd_LIST(self, arg: bytes) -> None:
        live = self._live()
        if live is None:
            return
        if arg:
            drop = self._drop(arg)
            if drop is not None:
                self.send_line(f"+OK {drop.number} {len(drop.raw)}".encode())
            return
        size = sum(len(d.raw) for d in live)
        self._multiline(
            f"+OK {len(live)} messages ({size} octets)".encode(),
            [f"{d.number} {len(d.raw)}".encode() for d in live],
        )

    def _uidl(self, drop: _Drop) -> bytes:
        return f"{drop.number} GmailId{drop.gm_msgid:x}".encode()

    def cmd_UIDL(self, arg: bytes) -> None:
        live = self._live()
        if live is None:
            return
        if arg:
            drop = self._drop(arg)
            if drop is not None:
                self.send_line(b"+OK " + self._uidl(drop))
            return
        self._multiline(b"+OK", [self._uidl(d) for d in live])

    def cmd_RETR(self, arg: bytes) -> None:
        if self._live() is None:
            return
        drop = self._drop(arg)
        if drop is not None:
            self._multiline(b"+OK message follows", _lines(drop.raw))

    def cmd_TOP(self, arg: bytes) -> None:
        if self._live() is None:
            return
        number, _, count = arg.partition(b" ")
        if not count.strip().isdigit():
            self.send_line(_BAD_COMMAND)
            return
        drop = self._drop(number)
        if drop is None:
            return
        lines = _lines(drop.raw)
        blank = lines.index(b"") if b"" in lines else len(lines)
        self._multiline(b"+OK message follows", lines[: blank + 1 + int(count.strip())])

    def cmd_DELE(self, arg: bytes) -> None:
        if self._live() is None:
            return
        drop = self._drop(arg)
        if drop is not None:
            drop.deleted = True
            self.send_line(b"+OK marked for deletion")

    def cmd_RSET(self, arg: bytes) -> None:
        if self._live() is None or self.maildrop is None:
            return
        for drop in self.maildrop:
            drop.deleted = False
        self.send_line(b"+OK")

    def cmd_NOOP(self, arg: bytes) -> None:
        if self._live() is not None:
            self.send_line(b"+OK")

    def cmd_QUIT(self, arg: bytes) -> None:
        # RFC 1939 section 6: deletions happen only in the UPDATE state.
        if self.maildrop is not None and self.grant is not None:
            uids = [d.uid for d in self.maildrop if d.deleted]
            if uids:
                self.backend.store.remove(self.grant.user, INBOX, uids)
        self.send_line(b"+OK Farewell.")
        self.close()


def _lines(raw: bytes) -> list[bytes]:
    text = raw.replace(b"\r\n", b"\n").rstrip(b"\n")
    return text.split(b"\n") if text else []


class FakePOPServer(LineServer):
    """Gmail's POP3, over implicit TLS like port 995.

    Args:
        backend: shared with the other fake servers.
        ssl_context: the server's TLS context.
        implicit_tls: True (Gmail has no plain POP port).
        host: the loopback address to bind.
        port: 0 for a free port.
    """

    protocol = "pop"
    connection_class = POPConnection
