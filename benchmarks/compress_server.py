"""Scenario 8's server: the fake Gmail in a process of its own, its INBOX filled.

Run by scenario_compress: ``python compress_server.py USER COUNT``. It prints
one JSON line (port, CA file, token) and serves until its stdin closes. In
the benchmark's own process, the fake's threads would share the GIL with the
client and the time of one would be charged to the other.
"""

from __future__ import annotations

import json
import sys

from scenario_compress import make_text_message

from gmail_xoauth2.testing.gmail import FakeGmail


def main() -> int:
    user, count = sys.argv[1], int(sys.argv[2])
    with FakeGmail((user,)) as gmail:
        for n in range(count):
            gmail.deliver(user, make_text_message(user, n))
        details = {
            "host": gmail.host,
            "port": gmail.imap_port,
            "ca_file": str(gmail.ca_file),
            "token": gmail.mint_token(user),
        }
        print(json.dumps(details), flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
