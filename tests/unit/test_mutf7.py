"""IMAP modified UTF-7 (RFC 3501 5.1.3): known spellings, round trips, errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gmail_xoauth2 import ProtocolError
from gmail_xoauth2._mutf7 import ModifiedUTF7Error, decode, encode

# (text, wire form): RFC 3501's own example, Gmail's localized folder names.
KNOWN = [
    ("", ""),
    ("INBOX", "INBOX"),
    ("[Gmail]/All Mail", "[Gmail]/All Mail"),
    ("&", "&-"),
    ("R&D", "R&-D"),
    ("&&", "&-&-"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("[Gmail]/Envoyés", "[Gmail]/Envoy&AOk-s"),
    ("[Gmail]/Corbeille", "[Gmail]/Corbeille"),
    ("[Google Mail]/Gesendet", "[Google Mail]/Gesendet"),
    ("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
    ("é&é", "&AOk-&-&AOk-"),
    ("tab\there", "tab&AAk-here"),
    ("😀", "&2D3eAA-"),  # beyond the BMP: a surrogate pair
    ("a😀b𝄞c", "a&2D3eAA-b&2DTdHg-c"),
]


@pytest.mark.parametrize(("text", "wire"), KNOWN)
def test_known_spellings(text: str, wire: str) -> None:
    assert encode(text) == wire
    assert decode(wire) == text
    assert decode(wire.encode("ascii")) == text


@given(st.text())
def test_every_text_round_trips(text: str) -> None:
    try:
        wire = encode(text)
    except ModifiedUTF7Error:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return
    assert wire.isascii() and all(" " <= c <= "~" for c in wire)
    assert decode(wire) == text


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_printable_ascii_without_ampersand_is_unchanged(text: str) -> None:
    plain = text.replace("&", "")
    assert encode(plain) == plain


MALFORMED = [
    "&",  # a shift never ended
    "a&AOk",  # a run without its '-'
    "&AOk-&AOk-",  # two runs in a row: one run would do
    "&A-",  # truncated base64
    "&AOkA-",  # 3 bytes: half a UTF-16 unit
    "&AOl-",  # stray bits after the last byte
    "&AGE-",  # 'a' encoded: printable ASCII must stand for itself
    "&2D0-",  # a lone high surrogate
    "&AOk/-",  # '/' is not modified base64
    "caf\xe9",  # not ASCII
    "tab\there",  # a control character
    "&=-",
]


@pytest.mark.parametrize("wire", MALFORMED)
def test_malformed_input_raises(wire: str) -> None:
    with pytest.raises(ModifiedUTF7Error, match="not modified UTF-7"):
        decode(wire)


def test_bytes_outside_ascii_raise() -> None:
    with pytest.raises(ModifiedUTF7Error, match="outside ASCII"):
        decode(b"Envoy\xc3\xa9s")


def test_a_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(ModifiedUTF7Error, match="lone surrogate"):
        encode("a\ud800b")


def test_the_error_is_a_protocol_error_and_a_value_error() -> None:
    with pytest.raises(ProtocolError):
        decode("&")
    with pytest.raises(ValueError):
        decode("&")
