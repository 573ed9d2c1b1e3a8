"""The installed-app flow: consent in a browser (loopback redirect, PKCE), then save."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.service_account
from google_auth_oauthlib.flow import Flow

from ._google import RetryableStatus, Transport, user_credentials
from ._oauth import (
    LoopbackReceiver,
    check_flow,
    error_code,
    for_oauthlib,
    read_client_config,
    restore_scheme,
    show_url,
    token_file_data,
)
from ._store import TokenFile, token_of
from ._tokens import Clock, utcnow
from .auth import GoogleTokenProvider
from .errors import ConfigurationError, TokenError
from .sasl import MAIL_SCOPE
from .stores import TokenStore, describe_store

__all__ = ["authorize"]

_log = logging.getLogger("gmail_xoauth2.auth")


def authorize(
    client_secrets_file: str | os.PathLike[str],
    token_file: str | os.PathLike[str] | TokenStore,
    *,
    scopes: Iterable[str] = (MAIL_SCOPE,),
    login_hint: str | None = None,
    open_browser: bool = True,
    port: int = 0,
    open_url: Callable[[str], object] | None = None,
    flow: str = "loopback",
    timeout: float | None = 300.0,
    output: IO[str] | None = None,
    **kwargs: Any,
) -> GoogleTokenProvider:
    """Run Google's installed-app flow (loopback redirect, PKCE) and save the token.

    The consent URL is opened in a browser (``open_url`` if given, else the
    ``webbrowser`` module when ``open_browser``) and always printed to
    ``output``; a redirect to ``http://127.0.0.1:PORT/`` completes it. Without a
    browser on this machine, fix ``port``, forward it (``ssh -L PORT:127.0.0.1:PORT``)
    and open the printed URL on the machine that has one.

    Args:
        client_secrets_file: the "Desktop app" OAuth client JSON from the
            Google Cloud console.
        token_file: where to save the tokens: a file's path (mode 0600) or
            any :class:`~gmail_xoauth2.TokenStore` (Redis for a fleet, the OS
            keychain...).
        scopes: the scopes to ask for; Gmail IMAP/POP/SMTP needs ``MAIL_SCOPE``.
        login_hint: the Google account to preselect.
        open_browser: open the URL with the ``webbrowser`` module.
        port: the loopback port to listen on (0: any free port).
        open_url: called with the URL instead of the ``webbrowser`` module.
        flow: only ``"loopback"``; ``"oob"`` and ``"device"`` are refused.
        timeout: seconds to wait for the browser's redirect.
        output: where to print the URL (default: stderr).
        **kwargs: passed to :class:`GoogleTokenProvider` (``clock``, ``backoff``,
            ``session``, ``refresh_margin``...).

    Raises:
        UnsupportedFlow: the out-of-band or device flow was asked for.
        ConfigurationError: the client secrets file is unusable.
        Timeout: the browser did not come back in time.
        TokenError: Google refused the authorization or the code exchange.
    """
    check_flow(flow)
    scope_list = list(scopes)
    if not scope_list:
        raise ConfigurationError("at least one scope is needed")
    client = read_client_config(client_secrets_file)
    store = token_file if isinstance(token_file, TokenStore) else TokenFile(token_file)
    if isinstance(store, TokenFile):
        store.prepare()
    provider_kwargs = dict(kwargs)
    clock: Clock = provider_kwargs.get("clock") or utcnow
    with LoopbackReceiver(port=port) as receiver:
        oauth = Flow.from_client_config(
            for_oauthlib(client), scopes=scope_list, redirect_uri=receiver.redirect_uri
        )
        extra = {"login_hint": login_hint} if login_hint else {}
        url, state = oauth.authorization_url(
            access_type="offline", prompt="consent", **extra
        )
        url = restore_scheme(url, client)
        receiver.start(state)
        show_url(url, receiver.port, open_browser, open_url, output or sys.stderr)
        params = receiver.wait(timeout)
    if "error" in params:
        code = error_code(params) or "unknown error"
        advice = (
            "; if the OAuth consent screen is in Testing, add this account as a "
            "test user (Google Auth Platform > Audience), then run authorize again"
            if code == "access_denied"
            else "; run authorize again"
        )
        raise TokenError(
            f"authorization was not granted in the browser ({code}){advice}"
        )
    config = oauth.client_config
    transport = Transport(provider_kwargs.get("session"), 30.0)
    started = clock()
    form = {
        "grant_type": "authorization_code",
        "code": params.get("code", ""),
        "redirect_uri": receiver.redirect_uri,
        "client_id": config["client_id"],
        "client_secret": config["client_secret"],
        "code_verifier": oauth.code_verifier,
    }
    try:
        status, body = transport.post_form(config["token_uri"], form)
    except google.auth.exceptions.TransportError as exc:
        # An authorization code is single-use: it is not sent twice.
        what = (
            f"answered {exc.reason}"
            if isinstance(exc, RetryableStatus)
            else "could not be reached"
        )
        raise TokenError(
            f"the token endpoint {what} when redeeming the authorization code; "
            "run authorize again",
            retryable=True,
        ) from exc
    if status != 200 or not isinstance(body, dict):
        raise TokenError(
            "Google refused the authorization code "
            f"({error_code(body) or f'HTTP {status}'}); run authorize again"
        )
    data = token_file_data(body, config, scope_list, started)
    where = describe_store(store)
    with store.locked():
        try:
            replacing = token_of(store.load())
        except ConfigurationError:
            replacing = None  # unreadable: the new grant replaces it
        if not store.save(data, replacing=replacing):
            raise ConfigurationError(
                f"{where} holds a record that could not be read or replaced; "
                "delete it (`gmail-xoauth2 revoke`), then authorize again"
            )
    _log.info("authorized; tokens saved to %s", where)
    return GoogleTokenProvider(
        user_credentials(data, where), store=store, **provider_kwargs
    )
