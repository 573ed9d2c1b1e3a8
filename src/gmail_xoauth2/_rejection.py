"""What to tell a user whose token the server rejected: one message for every protocol.

IMAP, POP and SMTP connections and ``gmail-xoauth2 check`` all say it the same
way: who logged in where with what, what the server said (its error challenge
decoded), and the likely causes, the most likely first.
"""

from __future__ import annotations

from .sasl import MAIL_SCOPE

__all__ = ["one_line", "rejection_message"]

_PROTOCOL_NAMES = {"imap": "IMAP", "pop": "POP3", "smtp": "SMTP"}


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and other control characters become
    spaces, and runs of spaces one (an SMTP reply spans several lines)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def rejection_message(
    *,
    protocol: str,
    server: str,
    user: str,
    mechanism: str,
    server_text: str,
    status: str | None,
    scope: str | None,
) -> str:
    """The message of an :class:`~gmail_xoauth2.AuthenticationFailed`, on one line.

    Args:
        protocol: ``"imap"``, ``"pop"`` or ``"smtp"``.
        server: ``host:port``.
        user: the address the login was for.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        server_text: the server's refusal, already scrubbed of secrets.
        status: the error challenge's ``status``, None without a challenge.
        scope: the error challenge's ``scope``, if any.
    """
    name = _PROTOCOL_NAMES.get(protocol, protocol.upper())
    if status is None:
        decoded = "no error challenge"
        intro = "if the reply does not say why, the likely causes, most likely first"
    else:
        decoded = f"status {status}" + (f", scope {scope}" if scope else "")
        intro = "likely causes, most likely first"
    wanted = scope if scope and scope != MAIL_SCOPE else MAIL_SCOPE
    return (
        f"{name} server {server} rejected the {mechanism} login of {user} "
        f'({decoded}): "{one_line(server_text)}"; {intro}: '
        "1. the access token is expired or revoked: get a new one "
        "(`gmail-xoauth2 token --force-refresh`; if the refresh is refused too, "
        "run `gmail-xoauth2 authorize` again); "
        f"2. the token lacks the {wanted} scope: authorize again with it; "
        f"3. the token was authorized for another account than {user}: "
        f"authorize as {user}, or log in as the account that authorized it"
    )
