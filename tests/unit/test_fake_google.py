"""The fake Google OAuth endpoints answer as Google does, on an injected clock."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import google.auth.transport.requests
import google.oauth2.service_account
import pytest
import requests
from google.auth import jwt

from gmail_xoauth2 import MAIL_SCOPE
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.google import (
    GOOGLE_TOKEN_URI,
    IMAP_ADMIN_SCOPE,
    FakeGoogle,
    TokenInfo,
)

USER = "alice@example.com"
OTHER = "bob@example.com"
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeGoogle]:
    with FakeGoogle(clock=clock) as google:
        google.add_user(USER)
        google.add_user(OTHER)
        yield google


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def _refresh(
    fake: FakeGoogle, http: requests.Session, refresh_token: str, **extra: str
) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        **extra,
    }
    return http.post(fake.token_uri, data=form)


def _authorize(
    fake: FakeGoogle, http: requests.Session, verifier: str, **extra: str
) -> dict[str, str]:
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        .rstrip(b"=")
        .decode()
    )
    params = {
        "response_type": "code",
        "client_id": fake.client_id,
        "redirect_uri": "http://127.0.0.1:9/",
        "scope": MAIL_SCOPE,
        "state": "st4te",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    reply = http.get(fake.auth_uri, params=params, allow_redirects=False)
    assert reply.status_code == 302
    location = reply.headers["Location"]
    assert location.startswith("http://127.0.0.1:9/?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def test_it_listens_on_loopback_only(fake: FakeGoogle) -> None:
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake.token_uri == fake.url + "/token"
    assert fake.tokeninfo_uri == fake.url + "/tokeninfo"
    assert fake.users == (USER, OTHER)


def test_refresh_grant_answers_in_googles_shape(
    fake: FakeGoogle, http: requests.Session
) -> None:
    reply = _refresh(fake, http, fake.issue_refresh_token(USER))
    assert reply.status_code == 200
    body = reply.json()
    assert sorted(body) == ["access_token", "expires_in", "scope", "token_type"]
    assert body["expires_in"] == 3599
    assert body["token_type"] == "Bearer"
    assert body["scope"] == MAIL_SCOPE
    info = fake.lookup(body["access_token"])
    assert info == TokenInfo(
        USER, frozenset({MAIL_SCOPE}), START + timedelta(seconds=3599), fake.client_id
    )
    assert fake.request_count("/token", grant_type="refresh_token") == 1


def test_a_revoked_refresh_token_gets_invalid_grant(
    fake: FakeGoogle, http: requests.Session
) -> None:
    refresh_token = fake.issue_refresh_token(USER)
    fake.revoke(USER)
    reply = _refresh(fake, http, refresh_token)
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


def test_a_wrong_client_secret_gets_invalid_client(
    fake: FakeGoogle, http: requests.Session
) -> None:
    reply = _refresh(fake, http, fake.issue_refresh_token(USER), client_secret="nope")
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"


def test_a_scope_beyond_the_grant_is_refused(
    fake: FakeGoogle, http: requests.Session
) -> None:
    reply = _refresh(fake, http, fake.issue_refresh_token(USER), scope="other")
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_scope"


def test_tokens_expire_on_the_injected_clock(
    fake: FakeGoogle, clock: ManualClock
) -> None:
    token = fake.mint_access_token(USER, ttl=60)
    clock.advance(59)
    assert fake.lookup(token) is not None
    clock.advance(1)
    assert fake.lookup(token) is None


def test_expire_tokens_and_revoke(fake: FakeGoogle) -> None:
    mine, theirs = fake.mint_access_token(USER), fake.mint_access_token(OTHER)
    fake.expire_tokens(USER)
    assert fake.lookup(mine) is None
    assert fake.lookup(theirs) is not None
    fake.revoke(theirs)
    assert fake.lookup(theirs) is None
    assert fake.lookup("ya29.unknown") is None
    with pytest.raises(KeyError):
        fake.revoke("nobody")


def test_revoking_a_refresh_token_revokes_its_access_tokens(
    fake: FakeGoogle, http: requests.Session
) -> None:
    refresh_token = fake.issue_refresh_token(USER)
    access = _refresh(fake, http, refresh_token).json()["access_token"]
    unrelated = fake.mint_access_token(USER)
    reply = http.post(fake.revoke_uri, data={"token": refresh_token})
    assert reply.status_code == 200
    assert fake.lookup(access) is None
    assert fake.lookup(unrelated) is not None
    assert _refresh(fake, http, refresh_token).status_code == 400
    again = http.post(fake.revoke_uri, data={"token": refresh_token})
    assert again.status_code == 200  # known token, already revoked
    unknown = http.post(fake.revoke_uri, data={"token": "nope"})
    assert unknown.status_code == 400


def test_tokeninfo_answers_in_googles_shape(
    fake: FakeGoogle, http: requests.Session, clock: ManualClock
) -> None:
    token = fake.mint_access_token(USER)
    clock.advance(99)
    reply = http.get(fake.tokeninfo_uri, params={"access_token": token})
    assert reply.status_code == 200
    body = reply.json()
    sub = body.pop("sub")
    assert sub.isdigit()
    assert body == {
        "azp": fake.client_id,
        "aud": fake.client_id,
        "scope": MAIL_SCOPE,
        "exp": str(int((START + timedelta(seconds=3599)).timestamp())),
        "expires_in": "3500",
        "email": USER,
        "email_verified": "true",
        "access_type": "offline",
    }
    # Dovecot sends the token in the URL and as a Bearer header.
    by_header = http.get(
        fake.tokeninfo_uri, headers={"Authorization": f"Bearer {token}"}
    )
    assert by_header.json()["email"] == USER


def test_tokeninfo_refuses_a_bad_token_with_400(
    fake: FakeGoogle, http: requests.Session, clock: ManualClock
) -> None:
    token = fake.mint_access_token(USER, ttl=10)
    clock.advance(10)
    for value in (token, "ya29.unknown", ""):
        reply = http.get(fake.tokeninfo_uri, params={"access_token": value})
        assert reply.status_code == 400
        assert reply.json() == {
            "error": "invalid_token",
            "error_description": "Invalid Value",
        }


def test_fail_next_and_request_count(fake: FakeGoogle, http: requests.Session) -> None:
    refresh_token = fake.issue_refresh_token(USER)
    fake.fail_next(503, count=2)
    fake.fail_next(400, path="/tokeninfo", body={"error": "custom"})
    assert _refresh(fake, http, refresh_token).status_code == 503
    assert _refresh(fake, http, refresh_token).status_code == 503
    assert _refresh(fake, http, refresh_token).status_code == 200
    reply = http.get(fake.tokeninfo_uri, params={"access_token": "x"})
    assert (reply.status_code, reply.json()) == (400, {"error": "custom"})
    assert fake.request_count() == 3
    assert fake.request_count(grant_type="refresh_token") == 3
    assert fake.request_count(grant_type="authorization_code") == 0
    assert fake.request_count("/tokeninfo") == 1


def test_auth_consents_and_the_code_needs_the_pkce_verifier(
    fake: FakeGoogle, http: requests.Session
) -> None:
    verifier = "v" * 64
    params = _authorize(fake, http, verifier, login_hint=OTHER)
    assert params["state"] == "st4te"
    assert params["scope"] == MAIL_SCOPE
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": "http://127.0.0.1:9/",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }
    wrong = http.post(fake.token_uri, data={**form, "code_verifier": "w" * 64})
    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid code verifier.",
    }
    # A fresh code (the failed exchange consumed the first one, as at Google).
    params = _authorize(fake, http, verifier, login_hint=OTHER)
    good = http.post(
        fake.token_uri, data={**form, "code": params["code"], "code_verifier": verifier}
    )
    assert good.status_code == 200
    body = good.json()
    assert body["refresh_token"].startswith("1//")
    assert fake.lookup(body["access_token"]).email == OTHER  # type: ignore[union-attr]
    reused = http.post(
        fake.token_uri, data={**form, "code": params["code"], "code_verifier": verifier}
    )
    assert reused.json()["error"] == "invalid_grant"
    assert fake.auth_requests()[0]["login_hint"] == OTHER


def test_auth_picks_the_first_user_without_a_hint(
    fake: FakeGoogle, http: requests.Session
) -> None:
    verifier = "v" * 64
    params = _authorize(fake, http, verifier)
    reply = http.post(
        fake.token_uri,
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": "http://127.0.0.1:9/",
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "code_verifier": verifier,
        },
    )
    assert fake.lookup(reply.json()["access_token"]).email == USER  # type: ignore[union-attr]


def test_auth_refuses_unknown_clients_and_remote_redirects(
    fake: FakeGoogle, http: requests.Session
) -> None:
    base = {"response_type": "code", "scope": MAIL_SCOPE, "state": "s"}
    unknown = http.get(
        fake.auth_uri,
        params={**base, "client_id": "nope", "redirect_uri": "http://127.0.0.1:9/"},
        allow_redirects=False,
    )
    assert unknown.status_code == 401
    remote = http.get(
        fake.auth_uri,
        params={
            **base,
            "client_id": fake.client_id,
            "redirect_uri": "http://evil.example/",
        },
        allow_redirects=False,
    )
    assert remote.status_code == 400


def test_jwt_bearer_grant_mints_a_token_for_the_subject(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    key_file = fake.write_service_account_file(tmp_path / "sa.json")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    credentials = google.oauth2.service_account.Credentials.from_service_account_file(
        str(key_file), scopes=[IMAP_ADMIN_SCOPE]
    ).with_subject(USER)
    with requests.Session() as session:
        credentials.refresh(google.auth.transport.requests.Request(session))
    info = fake.lookup(credentials.token)
    assert info is not None
    assert info.email == USER
    assert info.scopes == frozenset({IMAP_ADMIN_SCOPE})
    assert info.client_id == json.loads(key_file.read_text())["client_id"]
    assert (
        fake.request_count(grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer")
        == 1
    )


def _jwt_reply(
    fake: FakeGoogle, http: requests.Session, key_file: Path, **claims: object
) -> requests.Response:
    info = json.loads(key_file.read_text())
    signer = google.oauth2.service_account.Credentials.from_service_account_info(
        info
    ).signer
    now = int(datetime.now(UTC).timestamp())
    payload = {
        "iss": info["client_email"],
        "aud": GOOGLE_TOKEN_URI,
        "scope": MAIL_SCOPE,
        "sub": USER,
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    assertion = jwt.encode(signer, payload).decode()
    return http.post(
        fake.token_uri,
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": assertion,
        },
    )


def test_jwt_checks_audience_lifetime_subject_and_signature(
    fake: FakeGoogle, http: requests.Session, tmp_path: Path
) -> None:
    key_file = fake.write_service_account_file(tmp_path / "sa.json")
    assert _jwt_reply(fake, http, key_file).status_code == 200
    assert _jwt_reply(fake, http, key_file, aud=fake.token_uri).status_code == 200
    for claims in (
        {"aud": "https://example.com/token"},
        {"exp": int(datetime.now(UTC).timestamp()) - 3600},
        {"sub": "stranger@example.com"},
    ):
        reply = _jwt_reply(fake, http, key_file, **claims)
        assert reply.status_code == 400, claims
        assert reply.json()["error"] == "invalid_grant"
    # A key the fake did not issue: the signature does not verify.
    impostor = fake.write_service_account_file(tmp_path / "other.json")
    forged = json.loads(impostor.read_text())
    forged["client_email"] = json.loads(key_file.read_text())["client_email"]
    forged_file = tmp_path / "forged.json"
    forged_file.write_text(json.dumps(forged))
    fake.write_service_account_file(key_file)  # the real account gets a new key
    reply = _jwt_reply(fake, http, forged_file)
    assert reply.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid JWT Signature.",
    }


def test_files_it_writes(fake: FakeGoogle, clock: ManualClock, tmp_path: Path) -> None:
    secrets_file = fake.write_client_secrets_file(tmp_path / "client.json")
    installed = json.loads(secrets_file.read_text())["installed"]
    assert installed["client_id"] == fake.client_id
    assert installed["token_uri"] == fake.token_uri
    assert installed["auth_uri"] == fake.auth_uri
    token_file = fake.write_authorized_user_file(tmp_path / "token.json", USER)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    data = json.loads(token_file.read_text())
    assert sorted(data) == [
        "client_id",
        "client_secret",
        "expiry",
        "refresh_token",
        "scopes",
        "token",
        "token_uri",
    ]
    assert data["expiry"] == "2026-03-01T12:59:59Z"
    assert fake.lookup(data["token"]) is not None
    expired = json.loads(
        fake.write_authorized_user_file(
            tmp_path / "old.json", USER, expired=True
        ).read_text()
    )
    assert fake.lookup(expired["token"]) is None
    assert expired["expiry"] == "2026-03-01T11:59:59Z"


def test_no_token_in_reprs(fake: FakeGoogle) -> None:
    token = fake.mint_access_token(USER)
    info = fake.lookup(token)
    assert token not in repr(info)
    assert fake.client_secret not in repr(fake)
