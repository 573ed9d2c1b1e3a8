"""Drive a running fake Gmail from another process: control endpoint and client.

The fake Google's HTTP server answers ``POST /_control/<action>`` with a JSON object
body, from loopback only:

``expire-tokens {"user": U}``
    :meth:`FakeGmail.expire_tokens`: U's access tokens expire now and U's sessions end.
``end-sessions {"user": U, "protocol": "imap" | "pop" | "smtp" | null}``
    :meth:`FakeGmail.end_sessions`: Gmail's session-expired close.
``deliver {"user": U, "mailbox": "INBOX", "message": "<RFC 5322 text>"}``
    :meth:`FakeGmail.deliver`: the message gets the mailbox's next UID.

``gmail-xoauth2 fake-gmail`` prints the control URL (and the environment variable
that carries it) and runs :func:`serve_fake_gmail`; its control subcommands call
:func:`post_control`.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ._google_http import Reply
from ._mailstore import INBOX, NoSuchMailbox, NoSuchUser

if TYPE_CHECKING:
    from .._tokens import Clock
    from .gmail import FakeGmail

__all__ = [
    "ACTIONS",
    "CONTROL_ENV",
    "ControlError",
    "control_reply",
    "display_host",
    "is_loopback",
    "post_control",
    "serve_fake_gmail",
]

CONTROL_ENV = "GMAIL_XOAUTH2_FAKE_CONTROL"
ACTIONS = ("expire-tokens", "end-sessions", "deliver")
_PROTOCOLS = ("imap", "pop", "smtp")


class ControlError(Exception):
    """The control endpoint refused a request, or could not be reached.

    Attributes:
        status: the HTTP status, or None if nothing answered.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(host: str, /) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def display_host(host: str, /) -> str:
    """The name to give mail programs for a loopback ``host``: ``localhost``.

    The fake's certificate names ``localhost``, ``127.0.0.1`` and ``::1``, but
    mbsync and offlineimap check only DNS names (``certificate owner does not
    match hostname 127.0.0.1``), so a printed configuration says ``localhost``.
    """
    return "localhost" if is_loopback(host) else host


# -- the server side --------------------------------------------------------------


def _bad(status: int, error: str, description: str) -> Reply:
    return Reply(status, {"error": error, "error_description": description})


def control_reply(gmail: FakeGmail, action: str, data: Mapping[str, object]) -> Reply:
    """Carry out one control ``action`` on ``gmail``; the reply says what happened."""
    if action not in ACTIONS:
        return _bad(
            404,
            "unknown_action",
            f"no control action {action!r}; the actions are {', '.join(ACTIONS)}",
        )
    user = data.get("user")
    if not isinstance(user, str) or not user:
        return _bad(400, "invalid_request", '"user" (an account address) is required')
    known = {u.lower(): u for u in gmail.users}
    if user.lower() not in known:
        return _bad(
            404,
            "unknown_user",
            f"no user {user!r} on this fake; its users are {', '.join(gmail.users)}",
        )
    user = known[user.lower()]
    if action == "expire-tokens":
        gmail.expire_tokens(user)
        return Reply(200, {"user": user, "expired": True})
    if action == "end-sessions":
        protocol = data.get("protocol")
        if protocol is not None and protocol not in _PROTOCOLS:
            return _bad(
                400,
                "invalid_request",
                f'"protocol" must be one of {", ".join(_PROTOCOLS)} (or null for all)',
            )
        ended = gmail.end_sessions(
            user, protocol if isinstance(protocol, str) else None
        )
        return Reply(200, {"user": user, "protocol": protocol, "ended": ended})
    mailbox = data.get("mailbox", INBOX)
    message = data.get("message")
    if not isinstance(mailbox, str) or not mailbox:
        return _bad(400, "invalid_request", '"mailbox" must be a mailbox name')
    if not isinstance(message, str) or not message.strip():
        return _bad(
            400, "invalid_request", '"message" (the raw RFC 5322 text) is required'
        )
    # Bytes that are not UTF-8 travel as lone surrogates (post_control's
    # surrogateescape); turn them back into the bytes they were.
    raw = message.encode("utf-8", "surrogateescape")
    try:
        uid = gmail.deliver(user, raw, mailbox)
    except (NoSuchMailbox, NoSuchUser):
        return _bad(404, "unknown_mailbox", f"{user} has no mailbox {mailbox!r}")
    return Reply(200, {"user": user, "mailbox": mailbox, "uid": uid})


