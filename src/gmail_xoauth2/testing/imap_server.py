"""The fake Gmail's IMAP server (implicit TLS, like imap.gmail.com:993), line for line.

Gmail's own lines (greeting, CAPABILITY, the XOAUTH2 error challenge, NO and BYE
texts) are as clients have logged them; see the research notes cited in the
docstrings. Mailbox commands live in :mod:`._imap_mailbox`, the session core in
:mod:`._imap_session`.
"""

from __future__ import annotations

import re

from ._imap_mailbox import MailboxCommands, mailbox_name
from ._imap_parse import ImapSyntaxError, Token, as_text, quote
from ._imap_session import Exchange, ImapCommandError
from ._mailstore import ALL_MAIL, INBOX
from ._server import AuthFailure, LineServer

__all__ = ["FakeIMAPServer", "IMAPConnection"]

# Gmail's pre-authentication CAPABILITY, as clients log it
# (emailjs-imap-client#131, node-imap#715).
CAPABILITIES_PRE_AUTH = (
    b"IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 XYZZY "
    b"SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER "
    b"AUTH=XOAUTH"
)
# After authentication: no SASL-IR or AUTH=, and the extensions Gmail adds
# (email-oauth2-proxy#226), COMPRESS=DEFLATE (RFC 4978) among them.
CAPABILITIES_AUTHENTICATED = (
    b"IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 "
    b"UIDPLUS COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT "
    b"LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584"
)
_INVALID_CREDENTIALS = "[AUTHENTICATIONFAILED] Invalid credentials (Failure)"
_APP_PASSWORD = (
    "[ALERT] Application-specific password required: "
    "https://support.google.com/accounts/answer/185833 (Failure)"
)
_TOO_MANY = "[ALERT] Too many simultaneous connections. (Failure)"
_ABORTED = "Client aborted AUTHENTICATE command."

# XLIST (Gmail's pre-SPECIAL-USE extension) names the system folders its own way.
_XLIST_ATTRIBUTES = {"\\All": "\\AllMail", "\\Junk": "\\Spam", "\\Flagged": "\\Starred"}
_QUOTA_KB = 15 * 1024 * 1024  # 15 GB, Google's free storage


