"""Google OAuth's parts that need no google-auth: loopback receiver, files, errors.

The browser is redirected to ``http://127.0.0.1:PORT/?state=...&code=...``
(RFC 8252 section 7.3); :class:`LoopbackReceiver` answers that one request in
its own thread, so whatever opens the URL may block until the redirect is
answered (as a test's HTTP client does). Stdlib only; :mod:`.auth` drives it.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import secrets
import socket
import threading
import urllib.parse
import webbrowser
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import IO, Any

from ._store import format_expiry, parse_expiry
from .errors import (
    ConfigurationError,
    Timeout,
    TokenError,
    TokenRevokedError,
    UnsupportedFlow,
)

__all__ = [
    "DEFAULT_LIFETIME",
    "GOOGLE_TOKEN_URI",
    "LoopbackReceiver",
    "authorized_user_fields",
    "check_flow",
    "check_token_uri",
    "error_code",
    "for_oauthlib",
    "read_client_config",
    "restore_scheme",
    "show_url",
    "token_error",
    "token_file_data",
]

_log = logging.getLogger("gmail_xoauth2.auth")

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
# RFC 6749 section 5.2: error codes are printable ASCII; anything else is not shown.
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
# Google's access tokens live one hour ("expires_in": 3599).
DEFAULT_LIFETIME = timedelta(seconds=3599)
_OOB_FLOWS = frozenset(
    {
        "oob",
        "out-of-band",
        "urn:ietf:wg:oauth:2.0:oob",
        "urn:ietf:wg:oauth:2.0:oob:auto",
    }
)
_DEVICE_FLOWS = frozenset({"device", "device-code", "device_code"})

_DONE_PAGE = (
    "<!doctype html><title>gmail-xoauth2</title>"
    "<p>{message} You can close this window.</p>"
)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        query = urllib.parse.urlsplit(self.path).query
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        receiver = self.server.receiver
        if "code" not in params and "error" not in params:
            # A favicon request or a stray visitor: not the redirect.
            self._answer(404, "Nothing here.")
            return
        state = params.get("state", "")
        if not secrets.compare_digest(state.encode(), receiver.state.encode()):
            # RFC 6749 section 10.12: a redirect without our state is forged.
            self._answer(400, "This authorization response does not match.")
            return
        # Deliver before answering: once the browser has its page, the
        # parameters are already waiting.
        receiver._deliver(params)
        if "error" in params:
            self._answer(200, "Authorization was not granted.")
        else:
            self._answer(200, "Authorization complete.")

    def _answer(self, status: int, message: str) -> None:
        payload = _DONE_PAGE.format(message=message).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the request line (it holds the authorization code) out of stderr."""


class _Server(http.server.HTTPServer):
    receiver: LoopbackReceiver


class _Server6(_Server):
    address_family = socket.AF_INET6


