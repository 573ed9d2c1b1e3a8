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

__all__ = ["authenticate", "check_too_many"]

_log = get_logger("gmail_xoauth2.imap")

_CRLF = b"\r\n"
# Gmail: "NO [ALERT] Too many simultaneous connections. (Failure)".
_TOO_MANY = "too many simultaneous connections"


def authenticate(imap: IMAP4, token: str) -> None:
    """Run one AUTHENTICATE exchange with ``token``; on success the state is AUTH.

    With SASL-IR the exchange is one round trip. Gmail answers a bad token
    with ``+ <base64 JSON>``; the client must then send an empty line
    (XOAUTH2) or ``^A`` (OAUTHBEARER, RFC 7628 section 3.2.3), and the
    server's ``NO`` follows.

    Raises:
        IMAPAuthenticationFailed: the server refused; ``status`` and ``scope``
            come from the decoded error challenge when there was one.
        IMAPTooManyConnections: Gmail's per-account connection limit.
    """
    mech = imap.mechanism
    initial = initial_response(mech, imap.user, token, host=imap.host, port=imap.port)
    tag: bytes = imap._new_tag()
    head = tag + b" AUTHENTICATE " + mech.encode("ascii")
    pending = "SASL-IR" not in imap.capabilities
    if pending:
        imap._trace_out(head)
        imap.send(head + _CRLF)
    else:
        imap._trace_out(head + b" " + REDACTED.encode())
        imap.send(head + b" " + initial + _CRLF)
    _log.debug(
        "AUTHENTICATE %s sent (initial response %s)",
        mech,
        "awaits a continuation" if pending else "on the command line",
    )
    challenge: bytes | None = None
    rounds = 0
    while imap.tagged_commands.get(tag) is None:
        check_too_many(imap.user, imap.untagged_responses.get("BYE"))
        imap._check_bye()
        if imap._get_response() is not None:
            continue
        rounds += 1
        if rounds > SASL_ROUNDS or not (pending or challenge is None):
            # The initial response, then the error challenge: no mechanism
            # spoken here has another round, so the server is broken.
            raise ProtocolError(
                f"{imap.host}:{imap.port} kept asking for more during "
                f"AUTHENTICATE {mech} ({rounds} continuations); the connection "
                "was closed"
            )
        if pending:
            imap._trace_out(REDACTED.encode())
            imap.send(initial + _CRLF)
            pending = False
        else:
            challenge = as_bytes(imap.continuation_response)
            answer = ABORT[mech]
            _log.debug("error challenge received; answering it to end the exchange")
            imap._trace_out(answer)
            imap.send(answer + _CRLF)
    typ, data = cast(tuple[str, list[Any]], imap.tagged_commands.pop(tag))
    server_text = one_line(text(data[-1])) if data else ""
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
    check_too_many(imap.user, [server_text])
    # The whole final line without its tag, as POP3 (-ERR ...) and SMTP (535 ...).
    raise _failure(imap, f"{typ} {server_text}".strip(), challenge)


def _failure(
    imap: IMAP4, server_text: str, challenge: bytes | None
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
            server=f"{imap.host}:{imap.port}",
            user=imap.user,
            mechanism=imap.mechanism,
            server_text=server_text,
            status=status,
            scope=scope,
        ),
        protocol="imap",
        mechanism=imap.mechanism,
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
