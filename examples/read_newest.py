"""Print the sender, date and subject of the newest messages in the INBOX.

    python read_newest.py --token-file token.json --user you@gmail.com --count 10

Against the fake Gmail (``gmail-xoauth2 fake-gmail`` prints the values), add
``--host 127.0.0.1 --port PORT --cafile CA.pem``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import ssl

from gmail_xoauth2 import GMAIL_IMAP_HOST, IMAP4, GoogleTokenProvider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-file", default=os.environ.get("GMAIL_TOKEN_FILE"))
    parser.add_argument("--user", default=os.environ.get("GMAIL_USER"))
    parser.add_argument("--count", type=int, default=10)
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

    with IMAP4(args.user, tokens, args.host, args.port, ssl_context=context) as imap:
        _, data = imap.select("INBOX", readonly=True)
        total = int(data[0])
        print(f"INBOX: {total} messages")
        first = max(1, total - args.count + 1)
        if total == 0:
            return
        _, data = imap.fetch(
            f"{first}:{total}", "(UID BODY.PEEK[HEADER.FIELDS (FROM DATE SUBJECT)])"
        )
        headers = [item[1] for item in data if isinstance(item, tuple)]
        for raw in reversed(headers):  # newest first
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            print(f"{msg['Date']!s:<32}  {msg['From']!s:<30}  {msg['Subject']}")


if __name__ == "__main__":
    main()
