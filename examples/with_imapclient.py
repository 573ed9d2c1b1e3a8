"""Use a gmail-xoauth2 token with IMAPClient: list the INBOX's unseen messages.

python with_imapclient.py --token-file token.json --user you@gmail.com
"""

from __future__ import annotations

import argparse
import ssl

from imapclient import IMAPClient


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

    tokens = GoogleTokenProvider.from_authorized_user_file(token_file)

    with IMAPClient(host, port=port, ssl=True, ssl_context=ssl_context) as client:
        client.oauth2_login(user, tokens.token())
        client.select_folder("INBOX", readonly=True)
        unseen = client.search(["UNSEEN"])
        for uid, data in client.fetch(unseen, ["ENVELOPE"]).items():
            envelope = data[b"ENVELOPE"]
            print(uid, envelope.subject.decode(errors="replace"))
    # --- end


if __name__ == "__main__":
    main()