class IMAPConnection(MailboxCommands):
    """One IMAP session, in Gmail's words."""

    def greet(self) -> None:
        greeting = f"* OK Gimap ready for requests from {self.peer} {self.gmail_id}"
        self.send_line(greeting.encode())

    # -- any state --

    def cmd_CAPABILITY(self, tag: bytes, args: list[Token]) -> None:
        caps = (
            CAPABILITIES_PRE_AUTH if self.grant is None else CAPABILITIES_AUTHENTICATED
        )
        self.untagged(b"CAPABILITY " + caps)
        self.tagged(b"OK", f"Thats all she wrote! {self.gmail_id}")

    def cmd_ID(self, tag: bytes, args: list[Token]) -> None:
        self.untagged(
            b'ID ("name" "GImap" "vendor" "Google, Inc." '
            b'"support-url" "https://support.google.com/mail")'
        )
        self.tagged(b"OK", "Success")

    def cmd_NOOP(self, tag: bytes, args: list[Token]) -> None:
        self.sync()
        self.tagged(b"OK", "Success")

    def cmd_LOGOUT(self, tag: bytes, args: list[Token]) -> None:
        self.untagged(b"BYE LOGOUT Requested")
        self.tagged(b"OK", "73 good day (Success)")
        self.close()

    # -- not authenticated --

    def cmd_LOGIN(self, tag: bytes, args: list[Token]) -> None:
        # An account that only allows OAuth: Gmail asks for an app password.
        raise ImapCommandError(b"NO", _APP_PASSWORD)

    def cmd_AUTHENTICATE(self, tag: bytes, args: list[Token]) -> Exchange:
        """SASL with or without an initial response (RFC 4959), as Gmail answers.

        A rejected token gets ``+ <base64 JSON>``; whatever the client answers
        (the empty line SASL asks for, or its token again, as imaplib sends),
        the reply is ``NO [AUTHENTICATIONFAILED]``; ``*`` aborts with BAD.
        Gmail sends the same ``{"status":"400","schemes":"Bearer",...}`` for
        OAUTHBEARER as for XOAUTH2, not RFC 7628's ``invalid_token`` form, so
        the fake does too.
        """
        if not args or len(args) > 2:
            raise ImapSyntaxError("AUTHENTICATE needs a mechanism")
        mechanism = as_text(args[0]).upper()
        if mechanism not in ("XOAUTH2", "OAUTHBEARER", "PLAIN", "PLAIN-CLIENTTOKEN"):
            if mechanism != "XOAUTH":
                raise ImapCommandError(b"BAD", "Unsupported AUTHENTICATE mechanism.")
        initial = as_text(args[1]).encode() if len(args) == 2 else None
        if initial is None:
            initial = yield b"+ "
            if initial == b"*":
                raise ImapCommandError(b"BAD", _ABORTED)
        if mechanism in ("PLAIN", "PLAIN-CLIENTTOKEN"):
            raise ImapCommandError(b"NO", _APP_PASSWORD)
        # RFC 4959: "=" is an empty initial response.
        outcome = self.backend.authenticate(
            mechanism, b"" if initial == b"=" else initial
        )
        if isinstance(outcome, AuthFailure):
            reply = yield b"+ " + self.backend.error_challenge
            if reply == b"*":
                raise ImapCommandError(b"BAD", _ABORTED)
            raise ImapCommandError(b"NO", _INVALID_CREDENTIALS)
        if not self.backend.open_session(self, outcome):
            raise ImapCommandError(b"NO", _TOO_MANY)
        self.untagged(b"CAPABILITY " + CAPABILITIES_AUTHENTICATED)
        self.tagged(b"OK", f"{outcome.user} authenticated (Success)")

    # -- authenticated --

    def _list(self, args: list[Token], *, verb: bytes) -> None:
        if args and isinstance(args[0], list):
            args = args[1:]  # RFC 5258 selection options: ignored
        if len(args) < 2:
            raise ImapSyntaxError("LIST needs a reference and a pattern")
        reference = as_text(args[0])
        patterns = args[1] if isinstance(args[1], list) else [args[1]]
        texts = [reference + as_text(p) for p in patterns]
        if texts == [""]:
            self.untagged(verb + b' (\\Noselect) "/" ""')
            self.tagged(b"OK", "Success")
            return
        regexes = [_wildcard(text) for text in texts]
        for box in self.backend.store.mailboxes(self.user):
            name = box.name
            if not any(r.fullmatch(name) for r in regexes):
                continue
            attributes = list(box.attributes)
            if verb == b"XLIST":
                attributes = [_XLIST_ATTRIBUTES.get(a, a) for a in attributes]
                if name == INBOX:
                    attributes.append("\\Inbox")
                    name = "Inbox"
            line = f"({' '.join(attributes)}) "
            self.untagged(verb + b" " + line.encode() + b'"/" ' + quote(name))
        self.tagged(b"OK", "Success")

    def cmd_LIST(self, tag: bytes, args: list[Token]) -> None:
        self._list(args, verb=b"LIST")

    def cmd_LSUB(self, tag: bytes, args: list[Token]) -> None:
        self._list(args, verb=b"LSUB")

    def cmd_XLIST(self, tag: bytes, args: list[Token]) -> None:
        self._list(args, verb=b"XLIST")

    def cmd_NAMESPACE(self, tag: bytes, args: list[Token]) -> None:
        self.untagged(b'NAMESPACE (("" "/")) NIL NIL')
        self.tagged(b"OK", "Success")

    def cmd_ENABLE(self, tag: bytes, args: list[Token]) -> None:
        wanted = [as_text(a).upper() for a in args]
        enabled = [w for w in wanted if w in ("CONDSTORE", "UTF8=ACCEPT")]
        self.untagged(" ".join(["ENABLED", *enabled]).encode())
        self.tagged(b"OK", "Success")

    def cmd_COMPRESS(self, tag: bytes, args: list[Token]) -> None:
        """RFC 4978: raw DEFLATE both ways from the byte after the OK line.

        The transcript still records the plain lines; each reply is flushed
        (Z_SYNC_FLUSH) so the client can read it whole.
        """
        if len(args) != 1 or as_text(args[0]).upper() != "DEFLATE":
            raise ImapCommandError(b"BAD", "Could not parse command")
        if self.compressed:
            raise ImapCommandError(b"NO", "[COMPRESSIONACTIVE] Already compressing")
        self.tagged(b"OK", "Success")
        self.start_compression()

    def cmd_SUBSCRIBE(self, tag: bytes, args: list[Token]) -> None:
        self.tagged(b"OK", "Success")  # Gmail lists every folder as subscribed

    cmd_UNSUBSCRIBE = cmd_SUBSCRIBE

    def cmd_CREATE(self, tag: bytes, args: list[Token]) -> None:
        if len(args) != 1:
            raise ImapSyntaxError("CREATE needs a mailbox")
        name = mailbox_name(args[0]).rstrip("/")
        try:
            self.backend.store.create(self.user, name)
        except ValueError:
            raise ImapCommandError(
                b"NO", f"[ALREADYEXISTS] Duplicate folder name {name} (Failure)"
            ) from None
        self.tagged(b"OK", "Success")

    def cmd_DELETE(self, tag: bytes, args: list[Token]) -> None:
        self._change_folder("delete", args, 1)

    def cmd_RENAME(self, tag: bytes, args: list[Token]) -> None:
        self._change_folder("rename", args, 2)

    def _change_folder(self, operation: str, args: list[Token], count: int) -> None:
        if len(args) != count:
            raise ImapSyntaxError(f"{operation.upper()} needs {count} mailbox(es)")
        names = [mailbox_name(a) for a in args]
        if names[0] == INBOX or names[0].startswith("[Gmail]"):
            raise ImapCommandError(
                b"NO", f"[CANNOT] Invalid folder: {names[0]} (Failure)"
            )
        change = getattr(self.backend.store, operation, None)
        if change is None:
            raise ImapCommandError(b"NO", f"[CANNOT] {operation.upper()} unsupported")
        try:
            change(self.user, *names)
        except (KeyError, ValueError):
            raise ImapCommandError(
                b"NO", f"[NONEXISTENT] Unknown Mailbox: {names[0]} (Failure)"
            ) from None
        self.tagged(b"OK", "Success")

    def cmd_GETQUOTAROOT(self, tag: bytes, args: list[Token]) -> None:
        if len(args) != 1:
            raise ImapSyntaxError("GETQUOTAROOT needs a mailbox")
        self.untagged(b"QUOTAROOT " + quote(mailbox_name(args[0])) + b' ""')
        self._quota()

    def cmd_GETQUOTA(self, tag: bytes, args: list[Token]) -> None:
        self._quota()

    def _quota(self) -> None:
        used = sum(len(raw) for raw in self.backend.store.messages(self.user, ALL_MAIL))
        self.untagged(b'QUOTA "" (STORAGE %d %d)' % (used // 1024, _QUOTA_KB))
        self.tagged(b"OK", "Success")


def _wildcard(pattern: str) -> re.Pattern[str]:
    # RFC 3501 section 6.3.8: "*" matches anything, "%" anything but the "/".
    regex = "".join(
        ".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern
    )
    if pattern.upper() == INBOX:
        return re.compile(regex, re.IGNORECASE)
    return re.compile(regex)


class FakeIMAPServer(LineServer):
    """Gmail's IMAP on loopback: ``FakeIMAPServer(backend, *, ssl_context, ...)``.

    Fault controls (``backend.faults.fail_next("imap", command, ...)``) match
    the command verb in upper case: ``"AUTHENTICATE"``, ``"SELECT"``,
    ``"FETCH"``, ``"APPEND"``, ``"IDLE"`` ... UID commands are named with both
    words, ``"UID FETCH"``, ``"UID STORE"`` (so ``"FETCH"`` does not match
    ``UID FETCH``); ``"*"`` matches any command and ``"GREETING"`` the
    greeting. A ``"reply"`` line is tagged with the command's tag unless it
    starts with ``*``; after ``* BYE ...`` the server hangs up.
    """

    protocol = "imap"
    connection_class = IMAPConnection
