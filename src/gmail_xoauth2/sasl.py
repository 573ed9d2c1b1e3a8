"""Pure SASL codec for XOAUTH2 and OAUTHBEARER: build, parse, decode Gmail's errors.

No sockets and no Google here. The client side builds the initial responses; the
server side (used by the fake Gmail in :mod:`gmail_xoauth2.testing`) parses them,
so the fakes and the client share one definition of the wire format.

References: Google, "OAuth 2.0 Mechanism" (the XOAUTH2 protocol page);
RFC 7628 (OAUTHBEARER); RFC 5801 section 5.1 (GS2 header, ``=2C``/``=3D``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ChallengeDecodeError, ConfigurationError, ProtocolError

__all__ = [
    "IMAP_ADMIN_SCOPE",
    "MAIL_SCOPE",
    "MAX_CHALLENGE",
    "ClientResponse",
    "ErrorChallenge",
    "decode_error_challenge",
    "encode_error_challenge",
    "oauthbearer_response",
    "oauthbearer_string",
    "parse_client_response",
    "parse_oauthbearer_response",
    "parse_xoauth2_response",
    "xoauth2_response",
    "xoauth2_string",
]

MAIL_SCOPE = "https://mail.google.com/"
"""The OAuth scope Gmail requires for IMAP, POP and SMTP."""

IMAP_ADMIN_SCOPE = "https://www.googleapis.com/auth/gmail.imap_admin"
"""For Workspace service accounts with domain-wide delegation only.

