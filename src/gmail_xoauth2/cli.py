"""The ``gmail-xoauth2`` command: authorize, print tokens, check logins, run the fake.

``token`` runs on every mail sync, so this module imports only light modules at the
top; google-auth, requests, ssl and the protocol modules are imported inside the
subcommands that need them. A still-valid cached token is printed without them.
The tokens live in a token file (``--token-file``) or in any store a URL names
(``--store``: Redis for a fleet of hosts, the OS keychain, a directory); the
store modules, and redis with them, are imported only for ``--store``.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

from . import __version__
from ._cli_base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ._cli_base import Failure as _Failure
from ._cli_tokens import (
    TOKEN_MARGIN,
    _args_provider,
    _open_store,
    _shown_url,
    _token,
)
from ._constants import GMAIL_IMAP_HOST, GMAIL_POP_HOST, GMAIL_SMTP_HOST
from .errors import ConfigurationError, Error

# Not typing.TYPE_CHECKING: importing typing alone costs the fast path milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from .stores import TokenStore

__all__ = ["main"]


_PROTOCOLS = ("imap", "pop", "smtp")
_DEFAULT_HOSTS = {
    "imap": GMAIL_IMAP_HOST,
    "pop": GMAIL_POP_HOST,
    "smtp": GMAIL_SMTP_HOST,
}
_TLS_PORTS = {"imap": 993, "pop": 995, "smtp": 465}
_STARTTLS_PORTS = {"imap": 143, "pop": 110, "smtp": 587}
_GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
# The fake's control URL variable (``fake-gmail`` and its controls: _cli_fake).
_FAKE_CONTROL_ENV = "GMAIL_XOAUTH2_FAKE_CONTROL"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); return the status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if _print_cached_token(argv):
        return EXIT_OK
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already shown
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except _Failure as exc:
        _error(str(exc))
        return exc.status
    except ConfigurationError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except (Error, OSError) as exc:
        from ._check import describe_error

        _error(describe_error(exc))
        return EXIT_FAILED


def _error(message: str) -> None:
    print(f"gmail-xoauth2: error: {message}", file=sys.stderr)


def _print_cached_token(argv: list[str]) -> bool:
    """``token --token-file FILE`` with a valid cached token: print it, skip argparse.

    Mail programs run this on every sync; argparse alone would add milliseconds.
    Anything else, including any error, is left to the full path, which reports it.
    """
    if len(argv) == 3 and argv[:2] == ["token", "--token-file"]:
        path = argv[2]
    elif len(argv) == 2 and argv[0] == "token" and argv[1].startswith("--token-file="):
        path = argv[1].partition("=")[2]
    else:
        return False
    from ._store import TokenFile

    try:
        token = TokenFile(path).cached_token(datetime.now(UTC), TOKEN_MARGIN)
    except (Error, OSError):
        return False
    if token is None:
        return False
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    return True


def _build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="gmail-xoauth2",
        description="OAuth 2.0 for Gmail's IMAP, POP and SMTP: authorize once, then "
        "print fresh tokens for mail programs.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def token_file(p: argparse.ArgumentParser) -> None:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument(
            "--token-file",
            metavar="FILE",
            help="the token file written by `authorize` (mode 0600)",
        )
        where.add_argument("--store", metavar="URL", help=_STORE_HELP)

    p = sub.add_parser(
        "authorize",
        help="run Google's consent flow once and save a token file",
        description="Open Google's consent page (loopback flow with PKCE) and save "
        "the refresh and access tokens in a 0600 token file.",
    )
    p.add_argument(
        "--client-secrets",
        required=True,
        metavar="FILE",
        help="the OAuth client JSON downloaded from the Google Cloud console "
        "(a Desktop app client)",
    )
    token_file(p)
    p.add_argument(
        "--user",
        metavar="EMAIL",
        help="pre-select this account; with --store, the account whose token is saved",
    )
    p.add_argument(
        "--no-browser",
        action="store_true",
        help="print the URL instead of opening a browser (works over ssh -L)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=0,
        metavar="N",
        help="loopback port for Google's redirect (default: any free port)",
    )
    p.set_defaults(handler=_cmd_authorize)

    p = sub.add_parser(
        "token",
        help="print a valid access token (the password command for mail programs)",
        description="Print a valid access token, refreshing and saving it first "
        "when it expires within five minutes.",
    )
    token_file(p)
    p.add_argument(
        "--force-refresh",
        action="store_true",
        help="get a new access token from Google even if the file's is still "
        "valid (for a token a server rejected although it had not expired)",
    )
    _store_user_option(p)
    p.set_defaults(handler=_cmd_token)

    p = sub.add_parser(
        "string",
        help="print the base64 SASL string (XOAUTH2 or OAUTHBEARER)",
        description="Print the base64 SASL initial response built from a valid token.",
    )
    token_file(p)
    p.add_argument("--user", required=True, metavar="EMAIL")
    _mechanism_option(p)
    p.set_defaults(handler=_cmd_string)

    p = sub.add_parser(
        "check",
        help="log in with IMAP, POP and SMTP and report what happened",
        description="Log in with each protocol (all three when none is named) and "
        "print ok/failed, the mechanism, round trips and milliseconds.",
    )
    token_file(p)
    p.add_argument("--user", required=True, metavar="EMAIL")
    for name in _PROTOCOLS:
        p.add_argument(f"--{name}", action="store_true", help=f"check {name.upper()}")
    p.add_argument("--host", metavar="H", help="one host for every protocol")
    for name in _PROTOCOLS:
        p.add_argument(f"--{name}-port", type=_port, metavar="N")
    p.add_argument(
        "--starttls",
        action="store_true",
        help="connect in plain text and upgrade with STARTTLS",
    )
    p.add_argument(
        "--cafile", metavar="PEM", help="also trust the CA certificates in this file"
    )
    _mechanism_option(p)
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="the longest any one network operation may take: connecting, the TLS "
        "handshake, each wait for a server's reply (a login makes several; the "
        "token refresh has its own). Default: 30",
    )
    p.set_defaults(handler=_cmd_check)

    p = sub.add_parser(
        "revoke",
        help="revoke the token at Google and delete the token file",
        description="Revoke the refresh token at Google, then delete the token file "
        "(or the store's record).",
    )
    token_file(p)
    _store_user_option(p)
    p.set_defaults(handler=_cmd_revoke)

    p = sub.add_parser(
        "fake-gmail",
        help="run the fake Gmail in the foreground, to try mail programs against",
        description="Run the fake Gmail (IMAP, POP, SMTP and Google's OAuth "
        "endpoints on 127.0.0.1) until Ctrl-C.",
    )
    p.add_argument(
        "--port-base",
        type=_port_base,
        metavar="N",
        help="listen on N (IMAP), N+1 (POP), N+2 (SMTP TLS), N+3 (SMTP STARTTLS) "
        "and N+4 (the fake Google)",
    )
    from ._cli_fake import add_controls, cmd_fake_gmail

    p.set_defaults(handler=cmd_fake_gmail)
    add_controls(p, _PROTOCOLS)

    p = sub.add_parser(
        "demo",
        help="a tour against the fake Gmail: no account, no network",
        description="Start the fake Gmail, authorize, read, send, and survive a "
        "session end and a token expiry.",
    )
    p.set_defaults(handler=_cmd_demo)
    return parser


_STORE_HELP = (
    "where the tokens live, instead of a token file; every host using it shares "
    "one refresh: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) "
    "or unix:///PATH/redis.sock (Redis); keyring: or keyring:SERVICE (the OS "
    "keychain); DIR/ (a token file per account); file:PATH or PATH (one token "
    "file). All but a single file keep many accounts: name one with --user. "
    "Redis records are encrypted with the Fernet key in the environment variable "
    "GMAIL_XOAUTH2_STORE_KEY when it is set (never a command-line option)"
)


def _store_user_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--user",
        metavar="EMAIL",
        help="with --store: the account (needed for every store but a single file)",
    )


def _mechanism_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mechanism",
        type=str.upper,
        choices=("XOAUTH2", "OAUTHBEARER"),
        default="XOAUTH2",
    )


def _port(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 65535")
    return value


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _port_base(text: str) -> int:
    """A first port that leaves room for the fake Gmail's five: N .. N+4."""
    import argparse

    value = _port(text)
    if not 1 <= value <= _LAST_PORT_BASE:
        raise argparse.ArgumentTypeError(
            f"{value} is not between 1 and {_LAST_PORT_BASE} (the fake Gmail listens "
            "on five ports from N)"
        )
    return value