# -- the client side --------------------------------------------------------------


def post_control(
    url: str, action: str, payload: Mapping[str, object], *, timeout: float = 30
) -> dict[str, object]:
    """POST ``payload`` to ``<url>/<action>``; return the JSON answer.

    Args:
        url: the control URL the fake printed (``http://127.0.0.1:PORT/_control``).
        action: one of :data:`ACTIONS`.
        payload: the JSON object to send.
        timeout: seconds to wait for the answer.

    Raises:
        ControlError: the URL is not loopback, nothing answers, or the fake
            refused the request (its ``error_description`` is the message).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not is_loopback(parts.hostname):
        raise ControlError(
            f"{url!r} is not a loopback http:// URL; use the control URL "
            "`gmail-xoauth2 fake-gmail` printed"
        )
    body = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(
        url.rstrip("/") + "/" + action,
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # No proxy, whatever http_proxy says: the fake is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            answer = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        with exc:
            text = exc.read().decode("utf-8", "replace")
        raise ControlError(_description(text, exc.code), exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ControlError(
            f"no fake Gmail answers at {url} ({_reason(exc)}); is `gmail-xoauth2 "
            f"fake-gmail` running? Pass the control URL it printed with --control "
            f"or {CONTROL_ENV}"
        ) from exc
    if not isinstance(answer, dict):
        raise ControlError(f"{url} answered something other than a JSON object")
    return answer


def _reason(exc: OSError) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return str(getattr(reason, "strerror", None) or reason)


def _description(text: str, status: int) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error_description"), str):
        return str(data["error_description"])
    return f"the fake answered HTTP {status}"


# -- the command-line server ---------------------------------------------------------


def serve_fake_gmail(
    *,
    port_base: int | None,
    out: TextIO,
    stop: threading.Event,
    users: tuple[str, ...] = ("alice@example.com", "bob@example.com"),
    clock: Clock | None = None,
) -> None:
    """Run the fake Gmail until ``stop`` is set (or Ctrl-C), printing how to use it.

    It listens on 127.0.0.1 only, but prints ``localhost`` as the host: the
    name its certificate covers for every mail program (see :func:`display_host`).
    """
    from .gmail import FakeGmail

    with (
        tempfile.TemporaryDirectory(prefix="fake-gmail-tokens-") as workdir,
        FakeGmail(users=users, clock=clock, port_base=port_base) as gmail,
    ):
        token_files = []
        for user in users:
            path = Path(workdir) / f"{user}.json"
            gmail.google.write_authorized_user_file(path, user)
            token_files.append((user, path))
        host = display_host(gmail.host)
        lines = [
            "Fake Gmail is running (Ctrl-C to stop).",
            "",
            f"  host        {host}  (listening on {gmail.host} only)",
            f"  IMAP        {gmail.imap_port}  (implicit TLS, like imap.gmail.com:993)",
            f"  POP3        {gmail.pop_port}  (implicit TLS, like pop.gmail.com:995)",
            f"  SMTP        {gmail.smtp_port}  (implicit TLS, like smtp.gmail.com:465)",
            f"  submission  {gmail.submission_port}  (STARTTLS, like port 587)",
            f"  CA file     {gmail.ca_file}",
            f"  OAuth       {gmail.google.url}",
            f"  control     {gmail.control_url}",
        ]
        for user, path in token_files:
            lines.append(f"  token file  {path}  ({user})")
        user, path = token_files[0]
        lines += [
            "",
            "Try:",
            f"  gmail-xoauth2 check --token-file {path} --user {user} "
            f"--host {host} --imap-port {gmail.imap_port} "
            f"--pop-port {gmail.pop_port} --smtp-port {gmail.smtp_port} "
            f"--cafile {gmail.ca_file}",
            f"  curl --cacert {gmail.ca_file} --user {user} --oauth2-bearer "
            f'"$(gmail-xoauth2 token --token-file {path})" '
            f"imaps://{host}:{gmail.imap_port}/INBOX",
            "",
            "Drive it from another shell:",
            f"  export {CONTROL_ENV}={gmail.control_url}",
            f"  gmail-xoauth2 fake-gmail expire-tokens --user {user}",
            f"  gmail-xoauth2 fake-gmail end-sessions --user {user} --protocol imap",
            f"  gmail-xoauth2 fake-gmail deliver --user {user} message.eml",
            "",
            "Ready.",
        ]
        out.write("\n".join(lines) + "\n")
        out.flush()
        stop.wait()
