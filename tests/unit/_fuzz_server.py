"""A hostile server that plays a generated conversation, for the fuzz tests.

A :class:`Conversation` is what a server says: a greeting, then one reply per
command the client sends. Each reply is a tuple of parts sent one ``sendall``
(so one TLS record or more) apiece; a part is raw bytes, a :class:`Flood`
(bytes repeated until the client hangs up) or a :class:`Hole`, filled in from
what the client just sent: the reply a correct server would give, the client's
IMAP tag, or the client's own line echoed back (the SASL string included, as a
server quoting a refused AUTH line would).

:class:`Player` is the :mod:`_hostile` script that plays a conversation. The server
waits for each command before replying; when the client stays silent for
``idle`` seconds (it is waiting for more of a reply, say the rest of a literal),
the remaining replies are sent without waiting, and the server hangs up. So a
conversation costs at most one ``idle`` wait, and every run ends with the
server closing the connection.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from _hostile import Closed, Peer


class Hole(enum.Enum):
    """A part of a reply filled in from what the client sent."""

    ANSWER = "the reply a correct server gives to the client's last command"
    TAG = "the tag of the client's last IMAP command"
    ECHO = "the client's last line, verbatim"
    SECRET = "the last word of the client's AUTH line: its SASL string"

    def __repr__(self) -> str:
        # Falsifying examples print as code that can be pasted into @example.
        return f"Hole.{self.name}"


@dataclass(frozen=True)
class Flood:
    """``data`` sent over and over until the client hangs up (or 4 MiB)."""

    data: bytes


FLOOD_LIMIT = 4 * 1024 * 1024

Part = bytes | Hole | Flood
Reply = tuple[Part, ...]


@dataclass(frozen=True)
class Conversation:
    """What a server says: a greeting, then a reply to each command in turn."""

    protocol: str  # "imap", "pop" or "smtp"
    greeting: Reply
    replies: tuple[Reply, ...]


@dataclass
class _Heard:
    """What the client has said on this connection so far."""

    line: bytes | None = None  # None before the first command
    tag: bytes = b"*"
    verb: bytes = b""
    words: list[bytes] = field(default_factory=list)
    secret: bytes = b""  # the SASL string of the last AUTH line
    awaiting_response: bool = False  # the server asked for a SASL response


_IMAP_CAPS = b"IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=OAUTHBEARER"
_SMTP_EHLO = (
    b"250-smtp.gmail.com at your service\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
    b"250-AUTH LOGIN PLAIN XOAUTH2 OAUTHBEARER\r\n250 SMTPUTF8\r\n"
)
# What a client sends to end an exchange after an error challenge: an empty
# line (XOAUTH2), base64 of ^A (OAUTHBEARER, RFC 7628) or ``*`` (IMAP cancel).
_ABORTS = (b"", b"AQ==", b"*")


def _imap_answer(heard: _Heard) -> bytes:
    tag = heard.tag
    if heard.line is None:
        return b"* OK [CAPABILITY " + _IMAP_CAPS + b"] Gimap ready\r\n"
    if heard.verb == b"":
        heard.awaiting_response = False
        if heard.line in _ABORTS:
            return tag + b" NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n"
        return tag + b" OK alice@example.com authenticated (Success)\r\n"
    if heard.verb == b"CAPABILITY":
        return b"* CAPABILITY " + _IMAP_CAPS + b"\r\n" + tag + b" OK done\r\n"
    if heard.verb == b"AUTHENTICATE" and len(heard.words) == 3:
        heard.awaiting_response = True
        return b"+ \r\n"
    if heard.verb == b"LOGOUT":
        return b"* BYE LOGOUT Requested\r\n" + tag + b" OK 73 GNU\r\n"
    if heard.verb == b"NOOP":
        return b"* 3 EXISTS\r\n" + tag + b" OK Success\r\n"
    return tag + b" OK Success\r\n"


def _pop_answer(heard: _Heard) -> bytes:
    if heard.line is None:
        return b"+OK Gpop ready\r\n"
    if heard.awaiting_response:
        heard.awaiting_response = False
        if heard.line in _ABORTS:
            return b"-ERR [AUTH] Invalid credentials.\r\n"
        return b"+OK Welcome.\r\n"
    if heard.line in _ABORTS:
        return b"-ERR [AUTH] Invalid credentials.\r\n"
    verb = heard.verb
    if verb == b"AUTH" and len(heard.words) == 2:
        heard.awaiting_response = True
        return b"+ \r\n"
    answers = {
        b"AUTH": b"+OK Welcome.\r\n",
        b"CAPA": b"+OK Capability list follows\r\nUSER\r\nSASL XOAUTH2 OAUTHBEARER"
        b"\r\nUIDL\r\n.\r\n",
        b"STAT": b"+OK 2 320\r\n",
        b"LIST": b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n",
        b"UIDL": b"+OK\r\n1 GmailId1\r\n2 GmailId2\r\n.\r\n",
        b"QUIT": b"+OK Farewell.\r\n",
    }
    return answers.get(verb, b"+OK\r\n")


def _smtp_answer(heard: _Heard) -> bytes:
    if heard.line is None:
        return b"220 smtp.gmail.com ESMTP ready\r\n"
    if heard.line in _ABORTS:
        return (
            b"535-5.7.8 Username and Password not accepted.\r\n"
            b"535 5.7.8 Learn more at https://support.google.com/mail\r\n"
        )
    answers = {
        b"EHLO": _SMTP_EHLO,
        b"HELO": b"250 smtp.gmail.com at your service\r\n",
        b"AUTH": b"235 2.7.0 Accepted\r\n",
        b"MAIL": b"250 2.1.0 OK\r\n",
        b"RCPT": b"250 2.1.5 OK\r\n",
        b"DATA": b"354 Go ahead\r\n",
        b".": b"250 2.0.0 OK 1700000000 queued\r\n",
        b"NOOP": b"250 2.0.0 OK\r\n",
        b"RSET": b"250 2.1.5 Flushed\r\n",
        b"QUIT": b"221 2.0.0 closing connection\r\n",
    }
    return answers.get(heard.verb, b"502 5.5.1 Unrecognized command.\r\n")


_ANSWERS: dict[str, Callable[[_Heard], bytes]] = {
    "imap": _imap_answer,
    "pop": _pop_answer,
    "smtp": _smtp_answer,
}


def _note(heard: _Heard, protocol: str, line: bytes) -> None:
    """Remember what the client just sent: its verb, tag and SASL string."""
    heard.line = line
    words = line.split(b" ")
    heard.words = words
    if protocol == "imap":
        if len(words) >= 2 and words[0].isalnum():
            heard.tag, heard.verb = words[0], words[1].upper()
        else:
            heard.verb = b""  # a SASL response, not a command
    elif line == b".":
        heard.verb = b"."  # the end of an SMTP message
    else:
        heard.verb = words[0].upper()
    sasl = heard.verb in (b"AUTH", b"AUTHENTICATE") or heard.awaiting_response
    if sasl and len(words[-1]) > 8:
        heard.secret = words[-1]


def _render(reply: Reply, heard: _Heard, protocol: str) -> list[bytes | Flood]:
    chunks: list[bytes | Flood] = []
    for part in reply:
        if part is Hole.ANSWER:
            chunks.append(_ANSWERS[protocol](heard))
        elif part is Hole.TAG:
            chunks.append(heard.tag)
        elif part is Hole.ECHO:
            chunks.append(heard.line or b"")
        elif part is Hole.SECRET:
            chunks.append(heard.secret)
        else:
            chunks.append(part)
    return chunks


def _say(peer: Peer, reply: Reply, heard: _Heard, protocol: str) -> None:
    for chunk in _render(reply, heard, protocol):
        if isinstance(chunk, Flood):
            peer.flood(chunk.data, limit=FLOOD_LIMIT)
        else:
            peer.send(chunk, crlf=False)


class _Ear:
    """Reads the client's commands, with a wait of ``idle`` seconds at most."""

    def __init__(self, peer: Peer, idle: float) -> None:
        self.peer = peer
        self.idle = idle
        self.silent = False

    def _line(self) -> bytes | None:
        peer = self.peer
        while b"\n" not in peer.buffer:
            try:
                chunk = peer.sock.recv(65536)
            except TimeoutError:
                self.silent = True
                return None
            except OSError as exc:
                raise Closed from exc
            if not chunk:
                raise Closed
            peer.buffer += chunk
        line, peer.buffer = peer.buffer.split(b"\n", 1)
        line = line.rstrip(b"\r")
        peer.server.received.append(line)
        return line

    def command(self, heard: _Heard) -> bytes | None:
        """The next command (a whole message after SMTP DATA), or None if silent."""
        if self.silent:
            return None
        self.peer.sock.settimeout(self.idle)
        try:
            line = self._line()
            if line is not None and heard.verb == b"DATA":
                # The message follows the 354, up to a line holding one dot.
                while line not in (b".", None):
                    line = self._line()
            return line
        finally:
            self.peer.sock.settimeout(_SEND_SECONDS)


