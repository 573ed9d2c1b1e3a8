"""The fake Google's state and grant logic: codes, refresh and access tokens, JWTs."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .._tokens import Clock
from ._google_http import Reply

__all__ = ["GOOGLE_TOKEN_URI", "IMAP_ADMIN_SCOPE", "GoogleEndpoints", "TokenInfo"]

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
"""Google's token endpoint; google-auth puts it in every service-account JWT's aud."""
IMAP_ADMIN_SCOPE = "https://www.googleapis.com/auth/gmail.imap_admin"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

_EXPIRED_OR_REVOKED = "Token has been expired or revoked."
# Google accepts service-account assertions for at most an hour, with some skew.
_JWT_MAX_LIFETIME = 3600
_JWT_SKEW = 300
_CODE_LIFETIME = timedelta(minutes=10)


@dataclass(frozen=True)
class TokenInfo:
    """What the fake knows about a live access token (the token is not kept here).

    Attributes:
        email: the user the token acts for.
        scopes: the scopes granted.
        expires_at: when it expires, on the fake's clock.
        client_id: the OAuth client (or service account) it was issued to.
    """

    email: str
    scopes: frozenset[str]
    expires_at: datetime
    client_id: str


@dataclass
class _Grant:
    user: str
    scopes: frozenset[str]
    client_id: str
    revoked: bool = False


@dataclass
class _Access:
    user: str
    scopes: frozenset[str]
    client_id: str
    expires_at: datetime
    grant: str | None = field(default=None, repr=False)
    revoked: bool = False


@dataclass
class _Code:
    user: str
    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    challenge: str | None
    method: str
    expires_at: datetime


@dataclass
class _ServiceAccount:
    client_email: str
    client_id: str
    key_id: str
    public_key_pem: bytes = field(repr=False)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GoogleEndpoints:
    """The fake's state and what each endpoint does with it (FakeGoogle's base).

    The endpoint methods take ``_lock`` themselves; ``_new_grant``, ``_mint``
    and ``_revoke_*`` expect the caller to hold it.
    """

    _clock: Clock
    _lock: threading.Lock
    client_id: str
    _clients: dict[str, str]
    _users: dict[str, str]
    _grants: dict[str, _Grant]
    _access: dict[str, _Access]
    _codes: dict[str, _Code]
    _service_accounts: dict[str, _ServiceAccount]
    _failures: dict[str, deque[tuple[int, dict[str, object] | str | None]]]
    _requests: list[tuple[str, str | None]]
    _auth_requests: list[dict[str, str]]
    rotate_refresh_tokens: bool
    _gate: threading.Event | None
    _held: threading.Condition
    _held_count: int

    @property
    def token_uri(self) -> str:
        raise NotImplementedError

    def lookup(self, access_token: str) -> TokenInfo | None:
        raise NotImplementedError

    def _new_grant(self, user: str, scopes: frozenset[str], client_id: str) -> str:
        refresh_token = "1//" + secrets.token_urlsafe(48)
        self._grants[refresh_token] = _Grant(user, scopes, client_id)
        return refresh_token

    def _mint(
        self,
        user: str,
        scopes: frozenset[str],
        client_id: str,
        ttl: float,
        grant: str | None,
    ) -> str:
        token = "ya29." + secrets.token_urlsafe(64)
        expires_at = self._clock() + timedelta(seconds=ttl)
        self._access[token] = _Access(user, scopes, client_id, expires_at, grant)
        return token

    def _revoke_user(self, user: str) -> None:
        for grant in self._grants.values():
            if grant.user == user:
                grant.revoked = True
        for access in self._access.values():
            if access.user == user:
                access.revoked = True

    def _revoke_token(self, token: str) -> bool:
        """Revoke a refresh or access token and its grant (as Google does)."""
        grant_key: str | None
        if token in self._grants:
            grant_key = token
        elif token in self._access:
            self._access[token].revoked = True
            grant_key = self._access[token].grant
        else:
            return False
        if grant_key is not None:
            self._grants[grant_key].revoked = True
            for access in self._access.values():
                if access.grant == grant_key:
                    access.revoked = True
        return True

    def _record(self, path: str, grant_type: str | None) -> Reply | None:
        """Count the request; return an injected failure if one is queued."""
        with self._lock:
            self._requests.append((path, grant_type))
            gate = self._gate if path == "/token" else None
            if gate is not None:
                self._held_count += 1
                self._held.notify_all()
        if gate is not None:
            gate.wait()
        with self._lock:
            queue = self._failures.get(path)
            if not queue:
                return None
            status, body = queue.popleft()
        if body is None:
            error = "server_error" if status >= 500 else "invalid_request"
            body = {"error": error, "error_description": f"injected HTTP {status}"}
        return Reply(status, body)

    def _client_ok(self, client_id: str, client_secret: str) -> bool:
        expected = self._clients.get(client_id)
        return expected is not None and secrets.compare_digest(
            expected.encode(), client_secret.encode()
        )

    def _token_response(
        self, token: str, scopes: frozenset[str], refresh_token: str | None = None
    ) -> Reply:
        body: dict[str, object] = {
            "access_token": token,
            "expires_in": 3599,
            "scope": " ".join(sorted(scopes)),
            "token_type": "Bearer",
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return Reply(200, body)

    def _grant_refresh(self, form: dict[str, str]) -> Reply:
        with self._lock:
            if not self._client_ok(
                form.get("client_id", ""), form.get("client_secret", "")
            ):
                return _invalid_client()
            key = form.get("refresh_token", "")
            grant = self._grants.get(key)
            if grant is None or grant.revoked or grant.client_id != form["client_id"]:
                return _invalid_grant(_EXPIRED_OR_REVOKED)
            scopes = (
                frozenset(form["scope"].split()) if "scope" in form else grant.scopes
            )
            if not scopes <= grant.scopes:
                return Reply(
                    400, {"error": "invalid_scope", "error_description": "Bad Request"}
                )
            rotated: str | None = None
            if self.rotate_refresh_tokens:
                rotated = self._new_grant(grant.user, grant.scopes, grant.client_id)
                grant.revoked = True
                key = rotated
            token = self._mint(grant.user, scopes, grant.client_id, 3599, key)
        return self._token_response(token, scopes, rotated)

    def _grant_code(self, form: dict[str, str]) -> Reply:
        with self._lock:
            if not self._client_ok(
                form.get("client_id", ""), form.get("client_secret", "")
            ):
                return _invalid_client()
            code = self._codes.pop(form.get("code", ""), None)
            if code is None or code.client_id != form["client_id"]:
                return _invalid_grant("Malformed auth code.")
            if self._clock() >= code.expires_at:
                return _invalid_grant("Bad Request")
            if form.get("redirect_uri") != code.redirect_uri:
                return Reply(
                    400,
                    {
                        "error": "redirect_uri_mismatch",
                        "error_description": "Bad Request",
                    },
                )
            if code.challenge is not None:
                verifier = form.get("code_verifier", "")
                if code.method == "S256":
                    digest = hashlib.sha256(
                        verifier.encode("ascii", "replace")
                    ).digest()
                    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                else:
                    computed = verifier
                if not verifier or not secrets.compare_digest(computed, code.challenge):
                    return _invalid_grant("Invalid code verifier.")
            refresh_token = self._new_grant(code.user, code.scopes, code.client_id)
            token = self._mint(
                code.user, code.scopes, code.client_id, 3599, refresh_token
            )
        return self._token_response(token, code.scopes, refresh_token)

    def _grant_jwt(self, form: dict[str, str]) -> Reply:
        claims = self._verify_assertion(form.get("assertion", ""))
        if isinstance(claims, Reply):
            return claims
        account, payload = claims
        scopes = frozenset(str(payload.get("scope", "")).split())
        if not scopes:
            return Reply(
                400,
                {
                    "error": "invalid_scope",
                    "error_description": (
                        "Invalid OAuth scope or ID token audience provided."
                    ),
                },
            )
        subject = payload.get("sub") or account.client_email
        with self._lock:
            if subject != account.client_email and subject not in self._users:
                return _invalid_grant("Invalid email or User ID")
            token = self._mint(str(subject), scopes, account.client_id, 3599, None)
        return Reply(
            200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
        )

    def _verify_assertion(
        self, assertion: str
    ) -> tuple[_ServiceAccount, dict[str, object]] | Reply:
        """Check an RS256 service-account JWT as Google's token endpoint does."""
        from google.auth import crypt

        bad_signature = _invalid_grant("Invalid JWT Signature.")
        try:
            header_b64, payload_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(header_b64))
            payload = json.loads(_b64url_decode(payload_b64))
            signature = _b64url_decode(signature_b64)
        except ValueError:
            return _invalid_grant("Invalid JWT: Token must be a short-lived token")
        if not isinstance(header, dict) or not isinstance(payload, dict):
            return bad_signature
        with self._lock:
            account = self._service_accounts.get(str(payload.get("iss")))
        if account is None or header.get("alg") != "RS256":
            return bad_signature
        if header.get("kid") not in (None, account.key_id):
            return bad_signature
        verifier = crypt.RSAVerifier.from_string(  # type: ignore[no-untyped-call]
            account.public_key_pem
        )
        signed = f"{header_b64}.{payload_b64}".encode("ascii")
        if not verifier.verify(signed, signature):
            return bad_signature
        if payload.get("aud") not in (GOOGLE_TOKEN_URI, self.token_uri):
            return _invalid_grant("Invalid JWT: Failed audience check.")
        # google-auth signs iat/exp with the real clock, so they are checked
        # against it; the tokens minted from the grant follow the injected clock.
        now = time.time()
        iat, exp = payload.get("iat"), payload.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return _invalid_grant("Invalid JWT: Token must be a short-lived token")
        if (
            iat > now + _JWT_SKEW
            or exp <= now - _JWT_SKEW
            or exp - iat > _JWT_MAX_LIFETIME
        ):
            return _invalid_grant(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and "
                "in a reasonable timeframe. Check your iat and exp values in the "
                "JWT claim."
            )
        return account, payload

    def _authorize(self, params: dict[str, str]) -> Reply:
        """The consent page: agree at once and redirect with a code."""
        with self._lock:
            self._auth_requests.append(dict(params))
            redirect_uri = params.get("redirect_uri", "")
            parsed = urllib.parse.urlsplit(redirect_uri)
            if params.get("client_id") not in self._clients:
                return Reply(
                    401, "Error 401: invalid_client. The OAuth client was not found."
                )
            if parsed.scheme != "http" or parsed.hostname not in (
                "127.0.0.1",
                "localhost",
                "::1",
            ):
                return Reply(400, "Error 400: redirect_uri_mismatch")
            extra: dict[str, str] = {}
            if "state" in params:
                extra["state"] = params["state"]
            hint = params.get("login_hint")
            user = hint if hint in self._users else next(iter(self._users), None)
            scopes = frozenset(params.get("scope", "").split())
            if params.get("response_type") != "code" or not scopes:
                extra["error"] = "invalid_request"
            elif user is None:
                extra["error"] = "access_denied"
            else:
                code = "4/0" + secrets.token_urlsafe(48)
                self._codes[code] = _Code(
                    user=user,
                    client_id=params["client_id"],
                    redirect_uri=redirect_uri,
                    scopes=scopes,
                    challenge=params.get("code_challenge"),
                    method=params.get("code_challenge_method", "plain"),
                    expires_at=self._clock() + _CODE_LIFETIME,
                )
                extra["code"] = code
                extra["scope"] = " ".join(sorted(scopes))
        separator = "&" if parsed.query else "?"
        location = redirect_uri + separator + urllib.parse.urlencode(extra)
        return Reply(302, "", location=location)

    def _tokeninfo(self, token: str) -> Reply:
        info = self.lookup(token) if token else None
        if info is None:
            return Reply(
                400, {"error": "invalid_token", "error_description": "Invalid Value"}
            )
        now = self._clock()
        with self._lock:
            sub = self._users.get(info.email, info.email)
        return Reply(
            200,
            {
                "azp": info.client_id,
                "aud": info.client_id,
                "sub": sub,
                "scope": " ".join(sorted(info.scopes)),
                "exp": str(int(info.expires_at.timestamp())),
                "expires_in": str(max(0, int((info.expires_at - now).total_seconds()))),
                "email": info.email,
                "email_verified": "true",
                "access_type": "offline",
            },
        )

    def _revoke_endpoint(self, token: str) -> Reply:
        with self._lock:
            found = bool(token) and self._revoke_token(token)
        if not found:
            return Reply(
                400,
                {
                    "error": "invalid_token",
                    "error_description": "Token expired or revoked",
                },
            )
        return Reply(200, {})


def _invalid_grant(description: str) -> Reply:
    return Reply(400, {"error": "invalid_grant", "error_description": description})


def _invalid_client() -> Reply:
    return Reply(401, {"error": "invalid_client", "error_description": "Unauthorized"})