_LAST_PORT_BASE = 65535 - 4


# --- token and string -------------------------------------------------------------


def _cmd_token(args: argparse.Namespace) -> int:
    # --force-refresh: the stored token was rejected: replace it, even if it
    # looks valid.
    token = _token(args, force_refresh=args.force_refresh)
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _cmd_string(args: argparse.Namespace) -> int:
    from .sasl import oauthbearer_string, xoauth2_string

    token = _token(args)
    build = xoauth2_string if args.mechanism == "XOAUTH2" else oauthbearer_string
    sys.stdout.write(build(args.user, token) + "\n")
    sys.stdout.flush()
    return EXIT_OK


# --- authorize and revoke ----------------------------------------------------------


def _cmd_authorize(args: argparse.Namespace) -> int:
    from .auth import authorize

    store = _open_store(args) if args.store is not None else None
    secrets = os.path.expanduser(args.client_secrets)
    if not os.path.isfile(secrets):
        raise _Failure(
            f"client secrets file {secrets} does not exist; download the JSON of a "
            "Desktop app OAuth client from the Google Cloud console "
            "(Google Auth Platform > Clients)",
            EXIT_USAGE,
        )
    if store is not None:
        return _authorize_store(args, store, secrets)
    token_file = os.path.expanduser(args.token_file)
    authorize(
        secrets,
        token_file,
        login_hint=args.user,
        open_browser=not args.no_browser,
        port=args.port,
    )
    print(
        f"Saved {token_file} (mode 0600). Try: gmail-xoauth2 token --token-file "
        f"{token_file}"
    )
    return EXIT_OK


