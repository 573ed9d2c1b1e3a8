"""The fake Gmail's IMAP session core: commands with literals, state, replies, view.

A session keeps its own view of the selected mailbox (the UIDs it has told the
client about, in sequence-number order) and brings it up to date between
commands with ``* n EXPUNGE``, ``* n EXISTS`` and ``* n FETCH (FLAGS ...)``, as
RFC 3501 section 7.4.1 and 5.5 allow (never ``EXPUNGE`` during FETCH, STORE or
SEARCH, when sequence numbers must not shift).
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import ssl
from collections.abc import Callable, Generator
from typing import ClassVar

from ._imap_fetch import MessageLike
from ._imap_parse import ImapSyntaxError, SequenceSet, Token, flag_list, tokenize
from ._mailstore import Message, NoSuchMailbox
from ._server import Connection, LineServer, _Disconnected

__all__ = ["Exchange", "ImapCommandError", "ImapSession"]

logger = logging.getLogger(__name__)

Exchange = Generator[bytes, bytes, None]
"""A multi-step command: yields continuation lines, receives the client's lines."""

_LITERAL_AT_END = re.compile(rb"~?\{(\d+)(\+?)\}$")

# Which state each command needs (RFC 3501 section 3).
_ANY = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
_NOT_AUTHENTICATED = frozenset({"AUTHENTICATE", "LOGIN"})
_SELECTED = frozenset(
    {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY"}
    | {"MOVE", "UID"}
)


class ImapCommandError(Exception):
    """End the command with a tagged ``NO`` or ``BAD`` carrying ``text``."""

    def __init__(self, status: bytes, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class ImapSession(Connection):
    """Reads commands (literals included), checks state, sends tagged replies.

    Subclasses write ``cmd_<VERB>(tag, args)`` methods; ``UID FETCH`` and the
    other UID commands are ``cmd_UID_FETCH`` and so on. A method answers with
    :meth:`tagged`, raises :class:`ImapCommandError`, or returns a generator
    for a multi-step exchange (AUTHENTICATE, IDLE): each value it yields is a
    continuation line to send, and it is sent back the client's next line.
    """

    protocol: ClassVar[str] = "imap"

    def __init__(self, server: LineServer, sock: socket.socket, peer: str) -> None:
        super().__init__(server, sock, peer)
        self.tag = b"*"
        self.selected: str | None = None
        self.readonly = False
        self.view: list[int] = []
        self.flag_cache: dict[int, frozenset[str]] = {}
        self.max_uid = 0
        self._wake: socket.socket | None = None

    # -- base hooks --

    def is_continuation(self, line: bytes) -> bool:
        return line.startswith(b"+")

    def fault_reply(self, line: bytes) -> tuple[list[bytes], bool]:
        # A reply fault answers for the command: tagged unless it is untagged
        # (``* BYE System Error``), and Gmail hangs up after a BYE.
        if not line.startswith(b"*"):
            line = self.tag + b" " + line
        return [line], line.startswith(b"* BYE")

    def session_end_lines(self, reason: str, text: str | None) -> list[bytes]:
        if text is not None:
            return [text.encode()]
        return [b"* BYE Session expired, please login again."]

    # -- reading and dispatching commands --

    def _read_literals(self, line: bytes) -> bytes:
        """The whole command: each ``{n}`` literal read and inlined as ``{n}CRLF``."""
        parts = [line]
        while m := _LITERAL_AT_END.search(line):
            if not m.group(2):
                # RFC 3501 section 7.5: a synchronizing literal waits for "+".
                self.send_line(b"+ go ahead")
            parts.append(b"\r\n" + self.read_exact(int(m.group(1))))
            line = self.readline()
            parts.append(line)
        return b"".join(parts)

    def handle_line(self, line: bytes) -> None:
        data = self._read_literals(line)
        try:
            tokens = tokenize(data)
        except ImapSyntaxError:
            tag = data.split(b" ", 1)[0]
            if tag and tag not in (b"*", b"+"):
                self.tag = tag
                self.dispatch(
                    "?", lambda: self.tagged(b"BAD", "Could not parse command")
                )
                return
            tokens = []
        first = tokens[0] if tokens else None
        if not isinstance(first, str) or not first or first in ("*", "+"):
            self.send_line(b"* BAD [CLIENTBUG] Invalid tag")
            return
        self.tag = first.encode()
        verb = (
            tokens[1].upper() if len(tokens) > 1 and isinstance(tokens[1], str) else ""
        )
        args = tokens[2:]
        name = verb
        if verb == "UID" and args and isinstance(args[0], str):
            name, args = f"UID {args[0].upper()}", args[1:]
        method = getattr(self, "cmd_" + name.replace(" ", "_"), None)
        if not verb or not name.replace(" ", "").replace("-", "").isalnum():
            method = None
        if method is None:
            text = "Could not parse command" if not verb else "Unknown command"
            self.dispatch(name or "?", lambda: self._bad_command(text))
            return
        self.dispatch(name, lambda: self._run(verb, method, args))

    def _bad_command(self, text: str) -> None:
        self.tagged(b"BAD", f"{text} {self.gmail_id}" if text[0] == "U" else text)

    def _run(
        self,
        verb: str,
        method: Callable[[bytes, list[Token]], Exchange | None],
        args: list[Token],
    ) -> None:
        try:
            self._check_state(verb)
            steps = method(self.tag, args)
            if steps is not None:
                self._drive(steps)
        except ImapSyntaxError:
            self.tagged(b"BAD", "Could not parse command")
        except ImapCommandError as exc:
            self.tagged(exc.status, exc.text)

    def _check_state(self, verb: str) -> None:
        if verb in _ANY:
            return
        if verb in _NOT_AUTHENTICATED:
            if self.grant is not None:
                raise ImapCommandError(b"BAD", "Already in authenticated state.")
            return
        if self.grant is None:
            # Gmail answers commands sent before authentication as unknown.
            raise ImapCommandError(b"BAD", f"Unknown command {self.gmail_id}")
        if verb in _SELECTED and self.selected is None:
            raise ImapCommandError(b"BAD", "Command received in Invalid state.")

    def _drive(self, steps: Exchange) -> None:
        try:
            prompt = next(steps)
            while True:
                self.send_line(prompt)
                prompt = steps.send(self._next_client_line())
        except StopIteration:
            pass
        finally:
            steps.close()

    def _next_client_line(self) -> bytes:
        if self._wake is None:
            return self.readline()
        return self._wait_line_or_wake()

    # -- replies --

    @property
    def user(self) -> str:
        """The authenticated user (only called once authenticated)."""
        assert self.grant is not None
        return self.grant.user

    def tagged(self, status: bytes, text: str | bytes) -> None:
        """Send the command's tagged completion line."""
        raw = text.encode() if isinstance(text, str) else text
        self.send_line(self.tag + b" " + status + b" " + raw)

    def untagged(self, data: bytes) -> None:
        """Send ``* data``, with any literals in it sent as such."""
        self.send_response(b"* " + data)

    def send_response(self, data: bytes) -> None:
        """Send a response whose literals are inlined; the transcript gets lines
        and literal bytes as separate entries, as they were on the wire."""
        pieces: list[tuple[bytes, bytes]] = []
        pos = 0
        # Quoted strings never hold CRLF, so every "{n}CRLF" outside a literal
        # starts one.
        while m := re.compile(rb"\{(\d+)\}\r\n").search(data, pos):
            pieces.append((data[pos : m.end()], data[pos : m.end() - 2]))
            end = m.end() + int(m.group(1))
            pieces.append((data[m.end() : end], data[m.end() : end]))
            pos = end
        pieces.append((data[pos:] + b"\r\n", data[pos:]))
        last = len(pieces) - 1
        with self._wlock:
            # Under COMPRESS the response is flushed once, after its last piece.
            for i, (wire, record) in enumerate(pieces):
                self.send(wire, record=record, flush=i == last)

    # -- the selected mailbox --

    def select_view(self, mailbox: str, messages: tuple[Message, ...]) -> None:
        """Start a view of ``mailbox`` holding ``messages``."""
        self.selected = mailbox
        self.view = [m.uid for m in messages]
        self.flag_cache = {m.uid: frozenset(m.flags) for m in messages}
        self.max_uid = max(self.view, default=0)

    def deselect(self) -> None:
        """Return to the authenticated state."""
        self.selected = None
        self.view = []
        self.flag_cache = {}
        self.max_uid = 0

    def current(self) -> dict[int, Message]:
        """The selected mailbox's messages now, by UID."""
        assert self.selected is not None
        try:
            status = self.backend.store.status(self.user, self.selected)
        except NoSuchMailbox:
            return {}
        return {m.uid: m for m in status.messages}

    def sync(self, *, expunge: bool = True) -> None:
        """Tell the client what changed in the selected mailbox since it last heard."""
        if self.selected is None or self.grant is None:
            return
        current = self.current()
        if expunge:
            for uid in [u for u in self.view if u not in current]:
                seq = self.view.index(uid) + 1
                self.view.remove(uid)
                self.flag_cache.pop(uid, None)
                self.send_line(b"* %d EXPUNGE" % seq)
        new = sorted(uid for uid in current if uid > self.max_uid)
        if new:
            self.view.extend(new)
            for uid in new:
                self.flag_cache[uid] = frozenset(current[uid].flags)
            self.max_uid = new[-1]
            self.send_line(b"* %d EXISTS" % len(self.view))
        for seq, uid in enumerate(self.view, start=1):
            msg = current.get(uid)
            if msg is not None and frozenset(msg.flags) != self.flag_cache.get(uid):
                self.flag_cache[uid] = frozenset(msg.flags)
                self.send_line(
                    b"* %d FETCH (UID %d FLAGS %s)" % (seq, uid, flag_list(msg.flags))
                )

    def resolve(self, spec: Token, *, by_uid: bool) -> list[tuple[int, MessageLike]]:
        """The ``(sequence number, message)`` pairs a sequence or UID set names.

        Messages expunged by another session but not yet reported are skipped.

        Raises:
            ImapSyntaxError: not a sequence set.
        """
        if not isinstance(spec, str):
            raise ImapSyntaxError("expected a sequence set")
        numbers = SequenceSet.parse(spec)
        current = self.current()
        found: list[tuple[int, MessageLike]] = []
        largest = self.view[-1] if by_uid and self.view else len(self.view)
        for seq, uid in enumerate(self.view, start=1):
            if numbers.contains(uid if by_uid else seq, largest) and uid in current:
                found.append((seq, current[uid]))
        return found

    # -- IDLE support --

    def _wait_line_or_wake(self) -> bytes:
        """Read the client's next line; meanwhile report mailbox changes at once.

        Store listeners run in the thread that changed the mailbox; they only
        poke :attr:`_wake`, so every write still happens in this thread.
        """
        assert self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            selector.register(self._wake, selectors.EVENT_READ)
            while True:
                if b"\n" in self._buffer or self.closing:
                    return self.readline()
                if self.inflate_pending or (
                    isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
                ):
                    self._fill()
                    continue
                for key, _ in selector.select():
                    if key.fileobj is self._wake:
                        try:
                            self._wake.recv(4096)
                        except OSError as exc:
                            raise _Disconnected from exc
                        self.sync()
                        self.flush_output()  # IDLE's news goes out at once
                    else:
                        self._fill()
