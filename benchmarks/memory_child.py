"""Scenario 6's child: fetch one message with one client, print peak RSS as JSON.

Each client runs in its own fresh interpreter so their peaks cannot mix. The
parent passes the endpoint as JSON on stdin (never a token on the command line).
"""

from __future__ import annotations

import json
import resource
import ssl
import sys


def _peak_kib() -> int:
    """This process's peak resident set size, in KiB.

    VmHWM belongs to the address space made by exec. ``ru_maxrss`` would not
    do: Linux carries it over from the parent across fork and exec, so a child
    of a big benchmark process would report the parent's peak.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    args = json.load(sys.stdin)
    context = ssl.create_default_context(cafile=args["ca_file"])
    host, port, user, token = args["host"], args["port"], args["user"], args["token"]
    if args["client"] == "imaplib":
        import imaplib

        from gmail_xoauth2 import xoauth2_response

        raw = xoauth2_response(user, token)
        conn = imaplib.IMAP4_SSL(host, port, ssl_context=context)
        conn.authenticate("XOAUTH2", lambda _challenge: raw)
    else:
        from gmail_xoauth2 import IMAP4, StaticTokenProvider

        conn = IMAP4(user, StaticTokenProvider(token), host, port, ssl_context=context)
    conn.select("INBOX", readonly=True)
    before = _peak_kib()
    typ, data = conn.fetch("1", "(RFC822)")
    assert typ == "OK"
    size = len(data[0][1])
    peak = _peak_kib()
    del data
    conn.logout()
    json.dump({"before_kib": before, "peak_kib": peak, "size": size}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
