"""The HTTP face of the fake Google: parse requests, route them, write replies."""

from __future__ import annotations

import base64
import binascii
import http.server
import json
import logging
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .google import FakeGoogle

__all__ = ["CONTROL_PREFIX", "GoogleHandler", "Reply"]

_log = logging.getLogger("gmail_xoauth2.testing.google")

_MAX_BODY = 1 << 20
# A control request can carry a whole message to deliver (Gmail takes 25 MB).
_MAX_CONTROL_BODY = 64 << 20
CONTROL_PREFIX = "/_control/"


@dataclass
class Reply:
    """An HTTP answer: JSON when ``body`` is a dict, plain text otherwise."""

    status: int
    body: dict[str, object] | str
    location: str | None = None


class GoogleHandler(http.server.BaseHTTPRequestHandler):
    """One request to the fake Google; the server's ``fake`` does the work."""

    server_version = "FakeGoogle/1.0"
    # HTTP/1.0: one request per connection, so clients hold no idle sockets.
    protocol_version = "HTTP/1.0"

    @property
    def fake(self) -> FakeGoogle:
        fake: FakeGoogle = self.server.fake  # type: ignore[attr-defined]
        return fake

    def do_GET(self) -> None:
        if self._is_control():
            self._send(self._control())
            return
        self._dispatch(self._query())

    def do_POST(self) -> None:
        if self._is_control():
            self._send(self._control())
            return
        params = self._query()
        params.update(self._form())
        self._dispatch(params)

    def _query(self) -> dict[str, str]:
        query = urllib.parse.urlsplit(self.path).query
        return dict(urllib.parse.parse_qsl(query, keep_blank_values=True))

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""
        content_type = self.headers.get("Content-Type", "")
        text = raw.decode("utf-8", "replace")
        if "json" in content_type:
            try:
                data = json.loads(text)
            except ValueError:
                return {}
            return (
                {str(k): str(v) for k, v in data.items()}
                if isinstance(data, dict)
                else {}
            )
        form = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
        # RFC 6749 section 2.3.1: client credentials may come as HTTP Basic auth.
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            try:
                pair = base64.b64decode(basic[6:], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                pair = ""
            client_id, _, secret = pair.partition(":")
            form.setdefault("client_id", urllib.parse.unquote_plus(client_id))
            form.setdefault("client_secret", urllib.parse.unquote_plus(secret))
        return form

    def _bearer(self) -> str:
        header = self.headers.get("Authorization", "")
        return header[7:].strip() if header.startswith("Bearer ") else ""

    def _dispatch(self, params: dict[str, str]) -> None:
        path = urllib.parse.urlsplit(self.path).path
        grant_type = params.get("grant_type") if path == "/token" else None
        fake = self.fake
        reply = fake._record(path, grant_type)
        if reply is None:
            reply = self._route(path, params)
        self._send(reply)
        # Never the query: it holds the token for /tokeninfo.
        _log.debug("%s %s -> %d", self.command, path, reply.status)

    def _route(self, path: str, params: dict[str, str]) -> Reply:
        fake = self.fake
        if path == "/token" and self.command == "POST":
            grant_type = params.get("grant_type", "")
            if grant_type == "refresh_token":
                return fake._grant_refresh(params)
            if grant_type == "authorization_code":
                return fake._grant_code(params)
            if grant_type == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                return fake._grant_jwt(params)
            return Reply(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Invalid grant_type: {grant_type}",
                },
            )
        if path == "/tokeninfo":
            return fake._tokeninfo(params.get("access_token") or self._bearer())
        if path == "/revoke":
            return fake._revoke_endpoint(params.get("token", ""))
        if path == "/auth" and self.command == "GET":
            return fake._authorize(params)
        return Reply(404, {"error": "not_found"})

    def _is_control(self) -> bool:
        return urllib.parse.urlsplit(self.path).path.startswith(CONTROL_PREFIX)

    def _control(self) -> Reply:
        """``POST /_control/<action>`` with a JSON object, from loopback only.

        Requiring ``application/json`` also keeps web pages out: a browser sends
        that cross-origin only after a CORS preflight, which this never answers.
        """
        from ._control import is_loopback

        path = urllib.parse.urlsplit(self.path).path
        action = path.removeprefix(CONTROL_PREFIX)
        handler = self.fake._control
        if not is_loopback(str(self.client_address[0])):
            return _refuse(
                403, "forbidden", "the control endpoint answers loopback only"
            )
        if handler is None:
            return _refuse(404, "not_found", "this fake Google has no control endpoint")
        if self.command != "POST":
            return _refuse(405, "method_not_allowed", f"POST to {path}, with JSON")
        if "application/json" not in self.headers.get("Content-Type", ""):
            return _refuse(
                415, "unsupported_media_type", "send a JSON object (application/json)"
            )
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_CONTROL_BODY:
            return _refuse(
                413, "too_large", f"the body is over {_MAX_CONTROL_BODY} bytes"
            )
        try:
            data = json.loads(self.rfile.read(length).decode("utf-8"))
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return _refuse(400, "invalid_request", "the body must be a JSON object")
        reply = handler(action, data)
        _log.debug("control %s -> %d", action, reply.status)
        return reply

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, dict):
            payload = json.dumps(reply.body, indent=2).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        else:
            payload = reply.body.encode("utf-8")
            content_type = "text/html; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        if reply.location is not None:
            self.send_header("Location", reply.location)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Silence http.server's stderr log: its request line can hold tokens."""


def _refuse(status: int, error: str, description: str) -> Reply:
    return Reply(status, {"error": error, "error_description": description})
