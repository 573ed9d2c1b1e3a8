"""The scrubber: whole secrets, secrets cut short, exception chains, log records."""

from __future__ import annotations

import base64
import logging

import pytest

from gmail_xoauth2 import AuthenticationFailed, sasl
from gmail_xoauth2._redact import (
    REDACTED,
    get_logger,
    remember,
    scrub,
    scrub_bytes,
    scrub_exception,
)

USER = "a.rather.long.user.name@example.com"
TOKEN = "ya29.redact-test-token-0123456789abcdef"
RAW = sasl.xoauth2_response(USER, TOKEN)
B64 = base64.b64encode(RAW).decode("ascii")


@pytest.fixture(autouse=True)
def _registered() -> None:
    remember(TOKEN, B64, RAW)


def test_whole_secrets_are_replaced_in_text_and_bytes() -> None:
    assert scrub(f"NO rejected: AUTHENTICATE XOAUTH2 {B64}") == (
        f"NO rejected: AUTHENTICATE XOAUTH2 {REDACTED}"
    )
    assert scrub_bytes(f"+OK {TOKEN}!".encode()) == f"+OK {REDACTED}!".encode()
    assert TOKEN not in scrub(RAW.decode())


@pytest.mark.parametrize("cut", [16, 40, len(B64) - 1])
def test_a_secret_quoted_cut_short_is_replaced(cut: int) -> None:
    text = f"535 5.7.8 bad credentials: {B64[:cut]}... try again"
    clean = scrub(text)
    assert clean.startswith(f"535 5.7.8 bad credentials: {REDACTED}")
    assert clean.endswith("... try again")
    assert B64[:16] not in clean
    assert scrub_bytes(text.encode()) == scrub(text).encode()
    assert scrub(f"token {TOKEN[:20]}...") == f"token {REDACTED}..."


def test_the_user_and_ordinary_words_are_kept() -> None:
    text = f"{USER} rejected at imap.gmail.com:993 (AUTHENTICATIONFAILED)"
    assert scrub(text) == text
    short = B64[:15]  # too short to be told from ordinary text
    assert scrub(f"x {short} y") == f"x {short} y"


def test_an_exception_chain_is_scrubbed_in_place() -> None:
    cause = OSError(f"server said {TOKEN}")
    error = AuthenticationFailed(
        f"rejected: {B64}",
        protocol="imap",
        mechanism="XOAUTH2",
        server_text=f"NO {B64}",
    )
    error.__cause__ = cause
    error.add_note(f"note {TOKEN}")
    scrub_exception(error)
    for text in (
        str(error),
        repr(error),
        error.server_text,
        str(cause),
        *error.__notes__,
    ):
        assert TOKEN not in text and B64 not in text
    assert error.server_text == f"NO {REDACTED}"


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("gmail_xoauth2.test_redact")
    with caplog.at_level(logging.DEBUG, logger="gmail_xoauth2.test_redact"):
        log.info("server said %s and %r", TOKEN, B64.encode())
    assert caplog.records
    message = caplog.records[0].getMessage()
    assert TOKEN not in message and B64 not in message
    assert message.startswith("server said <redacted> and b'<redacted>")


def test_loggers_are_named_for_the_public_modules() -> None:
    import importlib
    import pkgutil

    import gmail_xoauth2

    for module in pkgutil.iter_modules(gmail_xoauth2.__path__):
        importlib.import_module(f"gmail_xoauth2.{module.name}")
    names = {
        name
        for name in logging.Logger.manager.loggerDict
        if name.startswith("gmail_xoauth2")
        and not name.startswith("gmail_xoauth2.testing")
    }
    public = {
        "gmail_xoauth2",
        "gmail_xoauth2.auth",
        "gmail_xoauth2.cli",
        "gmail_xoauth2.imap",
        "gmail_xoauth2.pop",
        "gmail_xoauth2.smtp",
        "gmail_xoauth2.test_redact",  # this file's own, above
    }
    assert names <= public, sorted(names - public)