def _authorize_store(args: argparse.Namespace, store: TokenStore, secrets: str) -> int:
    from ._store import TokenFile
    from .auth import authorize
    from .stores import describe_store

    if not isinstance(store, TokenFile):
        # Reach the store before anyone is sent to the consent page: a grant
        # that cannot be saved is lost.
        store.load()
    authorize(
        secrets,
        store,
        login_hint=args.user,
        open_browser=not args.no_browser,
        port=args.port,
    )
    if isinstance(store, TokenFile):
        print(
            f"Saved {store.path} (mode 0600). Try: gmail-xoauth2 token --token-file "
            f"{store.path}"
        )
    else:
        print(
            f"Saved the token of {args.user} in {describe_store(store)}. Try: "
            f"gmail-xoauth2 token --store {_shown_url(args.store)} --user {args.user}"
        )
    return EXIT_OK


def revoke_uri_for(token_uri: object) -> str:
    """Google's revocation endpoint beside the token file's ``token_uri``."""
    if isinstance(token_uri, str) and token_uri.endswith("/token"):
        return token_uri[: -len("token")] + "revoke"
    return _GOOGLE_REVOKE_URI


def _cmd_revoke(args: argparse.Namespace) -> int:
    from ._store import TokenFile

    store = TokenFile(args.token_file) if args.store is None else _open_store(args)
    if not isinstance(store, TokenFile):
        return _revoke_in_store(store)
    data = store.read()
    _revoke_at_google(data, f"token file {store.path}", "the token file was kept")
    for path in (store.path, store.lock_path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    print(f"Revoked the token and deleted {store.path}.")
    return EXIT_OK


def _revoke_in_store(store: TokenStore) -> int:
    from .stores import describe_store

    where = describe_store(store)
    delete: Callable[[], object] | None = getattr(store, "delete", None)
    if delete is None:
        raise _Failure(f"{where} cannot delete a record", EXIT_USAGE)
    data = store.load()
    if data is None:
        raise ConfigurationError(f"{where} holds no token: nothing to revoke")
    _revoke_at_google(data, where, f"the token was kept in {where}")
    delete()
    print(f"Revoked the token and deleted it from {where}.")
    return EXIT_OK


def _revoke_at_google(data: dict[str, object], where: str, kept: str) -> None:
    """Revoke the record's refresh token (or access token) at Google.

    Raises:
        _Failure: Google could not be reached or refused; ``kept`` says what
            was left in place.
    """
    import requests

    from ._oauth import check_token_uri

    token = data.get("refresh_token") or data.get("token")
    if not isinstance(token, str) or not token:
        return
    uri = revoke_uri_for(data.get("token_uri"))
    # As for refreshes: the refresh token never crosses the network in clear.
    check_token_uri(uri, where)
    try:
        response = requests.post(uri, data={"token": token}, timeout=30)
    except requests.RequestException as exc:
        raise _Failure(
            f"could not reach {uri} ({type(exc).__name__}); {kept}: check your "
            "network connection and run `revoke` again"
        ) from exc
    # 400 invalid_token: already revoked or expired, which is what we want.
    if response.status_code not in (200, 400):
        raise _Failure(
            f"Google answered HTTP {response.status_code} to the revocation; {kept}: "
            "try again later"
        )


# --- check ----------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    from ._check import check_login

    protocols = [p for p in _PROTOCOLS if getattr(args, p)] or list(_PROTOCOLS)
    if args.cafile and not os.path.isfile(os.path.expanduser(args.cafile)):
        raise _Failure(f"CA file {args.cafile} does not exist", EXIT_USAGE)
    provider = _args_provider(args)
    provider.token()  # a refresh problem is one error, not three
    failed = False
    for protocol in protocols:
        host = args.host or _DEFAULT_HOSTS[protocol]
        ports = _STARTTLS_PORTS if args.starttls else _TLS_PORTS
        port = getattr(args, f"{protocol}_port") or ports[protocol]
        result = check_login(
            protocol,
            args.user,
            provider,
            host,
            port,
            starttls=args.starttls,
            cafile=args.cafile,
            mechanism=args.mechanism,
            timeout=args.timeout,
        )
        failed = failed or not result.ok
        # Each protocol's lines as soon as they are known: a slow or hanging
        # server shows which protocol it is, and a pipe sees them at once.
        print("\n".join(result.lines()), flush=True)
    return EXIT_FAILED if failed else EXIT_OK


# --- fake Gmail and demo ------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(out=sys.stdout)