class LoopbackReceiver:
    """Receive one OAuth redirect on ``http://HOST:PORT/``.

    Args:
        host: loopback address to bind (Google allows 127.0.0.1 and ::1).
        port: port to bind; 0 picks a free one (fix it to forward it over SSH).

    Raises:
        ConfigurationError: the port cannot be bound.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            server_class = _Server6 if ":" in host else _Server
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} for the OAuth redirect: "
                f"{exc.strerror or exc}; choose another port"
            ) from exc
        self._server.receiver = self
        self.state = ""
        self._result: dict[str, str] | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def redirect_uri(self) -> str:
        host = str(self._server.server_address[0])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def start(self, state: str) -> None:
        """Serve in a background thread, accepting only redirects carrying ``state``."""
        self.state = state
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="oauth-loopback",
            daemon=True,
        )
        self._thread.start()
        _log.debug("waiting for the OAuth redirect on %s", self.redirect_uri)

    def _deliver(self, params: dict[str, str]) -> None:
        if not self._done.is_set():
            self._result = params
            self._done.set()

    def wait(self, timeout: float | None) -> dict[str, str]:
        """Return the redirect's query parameters once it arrives.

        Raises:
            Timeout: no redirect within ``timeout`` seconds.
        """
        if not self._done.wait(timeout) or self._result is None:
            raise Timeout(
                f"no authorization arrived on {self.redirect_uri} within "
                f"{timeout or 0:.0f} s; run authorize again and open the new URL"
            )
        return self._result

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LoopbackReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_flow(flow: str) -> None:
    name = flow.strip().lower()
    if name in _OOB_FLOWS:
        raise UnsupportedFlow(
            "the out-of-band (OOB) flow is gone: Google blocked it for all clients "
            "in October 2022. Use the loopback flow; on a machine without a "
            "browser, forward the port over SSH (`ssh -L PORT:127.0.0.1:PORT`)"
        )
    if name in _DEVICE_FLOWS:
        raise UnsupportedFlow(
            "the device flow cannot be used: Google rejects Gmail scopes such as "
            "https://mail.google.com/ in it (invalid_scope). Use the loopback "
            "flow; on a machine without a browser, forward the port over SSH"
        )
    if name != "loopback":
        raise ConfigurationError(f"unknown OAuth flow {flow!r}; use 'loopback'")


def read_client_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a client secrets file; the installed ("Desktop app") type is needed."""
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"client secrets file {path} does not exist; download it from the "
            "Google Cloud console (APIs & Services > Credentials > Desktop app)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"client secrets file {path} is not readable JSON ({type(exc).__name__})"
        ) from exc
    section = config.get("installed") if isinstance(config, dict) else None
    needed = ("client_id", "client_secret", "auth_uri", "token_uri")
    if not isinstance(section, dict) or not all(
        isinstance(section.get(key), str) for key in needed
    ):
        raise ConfigurationError(
            f"client secrets file {path} is not for a 'Desktop app' OAuth client "
            "(it needs an 'installed' section with client_id, client_secret, "
            "auth_uri and token_uri)"
        )
    check_token_uri(section["token_uri"], f"client secrets file {path}")
    check_token_uri(section["auth_uri"], f"client secrets file {path}", "auth_uri")
    return {"installed": section}


def for_oauthlib(config: Mapping[str, Any]) -> dict[str, Any]:
    """The client config with a loopback ``http`` auth_uri shown to oauthlib as https.

    oauthlib refuses http URLs unless a process-wide environment variable is
    set; a fake Google on loopback is the only http auth_uri allowed, so it is
    passed as https and :func:`restore_scheme` puts the scheme back.
    """
    section = dict(config["installed"])
    if section["auth_uri"].startswith("http://"):
        section["auth_uri"] = "https://" + section["auth_uri"][len("http://") :]
    return {"installed": section}


def restore_scheme(url: str, config: Mapping[str, Any]) -> str:
    """Undo :func:`for_oauthlib` on the authorization URL."""
    if config["installed"]["auth_uri"].startswith("http://"):
        return "http://" + url[len("https://") :]
    return url


def show_url(
    url: str,
    port: int,
    open_browser: bool,
    open_url: Callable[[str], object] | None,
    output: IO[str],
) -> None:
    if open_url is not None:
        open_url(url)
        return
    if open_browser and webbrowser.open(url):
        print(
            f"Opened a browser to authorize access. If it did not open, visit:\n\n"
            f"    {url}\n",
            file=output,
            flush=True,
        )
        return
    print(
        f"Open this URL in a browser to authorize access:\n\n    {url}\n\n"
        f"If that browser runs on another machine, first forward the port:\n"
        f"    ssh -L {port}:127.0.0.1:{port} THIS_MACHINE\n",
        file=output,
        flush=True,
    )


def token_file_data(
    body: Mapping[str, object],
    config: Mapping[str, Any],
    requested: list[str],
    started: datetime,
) -> dict[str, object]:
    """The token file's JSON, from the code exchange's response."""
    token, refresh_token = body.get("access_token"), body.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise TokenError("Google's token response holds no access token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise TokenError(
            "Google's token response holds no refresh token; remove the app's "
            "access at https://myaccount.google.com/permissions and authorize again"
        )
    granted = str(body.get("scope") or " ".join(requested)).split()
    missing = sorted(set(requested) - set(granted))
    if missing:
        # Google's consent screen lets the user untick scopes.
        raise TokenError(
            f"Google did not grant {', '.join(missing)}; authorize again and "
            "tick every permission on the consent screen"
        )
    expires_in = body.get("expires_in")
    lifetime = (
        timedelta(seconds=int(expires_in))
        if isinstance(expires_in, int | str) and str(expires_in).isdigit()
        else DEFAULT_LIFETIME
    )
    return {
        "token": token,
        "refresh_token": refresh_token,
        "token_uri": config["token_uri"],
        "client_id": config["client_id"],
        "client_secret": config["client_secret"],
        "scopes": granted,
        "expiry": format_expiry(started + lifetime),
    }


