"""``gmail-xoauth2 fake-gmail``: run the fake Gmail, or drive one already running."""

from __future__ import annotations

import argparse
import os
import sys

from ._cli_base import EXIT_OK, EXIT_USAGE, Failure

__all__ = ["FAKE_CONTROL_ENV", "add_controls", "cmd_fake_gmail"]

# testing._control.CONTROL_ENV, spelled out: the parser must not import the fake.
FAKE_CONTROL_ENV = "GMAIL_XOAUTH2_FAKE_CONTROL"


def add_controls(parent: argparse.ArgumentParser, protocols: tuple[str, ...]) -> None:
    """``fake-gmail expire-tokens|end-sessions|deliver``: drive a running fake."""
    sub = parent.add_subparsers(
        dest="control",
        metavar="{expire-tokens,end-sessions,deliver}",
        help="drive a fake Gmail already running (without one: start it)",
    )

    def control(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + "."
        )
        p.add_argument(
            "--control",
            metavar="URL",
            default=os.environ.get(FAKE_CONTROL_ENV),
            help=f"the control URL the fake printed (default: ${FAKE_CONTROL_ENV})",
        )
        p.add_argument("--user", required=True, metavar="ADDRESS")
        p.set_defaults(handler=_cmd_control, action=name)
        return p

    control("expire-tokens", "expire the user's access tokens now; sessions end")
    p = control("end-sessions", "end the user's sessions as Gmail does")
    p.add_argument("--protocol", choices=protocols, help="only these (default: all)")
    p = control("deliver", "deliver a message (RFC 5322 file, - for stdin)")
    p.add_argument("--mailbox", default="INBOX", help="where to (default: INBOX)")
    p.add_argument("file", metavar="FILE")


def cmd_fake_gmail(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .testing._control import serve_fake_gmail

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        # `kill` (SIGTERM) stops it as cleanly as Ctrl-C: temporary files removed.
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        serve_fake_gmail(port_base=args.port_base, out=sys.stdout, stop=stop)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        import errno

        if args.port_base is None or exc.errno != errno.EADDRINUSE:
            raise
        raise Failure(
            f"a port from {args.port_base} to {args.port_base + 4} is already in "
            "use; choose another --port-base, or leave it out to use free ports"
        ) from exc
    print("Stopped.")
    return EXIT_OK


def _cmd_control(args: argparse.Namespace) -> int:
    from .testing._control import ControlError, post_control

    if not args.control:
        raise Failure(
            f"which fake Gmail? Pass --control URL or set {FAKE_CONTROL_ENV} to the "
            "control URL `gmail-xoauth2 fake-gmail` printed",
            EXIT_USAGE,
        )
    payload: dict[str, object] = {"user": args.user}
    if args.action == "end-sessions":
        payload["protocol"] = args.protocol
    elif args.action == "deliver":
        if args.file == "-":
            raw = sys.stdin.buffer.read()
        else:
            try:
                with open(args.file, "rb") as file:
                    raw = file.read()
            except OSError as exc:
                raise Failure(f"cannot read {args.file}: {exc.strerror}") from exc
        payload["mailbox"] = args.mailbox
        # Not UTF-8? The bytes travel as lone surrogates and come out unchanged.
        payload["message"] = raw.decode("utf-8", "surrogateescape")
    try:
        answer = post_control(args.control, args.action, payload)
    except ControlError as exc:
        raise Failure(str(exc)) from exc
    user = answer.get("user", args.user)
    if args.action == "expire-tokens":
        print(f"Expired the access tokens of {user}; their sessions ended.")
    elif args.action == "end-sessions":
        print(f"Ended {answer.get('ended')} session(s) of {user}.")
    else:
        print(
            f"Delivered to {user}'s {answer.get('mailbox')} as UID {answer.get('uid')}."
        )
    return EXIT_OK
