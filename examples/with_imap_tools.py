"""imap_tools' MailBox on gmail-xoauth2's IMAP4: print the newest messages' subjects.

python with_imap_tools.py --token-file token.json --user you@gmail.com
"""

from __future__ import annotations

import argparse
import ssl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--host", default="imap.gmail.com")
    parser.add_argument("--port", type=int, default=993)
    parser.add_argument("--cafile")
    args = parser.parse_args()
    host, port, token_file, user = args.host, args.port, args.token_file, args.user
    ssl_context = ssl.create_default_context(cafile=args.cafile)

    # --- begin
    from gmail_xoauth2 import GoogleTokenProvider
    from gmail_xoauth2.adapters import GmailMailBox

    tokens = GoogleTokenProvider.from_authorized_user_file(token_file)

    # Logged in with OAuth by the constructor; the token is refreshed and the
    # session replaced whenever Gmail ends it, even in the middle of fetch().
    with GmailMailBox(user, tokens, host, port, ssl_context=ssl_context) as mailbox:
        for msg in mailbox.fetch(limit=10, reverse=True, mark_seen=False):
            print(msg.date_str, msg.from_, msg.subject)
    # --- end


if __name__ == "__main__":
    main()