# A client that stops reading without closing its socket must not wedge the
# server thread (the harness cannot interrupt a blocked TLS socket).
_SEND_SECONDS = 10.0


class Player:
    """A :mod:`_hostile` script that plays a conversation on every connection.

    ``silences`` counts the connections on which the client fell silent for
    ``idle`` seconds (the rest of the conversation was then sent unasked).
    """

    def __init__(self, conversation: Conversation, *, idle: float) -> None:
        self.conversation = conversation
        self.idle = idle
        self.silences = 0

    def __call__(self, peer: Peer) -> None:
        protocol = self.conversation.protocol
        heard = _Heard()
        ear = _Ear(peer, self.idle)
        peer.sock.settimeout(_SEND_SECONDS)
        # Each part goes out at once: Nagle's algorithm would hold a small write
        # behind the TLS session tickets until the client's delayed ACK (40 ms).
        peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            _say(peer, self.conversation.greeting, heard, protocol)
            for reply in self.conversation.replies:
                line = ear.command(heard)
                if line is not None:
                    _note(heard, protocol, line)
                _say(peer, reply, heard, protocol)
        finally:
            self.silences += ear.silent
            # Hang up: the client must see the end of the stream, and the
            # harness's drain() then returns at once.
            try:
                peer.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            peer.sock.close()