def error_code(data: object) -> str | None:
    """The OAuth ``error`` code of a response body, if it is a plain identifier."""
    if isinstance(data, Mapping):
        code = data.get("error")
        if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
            return code
    return None


def check_token_uri(uri: str, source: str, field: str = "token_uri") -> str:
    """Refuse a token URI that would send the refresh token over plain HTTP."""
    parts = urllib.parse.urlsplit(uri)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return uri
    raise ConfigurationError(
        f"{source}: {field} must be an https URL (or http on loopback), "
        f"not {parts.scheme or 'a relative'} URL"
    )


def token_error(code: str | None, *, service_account: bool) -> TokenError:
    """A typed error for a refusal by the token endpoint (never its text).

    Args:
        code: the OAuth ``error`` code of the response, if any.
        service_account: the refusal was of a service-account JWT grant.
    """
    if code == "invalid_grant":
        if not service_account:
            return TokenRevokedError()
        return TokenError(
            "service-account token request rejected (invalid_grant): check "
            "that the key still exists, that the subject is a user of the "
            "Workspace domain, and that this machine's clock is right"
        )
    if code == "unauthorized_client" and service_account:
        return TokenError(
            "domain-wide delegation is not allowed for this service account "
            "and scope: authorize its client ID for the scope in the Google "
            "Admin console (Security > API controls > Domain-wide delegation)"
        )
    if code == "unauthorized_client":
        # Google's answer when the refresh token was issued to another client.
        return TokenError(
            "the OAuth client may not use this refresh token (unauthorized_client): "
            "it was issued to another client; run `gmail-xoauth2 authorize` again "
            "with the client secrets file you mean to use"
        )
    if service_account:
        # `gmail-xoauth2 authorize` writes a user's token file: no advice here.
        if code == "invalid_scope":
            return TokenError(
                "the requested scope was refused (invalid_scope): ask for "
                "https://mail.google.com/ or the gmail.imap_admin scope"
            )
        return TokenError(
            f"the token endpoint refused the service account "
            f"({code or 'unexpected response'}): check that its key still exists "
            "and the account is enabled in the Cloud console"
        )
    if code == "invalid_client":
        return TokenError(
            "the OAuth client was rejected (invalid_client): its client ID or "
            "secret is wrong or it was deleted; run `gmail-xoauth2 authorize` "
            "with the right client secrets file"
        )
    if code == "invalid_scope":
        return TokenError(
            "the requested scope was refused (invalid_scope); run "
            "`gmail-xoauth2 authorize` again with https://mail.google.com/"
        )
    if code is None:
        return TokenError(
            "the token endpoint sent an unexpected response (no OAuth error "
            "code); try again later, and check for a proxy if it persists"
        )
    return TokenError(
        f"the token endpoint refused the refresh ({code}); if it persists, run "
        "`gmail-xoauth2 authorize` again"
    )


def authorized_user_fields(data: Mapping[str, object], source: str) -> dict[str, Any]:
    """Check a token file's JSON; return the fields for google-auth's Credentials.

    Unlike google-auth's own loader, the file's ``token_uri`` is kept (https,
    or http on loopback for a fake), so a token file can point at a test fake.
    ``expiry`` is returned aware (or None).

    Raises:
        ConfigurationError: a needed field is missing or has the wrong type.
    """
    missing = [
        name
        for name in ("refresh_token", "client_id", "client_secret")
        if not isinstance(data.get(name), str) or not data.get(name)
    ]
    if missing:
        raise ConfigurationError(
            f"{source} lacks {', '.join(missing)}; "
            "run `gmail-xoauth2 authorize` to write it again"
        )
    token_uri = data.get("token_uri") or GOOGLE_TOKEN_URI
    if not isinstance(token_uri, str):
        raise ConfigurationError(f"{source}: token_uri is not a string")
    scopes = data.get("scopes")
    if isinstance(scopes, str):
        scopes = scopes.split()
    if scopes is not None and not (
        isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)
    ):
        raise ConfigurationError(f"{source}: scopes is not a list")
    token = data.get("token")
    return {
        "token": token if isinstance(token, str) and token else None,
        "refresh_token": data["refresh_token"],
        "token_uri": check_token_uri(token_uri, source),
        "client_id": data["client_id"],
        "client_secret": data["client_secret"],
        "scopes": scopes,
        "expiry": parse_expiry(data.get("expiry")),
    }
