"""google-auth wrapped once: the token endpoint's transport, credentials from a record.

The transport fails at once on 408, 429 and 5xx (google-auth's own retries sleep
for real); the provider retries with an injectable :class:`Backoff`. Credentials
are built from a stored record with its ``token_uri`` honoured. Only this module,
:mod:`gmail_xoauth2.auth` and the flow in ``_authorize`` import google-auth.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.service_account
import requests

from ._oauth import (
    authorized_user_fields,
    error_code,
)

__all__ = [
    "RETRY_CODES",
    "RETRY_STATUSES",
    "RetryableStatus",
    "Transport",
    "aware",
    "naive_utc",
    "refresh_error_code",
    "retryable_code",
    "user_credentials",
]

# Every answer google-auth would retry itself (with real sleeps): 408, 429, 5xx,
# and an OAuth error saying the server is at fault (RFC 6749 section 4.1.2.1).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_CODES = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})


class RetryableStatus(google.auth.exceptions.TransportError):
    """The token endpoint failed transiently; raised at once, retried by us."""

    def __init__(self, status: int, code: str | None = None) -> None:
        self.reason = f"HTTP {status} {code}" if code else f"HTTP {status}"
        super().__init__(f"token endpoint answered {self.reason}")  # type: ignore[no-untyped-call]
        self.status = status


def retryable_code(data: object) -> str | None:
    """The body's OAuth error code when it names a server-side, transient fault."""
    try:
        decoded = json.loads(data) if isinstance(data, bytes | str) else None
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(decoded, dict):
        return None
    for key in ("error", "error_description"):
        value = decoded.get(key)
        if isinstance(value, str) and value in RETRY_CODES:
            return value
    return None


class Transport(google.auth.transport.Request):
    """google-auth's requests transport, failing fast on transient failures.

    google-auth retries 408, 429, 5xx and the ``server_error`` family itself
    with real ``time.sleep`` calls; raising a ``TransportError`` instead stops
    its loop so the provider's own :class:`Backoff` (with an injectable sleep)
    decides.
    """

    def __init__(self, session: requests.Session | None, timeout: float) -> None:
        self._inner = google.auth.transport.requests.Request(session)
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        response: google.auth.transport.Response = self._inner(
            url,
            method=method,
            body=body,
            headers=headers,
            timeout=timeout or self._timeout,
            **kwargs,
        )
        status = int(response.status)
        if status in RETRY_STATUSES:
            raise RetryableStatus(status)
        if status != 200:
            code = retryable_code(response.data)
            if code is not None:
                raise RetryableStatus(status, code)
        return response

    def post_form(self, url: str, form: Mapping[str, str]) -> tuple[int, object]:
        """POST a form; return the status and the decoded JSON (or None)."""
        response = self(
            url,
            method="POST",
            body=urllib.parse.urlencode(form).encode("ascii"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        data = response.data
        try:
            decoded: object = json.loads(data.decode("utf-8") if data else "null")
        except (UnicodeDecodeError, ValueError):
            decoded = None
        return int(response.status), decoded


def naive_utc(moment: datetime) -> datetime:
    """google-auth keeps naive UTC datetimes."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def aware(moment: object) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def refresh_error_code(exc: google.auth.exceptions.RefreshError) -> str | None:
    for arg in exc.args[1:]:
        code = error_code(arg)
        if code is not None:
            return code
    return None


def user_credentials(
    data: Mapping[str, object], source: str
) -> google.oauth2.credentials.Credentials:
    """google-auth user credentials from a token file's JSON (token_uri honoured)."""
    fields = authorized_user_fields(data, source)
    expiry = fields.pop("expiry")
    return google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        expiry=naive_utc(expiry) if expiry else None, **fields
    )
