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

__all__ = ["GoogleHandler", "Reply"]

_log = logging.getLogger("gmail_xoauth2.testing.google")

_MAX_BODY = 1 << 20


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
        self._dispatch(self._query())

    def do_POST(self) -> None:
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