Every label and message is shown over IMAP, whatever the user's IMAP settings.
"""

_SOH = "\x01"
# RFC 7628 section 3.2.3: after an error challenge the client answers one ^A.
OAUTHBEARER_ABORT = b"\x01"


def _check_user(user: str) -> None:
    if not user or _SOH in user or "\r" in user or "\n" in user:
        raise ConfigurationError(
            "user must be a non-empty e-mail address without control characters"
        )


def _check_token(token: str) -> None:
    # RFC 6750 b64token: printable ASCII without spaces. The token itself is never
    # put in the message.
    if not token or not token.isascii() or any(c <= " " or c == "\x7f" for c in token):
        raise ConfigurationError(
            "access token is empty or holds spaces or control characters "
            "(it is not shown here); check what the token provider returns"
        )


def xoauth2_response(user: str, token: str, /) -> bytes:
    """Build the raw XOAUTH2 initial client response.

    ``user=USER ^A auth=Bearer TOKEN ^A ^A``, before base64 (Google's XOAUTH2 page).

    Raises:
        ConfigurationError: the user or token holds characters that would
            corrupt the response.
    """
    _check_user(user)
    _check_token(token)
    return f"user={user}{_SOH}auth=Bearer {token}{_SOH}{_SOH}".encode()


def xoauth2_string(user: str, token: str, /) -> str:
    """Return the base64 XOAUTH2 string, as Google's docs call it."""
    return base64.b64encode(xoauth2_response(user, token)).decode("ascii")


def _gs2_escape(user: str) -> str:
    # RFC 5801 section 5.1: "," and "=" in the authzid are written =2C and =3D.
    return user.replace("=", "=3D").replace(",", "=2C")


def _gs2_unescape(value: str) -> str:
    return value.replace("=2C", ",").replace("=3D", "=")


def oauthbearer_response(
    user: str, token: str, /, *, host: str | None = None, port: int | None = None
) -> bytes:
    """Build the raw OAUTHBEARER initial client response (RFC 7628 section 3.1).

    ``n,a=USER,`` then ``^Ahost=HOST`` and ``^Aport=PORT`` when given, then
    ``^Aauth=Bearer TOKEN^A^A``. Gmail requires the ``a=`` authorization identity.
    """
    _check_user(user)
    _check_token(token)
    parts = [f"n,a={_gs2_escape(user)},"]
    if host is not None:
        parts.append(f"host={host}")
    if port is not None:
        parts.append(f"port={int(port)}")
    parts.append(f"auth=Bearer {token}")
    return (_SOH.join(parts) + _SOH + _SOH).encode()


def oauthbearer_string(
    user: str, token: str, /, *, host: str | None = None, port: int | None = None
) -> str:
    """Return the base64 of :func:`oauthbearer_response`."""
    raw = oauthbearer_response(user, token, host=host, port=port)
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class ErrorChallenge:
    """Gmail's (or Dovecot's) decoded SASL error challenge.

    Attributes:
        status: ``"400"``/``"401"`` (XOAUTH2) or ``"invalid_token"`` and the like
            (OAUTHBEARER).
        schemes: the ``schemes`` field, such as ``"Bearer"``, or None.
        scope: the scope the server wants, such as ``MAIL_SCOPE``, or None.
        raw: every field of the JSON object, as sent.
    """

    status: str
    schemes: str | None = None
    scope: str | None = None
    raw: Mapping[str, object] = field(default_factory=dict, compare=False)


MAX_CHALLENGE = 16384
"""The longest error challenge :func:`decode_error_challenge` accepts, in bytes."""


def decode_error_challenge(data: bytes | str, /) -> ErrorChallenge:
    """Decode the base64 JSON error challenge sent when a token is rejected.

    Accepts the challenge text as it came off the wire (with or without the
    trailing CRLF). Examples: ``{"status":"400","schemes":"Bearer",
    "scope":"https://mail.google.com/"}`` (Gmail XOAUTH2) or
    ``{"status":"invalid_token","scope":...}`` (OAUTHBEARER).

    Raises:
        ChallengeDecodeError: the data is not base64 of a JSON object with a
            string ``status``, or is longer than :data:`MAX_CHALLENGE`. It is
            the only exception this function raises, whatever ``data`` holds.
    """
    if not isinstance(data, bytes | bytearray | memoryview | str):
        raise ChallengeDecodeError("error challenge is not bytes or str")
    if len(data) > MAX_CHALLENGE:
        # Gmail's is about 100 bytes; a huge one is a broken or hostile server.
        raise ChallengeDecodeError(
            f"error challenge is longer than {MAX_CHALLENGE} bytes"
        )
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError as exc:
            raise ChallengeDecodeError("error challenge is not ASCII base64") from exc
    text = bytes(data).strip()
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChallengeDecodeError("error challenge is not valid base64") from exc
    try:
        obj = json.loads(decoded.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChallengeDecodeError("error challenge is not a JSON document") from exc
    except RecursionError as exc:
        # json.loads recurses once per nesting level of arrays and objects.
        raise ChallengeDecodeError("error challenge JSON is nested too deeply") from exc
    if not isinstance(obj, dict):
        raise ChallengeDecodeError("error challenge JSON is not an object")
    status = obj.get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        status = str(status)
    if not isinstance(status, str):
        raise ChallengeDecodeError("error challenge JSON has no string 'status' field")
    schemes = obj.get("schemes")
    scope = obj.get("scope")
    return ErrorChallenge(
        status=status,
        schemes=schemes if isinstance(schemes, str) else None,
        scope=scope if isinstance(scope, str) else None,
        raw=dict(obj),
    )


def encode_error_challenge(
    status: str = "400",
    *,
    schemes: str | None = "Bearer",
    scope: str | None = MAIL_SCOPE,
) -> bytes:
    """Build a base64 error challenge as Gmail sends it (server side).

    The default is Gmail's ``{"status":"400","schemes":"Bearer",
    "scope":"https://mail.google.com/"}``, compact JSON in that key order.
    """
    body: dict[str, str] = {"status": status}
    if schemes is not None:
        body["schemes"] = schemes
    if scope is not None:
        body["scope"] = scope
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode())


@dataclass(frozen=True)
class ClientResponse:
    """A parsed initial client response (server side). The token is not in repr."""

    mechanism: str
    user: str
    token: str = field(repr=False)
    host: str | None = None
    port: int | None = None


def _split_kvpairs(body: str, mechanism: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in body.split(_SOH):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ProtocolError(
                f"{mechanism} response holds a malformed key/value pair"
            )
        pairs[key] = value
    return pairs


def _bearer(pairs: Mapping[str, str], mechanism: str) -> str:
    auth = pairs.get("auth", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ProtocolError(f"{mechanism} response has no 'auth=Bearer <token>' pair")
    return token


def parse_xoauth2_response(raw: bytes, /) -> ClientResponse:
    """Parse a raw (not base64) XOAUTH2 initial response.

    Raises:
        ProtocolError: the response does not follow Google's format.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("XOAUTH2 response is not UTF-8") from exc
    if not text.endswith(_SOH + _SOH):
        raise ProtocolError("XOAUTH2 response does not end with ^A^A")
    pairs = _split_kvpairs(text, "XOAUTH2")
    user = pairs.get("user")
    if not user:
        raise ProtocolError("XOAUTH2 response has no 'user=' pair")
    return ClientResponse("XOAUTH2", user, _bearer(pairs, "XOAUTH2"))


def parse_oauthbearer_response(raw: bytes, /) -> ClientResponse:
    """Parse a raw (not base64) OAUTHBEARER initial response (RFC 7628).

    Raises:
        ProtocolError: the response does not follow RFC 7628.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("OAUTHBEARER response is not UTF-8") from exc
    gs2, sep, rest = text.partition(_SOH)
    if not sep or not rest.endswith(_SOH + _SOH):
        raise ProtocolError("OAUTHBEARER response does not follow RFC 7628")
    fields = gs2.split(",")
    if len(fields) != 3 or fields[0] not in ("n", "y") or fields[2] != "":
        raise ProtocolError("OAUTHBEARER response has a malformed GS2 header")
    user = _gs2_unescape(fields[1][2:]) if fields[1].startswith("a=") else ""
    if not user:
        raise ProtocolError("OAUTHBEARER response has no 'a=' authorization identity")
    pairs = _split_kvpairs(rest, "OAUTHBEARER")
    port_text = pairs.get("port")
    try:
        port = int(port_text) if port_text is not None else None
    except ValueError as exc:
        raise ProtocolError("OAUTHBEARER response has a malformed port") from exc
    return ClientResponse(
        "OAUTHBEARER", user, _bearer(pairs, "OAUTHBEARER"), pairs.get("host"), port
    )


def parse_client_response(mechanism: str, data: bytes | str, /) -> ClientResponse:
    """Decode base64 ``data`` and parse it as ``mechanism`` (server side).

    Raises:
        ProtocolError: not base64, unknown mechanism, or a malformed response.
    """
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("client response is not valid base64") from exc
    mech = mechanism.upper()
    if mech == "XOAUTH2":
        return parse_xoauth2_response(raw)
    if mech == "OAUTHBEARER":
        return parse_oauthbearer_response(raw)
    raise ProtocolError(f"unsupported SASL mechanism {mechanism!r}")
