"""Send a message with a file attached, over SMTP with an OAuth 2.0 token.

    python send_with_attachment.py --token-file token.json --user you@gmail.com \
        --to friend@example.org --subject "The report" --attach report.pdf

Against the fake Gmail add ``--host 127.0.0.1 --port PORT --cafile CA.pem``.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import ssl
from email.message import EmailMessage
from pathlib import Path

from gmail_xoauth2 import GMAIL_SMTP_HOST, SMTP, GoogleTokenProvider


def build_message(
    sender: str, to: list[str], subject: str, body: str, attachments: list[Path]
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg.set_content(body)
    for path in attachments:
        kind, _ = mimetypes.guess_type(path.name)
        maintype, _, subtype = (kind or "application/octet-stream").partition("/")
        msg.add_attachment(
            path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name
        )
    return msg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-file", default=os.environ.get("GMAIL_TOKEN_FILE"))
    parser.add_argument("--user", default=os.environ.get("GMAIL_USER"))
    parser.add_argument("--to", action="append", required=True)
    parser.add_argument("--subject", default="A file for you")
    parser.add_argument("--body", default="The file is attached.")
    parser.add_argument("--attach", action="append", type=Path, default=[])
    parser.add_argument("--host", default=GMAIL_SMTP_HOST)
    parser.add_argument("--port", type=int, default=465, help="465 (TLS) or 587")
    parser.add_argument(
        "--starttls", action="store_true", help="STARTTLS (implied by port 587)"
    )
    parser.add_argument("--cafile", help="also trust this CA (for a test server)")
    args = parser.parse_args()
    if not args.token_file or not args.user:
        parser.error("--token-file and --user are required")

    context = ssl.create_default_context()
    if args.cafile:
        context.load_verify_locations(args.cafile)
    tokens = GoogleTokenProvider.from_authorized_user_file(args.token_file)
    msg = build_message(args.user, args.to, args.subject, args.body, args.attach)

    # starttls=None: STARTTLS on port 587, implicit TLS otherwise. Either way the
    # token is sent only after TLS is up.
    with SMTP(
        args.user,
        tokens,
        args.host,
        args.port,
        starttls=True if args.starttls else None,
        ssl_context=context,
    ) as smtp:
        smtp.send_message(msg)
    names = ", ".join(path.name for path in args.attach) or "no attachment"
    print(f"Sent {args.subject!r} to {', '.join(args.to)} ({names})")


if __name__ == "__main__":
    main()
