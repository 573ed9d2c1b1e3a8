"""Watch the INBOX and print each new message, for hours or days.

    python watch_inbox.py --token-file token.json --user you@gmail.com

IMAP4.watch() reports every new message once, in order, across Gmail's hourly
session ends, token refreshes and network outages of any length (it waits and
reconnects as long as it takes). Stop with Ctrl-C or SIGTERM, or after
``--hours`` or ``--max-messages``. Against the fake Gmail add
``--host 127.0.0.1 --port PORT --cafile CA.pem``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import signal
import ssl
import threading
from types import FrameType

from gmail_xoauth2 import (
    GMAIL_IMAP_HOST,
    IMAP4,
    GoogleTokenProvider,
    NewMessage,
    UIDValidityChanged,
)


def describe(imap: IMAP4, uid: int) -> str:
    _, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
    raw = next(item[1] for item in data if isinstance(item, tuple))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return f"new message {uid}: {msg['From']} - {msg['Subject']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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

    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    if args.hours:
        timer = threading.Timer(args.hours * 3600, stop.set)
        timer.daemon = True
        timer.start()

    seen = 0
    with IMAP4(args.user, tokens, args.host, args.port, ssl_context=context) as imap:
        try:
            with imap.watch("INBOX", stop=stop) as watcher:
                print(f"Watching the INBOX of {args.user}", flush=True)
                for event in watcher:
                    if isinstance(event, UIDValidityChanged):
                        print("the INBOX was renumbered; watching from now on")
                        continue
                    assert isinstance(event, NewMessage)
                    print(describe(imap, event.uid), flush=True)
                    seen += 1
                    if args.max_messages and seen >= args.max_messages:
                        break
        except KeyboardInterrupt:
            pass
    print(f"Stopped after {seen} new message(s).")


if __name__ == "__main__":
    main()
