"""``python -m gmail_xoauth2.testing``: run the fake Gmail until interrupted.

It prints the host (``localhost``, the name its certificate covers), the ports,
the CA file, the control URL and an access token for the first user, so other
mail programs (curl, msmtp, mutt) can be pointed at it by hand. The token is
minted by the fake Google and is worthless anywhere else.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from ._control import CONTROL_ENV, display_host
from .gmail import FakeGmail

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gmail_xoauth2.testing",
        description="Run a fake Gmail (IMAP, POP3, SMTP, OAuth) on loopback.",
    )
    parser.add_argument(
        "--user",
        action="append",
        dest="users",
        metavar="ADDRESS",
        help="an account to create (repeatable; default alice@ and bob@example.com)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (127.0.0.1)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the details as one JSON object"
    )
    return parser


def main(
    argv: Sequence[str] | None = None, *, stop: threading.Event | None = None
) -> int:
    """Start the fake, print where it is, serve until Ctrl-C (or ``stop`` is set).

    Returns:
        The exit status: 0.
    """
    args = _parser().parse_args(argv)
    users = tuple(args.users or ("alice@example.com", "bob@example.com"))
    if stop is None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            # `kill` (SIGTERM) stops it as cleanly as Ctrl-C: certificates removed.
            signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    with FakeGmail(users, host=args.host) as gmail:
        token = gmail.mint_token(users[0])
        details: dict[str, object] = {
            # The name the certificate covers for every client (mbsync and
            # offlineimap check DNS names only); it listens on "address" alone.
            "host": display_host(gmail.host),
            "address": gmail.host,
            "imap_port": gmail.imap_port,
            "pop_port": gmail.pop_port,
            "smtp_port": gmail.smtp_port,
            "submission_port": gmail.submission_port,
            "token_uri": gmail.token_uri,
            "control_url": gmail.control_url,
            "ca_file": gmail.ca_file,
            "users": list(users),
            "user": users[0],
            "access_token": token,
        }
        if args.json:
            print(json.dumps(details), flush=True)
        else:
            print(_describe(details), flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


def _describe(d: dict[str, object]) -> str:
    host = d["host"]
    users = d["users"]
    assert isinstance(users, list)
    return "\n".join(
        [
            f"Fake Gmail on {host}, listening on {d['address']} (Ctrl-C to stop)",
            f"  IMAP         {host}:{d['imap_port']}  implicit TLS, like :993",
            f"  POP3         {host}:{d['pop_port']}  implicit TLS, like :995",
            f"  SMTP         {host}:{d['smtp_port']}  implicit TLS, like :465",
            f"  Submission   {host}:{d['submission_port']}  STARTTLS, like :587",
            f"  Token URI    {d['token_uri']}",
            f"  Control      {d['control_url']}  (export {CONTROL_ENV}=<this>)",
            f"  CA file      {d['ca_file']}",
            f"  Users        {', '.join(map(str, users))}",
            f"  Access token for {d['user']} (valid 3599 s on this fake only):",
            f"  {d['access_token']}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
