"""Watch the INBOX of many accounts from one asyncio process, and print new mail.

    python watch_many_async.py --client client_secret.json --tokens DIR/ \\
        ann@example.com bob@example.com ...

Each account has its token file in DIR (``DIR/<address>.json``, written by
``gmail-xoauth2 authorize --client-secrets client_secret.json --store DIR/
--user <address>``). One IDLE connection per account, all on one event loop;
at most ``--handshakes`` of them connect and log in at once, so a thousand
accounts coming back after an outage do not spike the CPU. Each new message is
printed once, across Gmail's hourly session ends, token refreshes and outages
of any length. Stop with Ctrl-C or SIGTERM, or after ``--max-messages``.
Against the fake Gmail add ``--host 127.0.0.1 --port PORT --cafile CA.pem``.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import signal
import ssl

from gmail_xoauth2 import (
    GMAIL_IMAP_HOST,
    GoogleTokenProvider,
    NewMessage,
    TokenDirectory,
    aio,
)


async def describe(imap: aio.IMAP4, uid: int) -> str:
    _, data = await imap.uid(
        "FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])"
    )
    raw = next(item[1] for item in data if isinstance(item, tuple))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return f"{imap.user}: new message {uid}: {msg['From']} - {msg['Subject']}"


async def watch(
    imap: aio.IMAP4,
    stop: asyncio.Event,
    found: asyncio.Queue[str],
    ready: asyncio.Queue[str],
) -> None:
    async with imap, imap.watch("INBOX", stop=stop) as watcher:
        # Selected, and where "new" begins is noted: mail from now on counts.
        await ready.put(imap.user)
        async for event in watcher:
            if isinstance(event, NewMessage):
                await found.put(await describe(imap, event.uid))


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("users", nargs="+", metavar="ADDRESS")
    parser.add_argument("--tokens", required=True, help="the token directory")
    parser.add_argument("--client", help="the app's client secrets file")
    parser.add_argument("--handshakes", type=int, default=20)
    parser.add_argument("--max-messages", type=int, help="stop after this many")
    parser.add_argument("--host", default=GMAIL_IMAP_HOST)
    parser.add_argument("--port", type=int, default=993)
    parser.add_argument("--cafile", help="also trust this CA (for a test server)")
    args = parser.parse_args()

    context = ssl.create_default_context()
    if args.cafile:
        context.load_verify_locations(args.cafile)
    store = TokenDirectory(args.tokens)
    handshakes = asyncio.Semaphore(args.handshakes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    found: asyncio.Queue[str] = asyncio.Queue()
    ready: asyncio.Queue[str] = asyncio.Queue()
    watchers = []
    for user in args.users:
        # One provider per account, from one client configuration and one store.
        tokens = GoogleTokenProvider.for_user(store, user, client=args.client)
        imap = aio.IMAP4(
            user,
            tokens,
            args.host,
            args.port,
            ssl_context=context,
            handshakes=handshakes,
        )
        watchers.append(asyncio.create_task(watch(imap, stop, found, ready)))
    for _ in watchers:
        await ready.get()
    print(f"Watching {len(watchers)} accounts", flush=True)

    seen = 0
    stopping = asyncio.create_task(stop.wait())
    while not stop.is_set():
        getting = asyncio.create_task(found.get())
        done, _ = await asyncio.wait(
            {getting, stopping, *watchers}, return_when=asyncio.FIRST_COMPLETED
        )
        if getting not in done:
            getting.cancel()
            failed = [task for task in watchers if task in done]
            for task in failed:
                task.result()  # a watch that ended raises its error here
            continue
        print(getting.result(), flush=True)
        seen += 1
        if args.max_messages and seen >= args.max_messages:
            stop.set()
    await asyncio.gather(*watchers, return_exceptions=True)
    print(f"Stopped after {seen} new message(s).")


if __name__ == "__main__":
    asyncio.run(main())
