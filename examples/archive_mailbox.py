"""Archive one Workspace user's mailbox to .eml files, with a service account.

    python archive_mailbox.py --service-account sa.json --user someone@example.com \
        --out archive/

Needs Google Workspace domain-wide delegation: the service account's client ID must
be granted ``https://mail.google.com/`` in the Admin console. Runs incrementally:
messages already archived are skipped, and a new UIDVALIDITY starts a new folder.
Against the fake Gmail add ``--host 127.0.0.1 --port PORT --cafile CA.pem``.
"""

from __future__ import annotations

import argparse
import os
import ssl
from pathlib import Path

from gmail_xoauth2 import GMAIL_IMAP_HOST, IMAP4, GoogleTokenProvider


def archive(imap: IMAP4, mailbox: str, out: Path) -> tuple[int, int]:
    """Write every message of ``mailbox`` not yet in ``out``; return (new, total)."""
    typ, data = imap.select(f'"{mailbox}"', readonly=True)
    if typ != "OK":
        raise SystemExit(f"cannot open {mailbox}: {data[0]!r}")
    uidvalidity = imap.response("UIDVALIDITY")[1][0].decode()
    folder = out / f"{mailbox.replace('/', '_')}.{uidvalidity}"
    folder.mkdir(parents=True, exist_ok=True)
    typ, data = imap.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    written = 0
    for uid in uids:
        target = folder / f"{int(uid):010d}.eml"
        if target.exists():
            continue
        typ, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        raw = next(item[1] for item in fetched if isinstance(item, tuple))
        partial = target.with_suffix(".part")
        partial.write_bytes(raw)
        partial.replace(target)  # a crash never leaves half a message behind
        written += 1
    return written, len(uids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service-account", required=True, help="key file (JSON)")
    parser.add_argument("--user", required=True, help="whose mailbox")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mailbox", default="[Gmail]/All Mail")
    parser.add_argument("--host", default=GMAIL_IMAP_HOST)
    parser.add_argument("--port", type=int, default=993)
    parser.add_argument("--cafile", help="also trust this CA (for a test server)")
    args = parser.parse_args()

    context = ssl.create_default_context()
    if args.cafile:
        context.load_verify_locations(args.cafile)
    # Domain-wide delegation: the service account acts as --user.
    tokens = GoogleTokenProvider.from_service_account_file(
        os.path.expanduser(args.service_account), args.user
    )
    with IMAP4(args.user, tokens, args.host, args.port, ssl_context=context) as imap:
        written, total = archive(imap, args.mailbox, args.out)
    print(f"{args.mailbox}: {written} new, {total} in all, under {args.out}")


if __name__ == "__main__":
    main()
