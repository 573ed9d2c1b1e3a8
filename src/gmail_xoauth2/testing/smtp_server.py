"""The fake Gmail's SMTP submission server (465 implicit TLS, 587 STARTTLS).

It answers with Gmail's lines (``220 smtp.gmail.com ESMTP <id> - gsmtp``,
``235 2.7.0 Accepted``, ``535-5.7.8 ...``), advertises AUTH only under TLS,
delivers to local recipients' INBOX, files a copy in the sender's Sent Mail,
and rewrites a From that is neither the user nor one of their aliases.
RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 3030 (CHUNKING).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import socket
from datetime import datetime, timedelta
from email.utils import formataddr, getaddresses

from ._mailstore import INBOX, SENT, NoSuchUser
from ._server import AuthFailure, Connection, LineServer

__all__ = ["FakeSMTPServer", "SMTPConnection"]

logger = logging.getLogger(__name__)

HOSTNAME = b"smtp.gmail.com"
MAX_SIZE = 35882577
_EHLO_TLS = (
    b"SIZE 35882577",
    b"8BITMIME",
    b"AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH",
    b"ENHANCEDSTATUSCODES",
    b"PIPELINING",
    b"CHUNKING",
    b"SMTPUTF8",
)
# Port 587 before STARTTLS: STARTTLS offered, no AUTH line.
_EHLO_PLAIN = (
    b"SIZE 35882577",
    b"8BITMIME",
    b"STARTTLS",
    b"ENHANCEDSTATUSCODES",
    b"PIPELINING",
    b"CHUNKING",
    b"SMTPUTF8",
)
_PATH = re.compile(rb"^(?:FROM|TO):\s*<([^>]*)>(.*)$", re.IGNORECASE)
_FROM_LINE = re.compile(rb"^From:", re.IGNORECASE)


class SMTPConnection(Connection):
    """One SMTP session, in Gmail's words."""

    protocol = "smtp"
    idle_timeout = timedelta(minutes=5)
    """Gmail drops an idle session with ``451 4.4.2 Timeout``; this is when."""

    def __init__(self, server: LineServer, sock: socket.socket, peer: str) -> None:
        super().__init__(server, sock, peer)
        self.helo: bytes | None = None
        self.mail_from: bytes | None = None
        self.rcpt_to: list[bytes] = []
        self._chunks: list[bytes] = []

    # -- lines Gmail adds to every reply ------------------------------------------

    def _tail(self) -> bytes:
        return b" " + self.gmail_id.encode() + b" - gsmtp"

    def reply(self, line: bytes) -> None:
        """Send a one-line reply ending in Gmail's ``<id> - gsmtp``."""
        self.send_line(line + self._tail())

    def reply_lines(self, code: bytes, lines: list[bytes]) -> None:
        """Send a multi-line reply; Gmail puts its id on the last line only."""
        for text in lines[:-1]:
            self.send_line(code + b"-" + text)
        self.send_line(code + b" " + lines[-1] + self._tail())

    # -- base hooks ---------------------------------------------------------------

    def greet(self) -> None:
        self.send_line(b"220 " + HOSTNAME + b" ESMTP" + self._tail())

    def is_continuation(self, line: bytes) -> bool:
        return line[:3] in (b"334", b"354")

    def fault_reply(self, line: bytes) -> tuple[list[bytes], bool]:
        # 421 and Gmail's "closing connection" replies are followed by a hang-up.
        return [line], line.startswith(b"421") or b"closing connection" in line

    def session_end_lines(self, reason: str, text: str | None) -> list[bytes]:
        if text is not None:
            return [text.encode()]
        return [b"451 4.4.2 Timeout - closing connection." + self._tail()]

    def check_time(self, now: datetime) -> bool:
        if now - self.last_active >= self.idle_timeout:
            self.end_session("idle")
            return False
        return super().check_time(now)

    def handle_line(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        name = verb.upper().decode("ascii", "replace")
        method = getattr(self, "cmd_" + name, None)
        if method is None or not name.isalpha():
            self.dispatch(name, lambda: self.reply(b"502 5.5.1 Unrecognized command."))
            return
        self.dispatch(name, lambda: method(arg.strip()))

    # -- commands -------------------------------------------------------------------

    def _reset(self) -> None:
        self.mail_from = None
        self.rcpt_to = []
        self._chunks = []

    def cmd_EHLO(self, arg: bytes) -> None:
        if not arg:
            self.reply(b"555 5.5.2 Syntax error.")
            return
        self.helo = arg
        self._reset()
        extensions = _EHLO_PLAIN if self._needs_tls() else _EHLO_TLS
        self.send_line(
            b"250-" + HOSTNAME + b" at your service, [" + self.peer.encode() + b"]"
        )
        for ext in extensions[:-1]:
            self.send_line(b"250-" + ext)
        self.send_line(b"250 " + extensions[-1])

    def cmd_HELO(self, arg: bytes) -> None:
        if not arg:
            self.reply(b"555 5.5.2 Syntax error.")
            return
        self.helo = arg
        self._reset()
        self.send_line(b"250 " + HOSTNAME + b" at your service")

    def _needs_tls(self) -> bool:
        return not self.tls

    def cmd_STARTTLS(self, arg: bytes) -> None:
        if self.tls:
            self.reply(b"503 5.5.1 TLS already active.")
            return
        self.send_line(b"220 2.0.0 Ready to start TLS")
        self.starttls()
        # RFC 3207 section 4.2: forget everything learnt before TLS.
        self.helo = None
        self._reset()

    def _must_starttls(self) -> None:
        self.reply_lines(
            b"530",
            [
                b"5.7.0 Must issue a STARTTLS command first. For more information, "
                b"go to",
                b"5.7.0  https://support.google.com/a/answer/3221692 and review "
                b"RFC 3207",
                b"5.7.0 specifications.",
            ],
        )

    def _bad_credentials(self) -> None:
        self.reply_lines(
            b"535",
            [
                b"5.7.8 Username and Password not accepted. Learn more at",
                b"5.7.8  https://support.google.com/mail/?p=BadCredentials",
            ],
        )

    def cmd_AUTH(self, arg: bytes) -> None:
        if self._needs_tls():
            self._must_starttls()
            return
        if self.helo is None:
            self.reply(b"503 5.5.1 EHLO/HELO first.")
            return
        if self.grant is not None:
            self.reply(b"503 5.5.1 Already authenticated.")
            return
        mech_bytes, _, initial_bytes = arg.partition(b" ")
        mechanism = mech_bytes.upper().decode("ascii", "replace")
        initial = initial_bytes.strip() or None
        if mechanism in ("XOAUTH2", "OAUTHBEARER"):
            self._auth_bearer(mechanism, initial)
        elif mechanism in ("PLAIN", "LOGIN", "XOAUTH", "PLAIN-CLIENTTOKEN"):
            self._auth_password(mechanism, initial)
        else:
            self.reply(b"504 5.7.4 Unrecognized authentication type.")

    def _auth_bearer(self, mechanism: str, initial: bytes | None) -> None:
        outcome = self.sasl_exchange(mechanism, initial, challenge_prefix=b"334 ")
        if outcome is None:
            self.reply(b"501 5.7.0 Authentication aborted.")
        elif isinstance(outcome, AuthFailure):
            if outcome.malformed:
                self.reply(b"501 5.5.2 Cannot Decode response")
            else:
                self._bad_credentials()
        elif not self.backend.open_session(self, outcome):
            self.reply(b"454 4.7.0 Too many login attempts, please try again later.")
        else:
            self.send_line(b"235 2.7.0 Accepted")

    def _auth_password(self, mechanism: str, initial: bytes | None) -> None:
        # No password is right at Gmail for an OAuth account; read the
        # exchange to its end, then refuse as Gmail refuses a bad password.
        prompts = [b"VXNlcm5hbWU6", b"UGFzc3dvcmQ6"] if mechanism == "LOGIN" else [b""]
        if initial is not None and prompts:
            prompts = prompts[1:]
        for prompt in prompts:
            self.send_line(b"334 " + prompt)
            answer = self.readline()
            if answer == b"*":
                self.reply(b"501 5.7.0 Authentication aborted.")
                return
            try:
                base64.b64decode(answer, validate=True)
            except (binascii.Error, ValueError):
                self.reply(b"501 5.5.2 Cannot Decode response")
                return
        self._bad_credentials()

    def _need_auth(self) -> bool:
        if self._needs_tls():
            self._must_starttls()
            return True
        if self.grant is None:
            self.reply_lines(
                b"530",
                [
                    b"5.7.0 Authentication Required. Learn more at",
                    b"5.7.0  https://support.google.com/mail/?p=WantAuthError",
                ],
            )
            return True
        return False

    def cmd_MAIL(self, arg: bytes) -> None:
        if self.helo is None:
            self.reply(b"503 5.5.1 EHLO/HELO first.")
            return
        if self._need_auth():
            return
        if self.mail_from is not None:
            self.reply(b"503 5.5.1 Nested MAIL command.")
            return
        match = _PATH.match(arg)
        if match is None or not arg.upper().startswith(b"FROM:"):
            self.reply(b"555 5.5.2 Syntax error.")
            return
        size = re.search(rb"SIZE=(\d+)", match.group(2), re.IGNORECASE)
        if size is not None and int(size.group(1)) > MAX_SIZE:
            self.reply(b"552 5.3.4 Message size exceeds fixed limit.")
            return
        self.mail_from = match.group(1)
        self.reply(b"250 2.1.0 OK")

    def cmd_RCPT(self, arg: bytes) -> None:
        if self._need_auth():
            return
        if self.mail_from is None:
            self.reply(b"503 5.5.1 MAIL first.")
            return
        match = _PATH.match(arg)
        if match is None or not arg.upper().startswith(b"TO:") or not match.group(1):
            self.reply(b"555 5.5.2 Syntax error.")
            return
        self.rcpt_to.append(match.group(1))
        self.reply(b"250 2.1.5 OK")

    def cmd_DATA(self, arg: bytes) -> None:
        if self._need_auth():
            return
        if self.mail_from is None:
            self.reply(b"503 5.5.1 MAIL first.")
            return
        if not self.rcpt_to:
            self.reply(b"503 5.5.1 RCPT first.")
            return
        self.reply(b"354 Go ahead")
        lines: list[bytes] = []
        while True:
            line = self.readline()
            if line == b".":
                break
            # RFC 5321 section 4.5.2: remove the dot the client stuffed.
            lines.append(line[1:] if line.startswith(b".") else line)
        self._accept(b"\r\n".join(lines) + b"\r\n")

    def cmd_BDAT(self, arg: bytes) -> None:
        if self._need_auth():
            return
        parts = arg.split()
        if not parts or not parts[0].isdigit() or len(parts) > 2:
            self.reply(b"555 5.5.2 Syntax error.")
            return
        last = len(parts) == 2 and parts[1].upper() == b"LAST"
        chunk = self.read_exact(int(parts[0]))
        if self.mail_from is None or not self.rcpt_to:
            self._reset()
            self.reply(b"503 5.5.1 MAIL first.")
            return
        self._chunks.append(chunk)
        if last:
            self._accept(b"".join(self._chunks))
        else:
            self.reply(b"250 2.0.0 OK, " + parts[0] + b" octets received.")

    def _accept(self, raw: bytes) -> None:
        assert self.grant is not None
        user = self.grant.user
        message = self._rewrite_from(raw, user)
        store = self.backend.store
        sent_uid = store.append(user, SENT, message, flags=("\\Seen",))
        for rcpt in self.rcpt_to:
            address = rcpt.decode("utf-8", "replace").lower()
            if address == user:
                store.copy(user, SENT, [sent_uid], INBOX)
                continue
            try:
                store.deliver(address, message)
            except NoSuchUser:
                logger.debug("smtp: recipient outside the fake is dropped")
        self._reset()
        stamp = str(int(self.backend.clock().timestamp())).encode()
        self.reply(b"250 2.0.0 OK  " + stamp)

    def _rewrite_from(self, raw: bytes, user: str) -> bytes:
        head, sep, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        for index, line in enumerate(lines):
            if not _FROM_LINE.match(line):
                continue
            end = index + 1
            while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
                end += 1
            value = b" ".join(x.strip() for x in lines[index:end])[5:].strip()
            addresses = getaddresses([value.decode("utf-8", "replace")])
            name, address = addresses[0] if addresses else ("", "")
            if self.backend.can_send_as(user, address):
                return raw
            # Gmail keeps the display name but puts the account's own address.
            new = formataddr((name, user)) if name else user
            lines[index:end] = [b"From: " + new.encode("utf-8")]
            return b"\r\n".join(lines) + sep + body
        return raw

    def cmd_RSET(self, arg: bytes) -> None:
        self._reset()
        self.reply(b"250 2.1.5 Flushed")

    def cmd_NOOP(self, arg: bytes) -> None:
        self.reply(b"250 2.0.0 OK")

    def cmd_VRFY(self, arg: bytes) -> None:
        self.reply(b"252 2.1.5 Send some mail, I'll try my best")

    def cmd_QUIT(self, arg: bytes) -> None:
        self.reply(b"221 2.0.0 closing connection")
        self.close()


class FakeSMTPServer(LineServer):
    """Gmail's SMTP: implicit TLS like port 465, or STARTTLS like 587.

    Args:
        backend: shared with the other fake servers.
        ssl_context: the server's TLS context.
        implicit_tls: True for 465, False for 587 (AUTH only after STARTTLS).
        host: the loopback address to bind.
        port: 0 for a free port.
    """

    protocol = "smtp"
    connection_class = SMTPConnection
