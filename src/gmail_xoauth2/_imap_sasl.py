"""AUTHENTICATE for gmail_xoauth2.IMAP4, done by hand.

imaplib's ``authenticate()`` has no SASL-IR (always two round trips) and its
authobject pattern answers Gmail's error challenge with the token again. Here
the initial response rides on the command line when the server advertises
SASL-IR (RFC 4959), and the error challenge is answered as Google's XOAUTH2
page and RFC 7628 ask, so the final ``NO`` can be read and reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from . import sasl
from ._imap_errors import IMAPAuthenticationFailed, IMAPTooManyConnections
from ._imap_policy import as_bytes, text
from ._limits import SASL_ROUNDS
from ._mailconn import ABORT, initial_response
from ._redact import REDACTED, get_logger
from ._rejection import one_line, rejection_message
from .errors import ChallengeDecodeError, ProtocolError

if TYPE_CHECKING:
    from .imap import IMAP4

__all__ = ["SaslExchange", "authenticate", "check_too_many"]

_log = get_logger("gmail_xoauth2.imap")

_CRLF = b"\r\n"
# Gmail: "NO [ALERT] Too many simultaneous connections. (Failure)".
_TOO_MANY = "too many simultaneous connections"


class SaslExchange:
    """One AUTHENTICATE exchange, free of I/O: what to send, what a reply means.

    The sync :class:`~gmail_xoauth2.IMAP4` and the asyncio one drive it over
    their own I/O. With SASL-IR the initial response rides on the command line
    (one round trip); Gmail answers a bad token with ``+ <base64 JSON>``, which
    is answered with an empty line (XOAUTH2) or ``^A`` (OAUTHBEARER, RFC 7628
    section 3.2.3) so that the server's ``NO`` follows. At most
    ``SASL_ROUNDS`` continuations are answered.

    Args:
        mechanism: ``XOAUTH2`` or ``OAUTHBEARER``.
        initial: the base64 initial response (registered with the scrubber).
        inline: the server offers SASL-IR.
        user: the address logging in, for messages.
        host: the server, for messages.
        port: its port, for messages.
    """

    def __init__(
        self,
        *,
        mechanism: str,
        initial: bytes,
        inline: bool,
        user: str,
        host: str,
        port: int,
    ) -> None:
        self.mechanism = mechanism
        self.user = user
        self.host = host
        self.port = port
        self._initial = initial
        self._pending = not inline
        self._rounds = 0
        self.challenge: bytes | None = None

    def command(self, tag: bytes) -> tuple[bytes, bytes]:
        """The command line to send (without CRLF) and its redacted trace."""
        head = tag + b" AUTHENTICATE " + self.mechanism.encode("ascii")
        _log.debug(
            "AUTHENTICATE %s sent (initial response %s)",
            self.mechanism,
            "awaits a continuation" if self._pending else "on the command line",
        )
        if self._pending:
            return head, head
        return head + b" " + self._initial, head + b" " + REDACTED.encode()

    def answer(self, continuation: bytes) -> tuple[bytes, bytes]:
        """The line answering a continuation (``+ ...``), and its trace.

        Raises:
            ProtocolError: more continuations than any mechanism here has.
        """
        self._rounds += 1
        if self._rounds > SASL_ROUNDS or not (self._pending or self.challenge is None):
            # The initial response, then the error challenge: no mechanism
            # spoken here has another round, so the server is broken.
            raise ProtocolError(
                f"{self.host}:{self.port} kept asking for more during "
                f"AUTHENTICATE {self.mechanism} ({self._rounds} continuations); "
                "the connection was closed"
            )
        if self._pending:
            self._pending = False
            return self._initial, REDACTED.encode()
        self.challenge = continuation
        answer = ABORT[self.mechanism]
        _log.debug("error challenge received; answering it to end the exchange")
        return answer, answer

    def refused(self, typ: str, data: list[Any]) -> IMAPAuthenticationFailed:
        """The error for a final ``NO``/``BAD`` (too many connections raises).

        Raises:
            IMAPTooManyConnections: Gmail's per-account connection limit.
        """
        server_text = one_line(text(data[-1])) if data else ""
        check_too_many(self.user, [server_text])
        # The whole final line without its tag, as POP3 (-ERR ...) and SMTP (535 ...).
        return _failure(self, f"{typ} {server_text}".strip(), self.challenge)


def authenticate(imap: IMAP4, token: str) -> None:
    """Run one AUTHENTICATE exchange with ``token``; on success the state is AUTH.

    Raises:
        IMAPAuthenticationFailed: the server refused; ``status`` and ``scope``
            come from the decoded error challenge when there was one.
        IMAPTooManyConnections: Gmail's per-account connection limit.
    """
    mech = imap.mechanism
    exchange = SaslExchange(
        mechanism=mech,
        initial=initial_response(
            mech, imap.user, token, host=imap.host, port=imap.port
        ),
        inline="SASL-IR" in imap.capabilities,
        user=imap.user,
        host=imap.host,
        port=imap.port,
    )
    tag: bytes = imap._new_tag()
    line, trace = exchange.command(tag)
    imap._trace_out(trace)
    imap.send(line + _CRLF)
    while imap.tagged_commands.get(tag) is None:
        check_too_many(imap.user, imap.untagged_responses.get("BYE"))
        imap._check_bye()
        if imap._get_response() is not None:
            continue
        line, trace = exchange.answer(as_bytes(imap.continuation_response))
        imap._trace_out(trace)
        imap.send(line + _CRLF)
    typ, data = cast(tuple[str, list[Any]], imap.tagged_commands.pop(tag))
    if typ == "OK":
        imap.state = "AUTH"
        # Dovecot sends [CAPABILITY ...] in the OK; Gmail does not.
        caps = imap.untagged_responses.pop("CAPABILITY", None)
        if caps and isinstance(caps[-1], bytes):
            imap.capabilities = tuple(
                caps[-1].decode("ascii", "replace").upper().split()
            )
        _log.debug("authenticated as %s with %s", imap.user, mech)
        return
    raise exchange.refused(typ, data)


def _failure(
    exchange: SaslExchange, server_text: str, challenge: bytes | None
) -> IMAPAuthenticationFailed:
    status = scope = None
    if challenge:
        try:
            decoded = sasl.decode_error_challenge(challenge)
            status, scope = decoded.status, decoded.scope
        except ChallengeDecodeError:
            _log.debug("the server's error challenge could not be decoded")
    return IMAPAuthenticationFailed(
        rejection_message(
            protocol="imap",
            server=f"{exchange.host}:{exchange.port}",
            user=exchange.user,
            mechanism=exchange.mechanism,
            server_text=server_text,
            status=status,
            scope=scope,
        ),
        protocol="imap",
        mechanism=exchange.mechanism,
        status=status,
        scope=scope,
        server_text=server_text,
    )


def check_too_many(user: str, texts: list[Any] | None) -> None:
    """Raise IMAPTooManyConnections if one of ``texts`` is Gmail's limit message."""
    for item in texts or ():
        line = one_line(text(item))
        if _TOO_MANY in line.lower():
            raise IMAPTooManyConnections(
                f"Gmail refused the login for {user}: {line}. Gmail allows "
                "about 15 simultaneous IMAP connections per account, shared by "
                "every client (phones and other mail programs count too); close "
                "some and try again"
            )
