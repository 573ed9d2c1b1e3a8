"""A private Dovecot for the benchmarks, started with the integration tests' code.

Dovecot's greeting carries its capabilities (Gmail's does not), which is the
case where skipping CAPABILITY saves a round trip. It needs root and the
packages ``scripts/install-test-deps.sh`` installs; when it cannot run,
:func:`dovecot_server` yields the reason instead and the benchmark skips it.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clients import Endpoint

from gmail_xoauth2.testing._pki import make_pki
from gmail_xoauth2.testing.google import FakeGoogle

__all__ = ["DovecotBench", "dovecot_server"]

_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DovecotBench:
    """A running private Dovecot: an IMAP endpoint and its user's Maildir."""

    endpoint: Endpoint
    maildir: Path

    def fill(self, messages: Iterable[bytes]) -> None:
        """Drop messages into the INBOX's ``new/``, as a delivery agent would.

        Much faster than APPEND; Dovecot picks them up at the next SELECT.
        """
        owner = self.maildir.stat()
        for n, message in enumerate(messages):
            path = self.maildir / "new" / f"{time.time_ns()}.bench{n}.localhost"
            path.write_bytes(message)
            os.chown(path, owner.st_uid, owner.st_gid)


@contextlib.contextmanager
def dovecot_server() -> Iterator[DovecotBench | str]:
    """Yield a private Dovecot (implicit-TLS IMAP), or the reason it cannot run."""
    if str(_ROOT) not in sys.path:
        sys.path.append(str(_ROOT))
    try:
        from tests.integration._dovecot import (
            DovecotUnavailable,
            check_prerequisites,
            running_dovecot,
            scratch_root,
        )
        from tests.integration._relay import RelaySink
    except ImportError as exc:
        yield f"the integration tests' Dovecot launcher is not importable ({exc})"
        return
    try:
        check_prerequisites()
    except DovecotUnavailable as exc:
        yield f"{exc} (run `sudo scripts/install-test-deps.sh`)"
        return
    # As tests/integration/conftest.py starts it.
    with scratch_root() as root, FakeGoogle() as google:
        (root / "pki").mkdir()
        pki = make_pki(root / "pki", hosts=("127.0.0.2",))
        with (
            RelaySink(str(root / "run" / "lmtp")) as sink,
            running_dovecot(
                root,
                pki=pki,
                tokeninfo_url=google.tokeninfo_uri + "?access_token=",
                relay_port=sink.port,
            ) as dovecot,
        ):
            user = google.add_user(dovecot.new_user())
            yield DovecotBench(
                Endpoint(
                    "127.0.0.1",
                    dovecot.ports.imaps,
                    ssl.create_default_context(cafile=str(pki.ca_file)),
                    user,
                    google.mint_access_token(user),
                ),
                dovecot.maildir(user),
            )
