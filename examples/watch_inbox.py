"""Watch the INBOX with IMAP IDLE and print each new message, for hours or days.

    python watch_inbox.py --token-file token.json --user you@gmail.com

Gmail ends the session every hour, when the access token expires; IMAP4 reconnects
with a fresh token and resumes IDLE, so this loop never sees it. Stop with Ctrl-C,
or after ``--hours`` or ``--max-messages``. Against the fake Gmail add
``--host 127.0.0.1 --port PORT --cafile CA.pem``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import ssl
import time

from gmail_xoauth2 import GMAIL_IMAP_HOST, IMAP4, GoogleTokenProvider


def new_uids(imap: IMAP4, after: int) -> list[int]:
    """UIDs above ``after`` (``UID n:*`` also matches the last message; drop it)."""
    _, data = imap.uid("SEARCH", None, f"UID {after + 1}:*")
    return sorted(uid for uid in map(int, data[0].split()) if uid > after)


def describe(imap: IMAP4, uid: int) -> str:
    _, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
    raw = next(item[1] for item in data if isinstance(item, tuple))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return f"new message {uid}: {msg['From']} - {msg['Subject']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-file", default=os.environ.get("GMAIL_TOKEN_FILE"))
    parser.add_argument("--user", default=os.environ.get("GMAIL_USER"))
    parser.add_argument("--hours", type=float, help="stop after this long")
    parser.add_argument("--max-messages", type=int, help="stop after this many")
    parser.add_argument("--host", default=GMAIL_IMAP_HOST)
    parser.add_argument("--port", type=int, default=993)
    parser.add_argument("--cafile", help="also trust this CA (for a test server)")
    args = parser.parse_args()
    if not args.token_file or not args.user:
        parser.error("--token-file and --user are required")

    context = ssl.create_default_context()
    if args.cafile:
        context.load_verify_locations(args.cafile)
    tokens = GoogleTokenProvider.from_authorized_user_file(args.token_file)
    stop_at = time.monotonic() + args.hours * 3600 if args.hours else None
    seen = 0

    with IMAP4(args.user, tokens, args.host, args.port, ssl_context=context) as imap:
        imap.select("INBOX", readonly=True)
        last_uid = max(new_uids(imap, 0), default=0)
        announced = False
        try:
            while stop_at is None or time.monotonic() < stop_at:
                remaining = None if stop_at is None else stop_at - time.monotonic()
                # IMAP4.idle renews IDLE before 29 minutes and survives session ends.
                with imap.idle(duration=remaining) as idler:
                    if not announced:  # IDLE is on: nothing new can be missed now
                        print(f"Watching the INBOX of {args.user}", flush=True)
                        announced = True
                    for kind, _ in idler:
                        if kind == "EXISTS":
                            break  # leaving the block sends DONE
                for uid in new_uids(imap, last_uid):
                    print(describe(imap, uid), flush=True)
                    last_uid, seen = uid, seen + 1
                if args.max_messages and seen >= args.max_messages:
                    break
        except KeyboardInterrupt:
            pass
    print(f"Stopped after {seen} new message(s).")


if __name__ == "__main__":
    main()
