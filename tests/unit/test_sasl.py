"""The SASL codec: Google's vector, OAUTHBEARER, error challenges, server parsing."""

from __future__ import annotations

import base64

import pytest

from gmail_xoauth2 import (
    MAIL_SCOPE,
    ChallengeDecodeError,
    ConfigurationError,
    ErrorChallenge,
    decode_error_challenge,
    oauthbearer_response,
    oauthbearer_string,
    xoauth2_response,
    xoauth2_string,
)
from gmail_xoauth2.errors import ProtocolError
from gmail_xoauth2.sasl import (
    encode_error_challenge,
    parse_client_response,
    parse_oauthbearer_response,
    parse_xoauth2_response,
)

GOOGLE_USER = "someuser@example.com"
GOOGLE_TOKEN = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
GOOGLE_STRING = (
    "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52"
    "YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
)


def test_google_documented_vector() -> None:
    assert xoauth2_string(GOOGLE_USER, GOOGLE_TOKEN) == GOOGLE_STRING


def test_xoauth2_raw_bytes() -> None:
    assert xoauth2_response(GOOGLE_USER, GOOGLE_TOKEN) == (
        b"user=someuser@example.com\x01auth=Bearer "
        b"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
    )


def test_oauthbearer_without_host_and_port() -> None:
    assert (
        oauthbearer_response("a@b.c", "tok") == b"n,a=a@b.c,\x01auth=Bearer tok\x01\x01"
    )


def test_oauthbearer_with_host_and_port() -> None:
    raw = oauthbearer_response("a@b.c", "tok", host="imap.gmail.com", port=993)
    assert raw == (
        b"n,a=a@b.c,\x01host=imap.gmail.com\x01port=993\x01auth=Bearer tok\x01\x01"
    )
    assert oauthbearer_string("a@b.c", "tok", host="imap.gmail.com", port=993) == (
        base64.b64encode(raw).decode()
    )


def test_oauthbearer_escapes_gs2_specials() -> None:
    raw = oauthbearer_response("we,ird=user@x", "tok")
    assert raw.startswith(b"n,a=we=2Cird=3Duser@x,\x01")
    assert parse_oauthbearer_response(raw).user == "we,ird=user@x"


@pytest.mark.parametrize(
    ("user", "token"),
    [
        ("", "tok"),
        ("a\x01b@x", "tok"),
        ("a@x\r\n", "tok"),
        ("a@x", ""),
        ("a@x", "to ken"),
        ("a@x", "tok\x01"),
        ("a@x", "tok\n"),
        ("a@x", "tök"),
    ],
)
def test_bad_input_is_a_configuration_error(user: str, token: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        xoauth2_response(user, token)
    with pytest.raises(ConfigurationError):
        oauthbearer_response(user, token)
    if token.strip():
        assert token not in str(info.value)


def test_decode_gmail_challenge_from_the_wire() -> None:
    # The exact continuation Gmail sent in google/gmail-oauth2-tools#78.
    wire = (
        b"eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21h"
        b"aWwuZ29vZ2xlLmNvbS8ifQ==\r\n"
    )
    challenge = decode_error_challenge(wire)
    assert challenge == ErrorChallenge("400", "Bearer", MAIL_SCOPE)
    assert challenge.raw == {"status": "400", "schemes": "Bearer", "scope": MAIL_SCOPE}


def test_decode_google_doc_challenge_with_newline_inside() -> None:
    # Google's IMAP/SMTP doc example: JSON followed by "\n", status 401.
    doc = (
        "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9t"
        "YWlsLmdvb2dsZS5jb20vIn0K"
    )
    challenge = decode_error_challenge(doc)
    assert (challenge.status, challenge.schemes, challenge.scope) == (
        "401",
        "bearer mac",
        MAIL_SCOPE,
    )


def test_decode_oauthbearer_challenge() -> None:
    data = base64.b64encode(
        b'{"status":"invalid_token","scope":"x","openid-configuration":"u"}'
    )
    challenge = decode_error_challenge(data)
    assert challenge.status == "invalid_token"
    assert challenge.schemes is None
    assert challenge.raw["openid-configuration"] == "u"


def test_numeric_status_is_text() -> None:
    assert decode_error_challenge(base64.b64encode(b'{"status":401}')).status == "401"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"!!!not base64!!!",
        base64.b64encode(b"not json"),
        base64.b64encode(b"[1,2]"),
        base64.b64encode(b'{"schemes":"Bearer"}'),
        base64.b64encode(b'{"status":true}'),
        base64.b64encode(b"\xff\xfe"),
        "caf\u00e9",
    ],
)
def test_garbage_challenge_is_a_typed_error(garbage: bytes | str) -> None:
    with pytest.raises(ChallengeDecodeError) as info:
        decode_error_challenge(garbage)
    assert isinstance(info.value, ValueError)


def test_encode_error_challenge_round_trips_gmail_bytes() -> None:
    assert encode_error_challenge() == (
        b"eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21h"
        b"aWwuZ29vZ2xlLmNvbS8ifQ=="
    )


def test_server_side_parse_of_both_mechanisms() -> None:
    x = parse_client_response("xoauth2", GOOGLE_STRING)
    assert (x.mechanism, x.user, x.token) == ("XOAUTH2", GOOGLE_USER, GOOGLE_TOKEN)
    assert GOOGLE_TOKEN not in repr(x)
    o = parse_client_response(
        "OAUTHBEARER", oauthbearer_string("a@b.c", "tok", host="h", port=1)
    )
    assert (o.user, o.token, o.host, o.port) == ("a@b.c", "tok", "h", 1)


@pytest.mark.parametrize(
    "raw",
    [
        b"user=a@b\x01auth=Bearer t\x01",  # one ^A short
        b"auth=Bearer t\x01\x01",  # no user
        b"user=a@b\x01auth=Basic t\x01\x01",  # not Bearer
        b"user=a@b\x01junk\x01\x01",  # no "=" in a pair
        b"\xff\x01\x01",
    ],
)
def test_server_side_rejects_malformed_xoauth2(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_xoauth2_response(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"n,,\x01auth=Bearer t\x01\x01",  # no authzid
        b"p=x,a=u,\x01auth=Bearer t\x01\x01",  # channel binding flag
        b"n,a=u,\x01port=x\x01auth=Bearer t\x01\x01",
        b"n,a=u,\x01auth=Bearer t\x01",
    ],
)
def test_server_side_rejects_malformed_oauthbearer(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_oauthbearer_response(raw)


def test_server_side_rejects_non_base64_and_unknown_mechanism() -> None:
    with pytest.raises(ProtocolError):
        parse_client_response("XOAUTH2", "%%%")
    with pytest.raises(ProtocolError):
        parse_client_response("PLAIN", GOOGLE_STRING)
