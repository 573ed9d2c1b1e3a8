"""Save the attachments of the messages that match a Gmail search into a folder.

    python download_attachments.py --token-file token.json --user you@gmail.com \\
        --query "has:attachment from:bank newer_than:30d" --out statements/

The query is Gmail's search syntax, run by Gmail itself (X-GM-RAW) over All Mail,
found by its SPECIAL-USE attribute whatever the account's language. Files are
named ``<uid>-<filename>``, so two attachments of the same name do not collide.

Against the fake Gmail (``gmail-xoauth2 fake-gmail`` prints the values), add
``--host 127.0.0.1 --port PORT --cafile CA.pem``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import ssl
from pathlib import Path

from gmail_xoauth2 import GMAIL_IMAP_HOST, IMAP4, GoogleTokenProvider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-file", default=os.environ.get("GMAIL_TOKEN_FILE"))
    parser.add_argument("--user", default=os.environ.get("GMAIL_USER"))
    parser.add_argument("--query", required=True, help="as in Gmail's search box")
    parser.add_argument("--out", type=Path, default=Path("attachments"))
    parser.add_argument("--host", default=GMAIL_IMAP_HOST)
    parser.add_argument("--port", type=int, default=993)
    parser.add_argument("--cafile", help="trust this CA instead (a test server)")
    args = parser.parse_args()
    if not args.token_file or not args.user:
        parser.error("--token-file and --user are required")

    context = ssl.create_default_context(cafile=args.cafile)
    tokens = GoogleTokenProvider.from_authorized_user_file(args.token_file)
    args.out.mkdir(parents=True, exist_ok=True)
    with IMAP4(args.user, tokens, args.host, args.port, ssl_context=context) as imap:
        imap.select(imap.special_folder("\\All") or "INBOX", readonly=True)
        for uid in imap.gmail_search(args.query):
            _, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
            msg = email.message_from_bytes(data[0][1], policy=email.policy.default)
            for part in msg.iter_attachments():
                name = Path(part.get_filename() or "attachment").name
                path = args.out / f"{uid}-{name}"
                path.write_bytes(part.get_payload(decode=True))
                print(path)


if __name__ == "__main__":
    main()
