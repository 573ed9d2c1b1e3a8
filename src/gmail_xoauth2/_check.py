"""``gmail-xoauth2 check``: log in once per protocol, measure it, explain failures."""

from __future__ import annotations

import functools
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._tokens import TokenSource
from .errors import (
    ConnectionLost,
    Error,
    InsecureConnection,
    ProtocolError,
    Timeout,
)

__all__ = ["CheckResult", "check_advice", "check_login", "describe_error"]

_ENDPOINT_ADVICE = "check the host, the port and --starttls"
_CAFILE_ADVICE = "pass --cafile PEM if the server uses a private CA"


@dataclass
class CheckResult:
    """The outcome of one protocol's login."""

    protocol: str
    endpoint: str
    mechanism: str
    ok: bool
    round_trips: int
    milliseconds: float
    error: str = ""

    def lines(self) -> list[str]:
        """One summary line, then the reason on a second line when it failed."""
        trips = f"{self.round_trips} round trip{'s' if self.round_trips != 1 else ''}"
        line = (
            f"{self.protocol:<5} {'ok' if self.ok else 'failed':<7}"
            f"{self.mechanism:<12} {trips:<14}{self.milliseconds:>6.0f} ms  "
            f"{self.endpoint}"
        )
        return [line] if self.ok else [line, f"      {self.error}"]


def check_login(
    protocol: str,
    user: str,
    tokens: TokenSource,
    host: str,
    port: int,
    *,
    starttls: bool = False,
    cafile: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    mechanism: str = "XOAUTH2",
    timeout: float = 30.0,
) -> CheckResult:
    """Log in once with ``protocol`` and measure it; never raises for a failure."""
    context = ssl_context or ssl.create_default_context()
    if cafile:
        context.load_verify_locations(os.path.expanduser(cafile))
    counter = _count_flights(context)
    endpoint = f"{host}:{port}"
    start = time.perf_counter()
    try:
        connection = _open(
            protocol, user, tokens, host, port, starttls, context, mechanism, timeout
        )
    except Exception as exc:  # reported, not raised: this is a diagnostic
        elapsed = (time.perf_counter() - start) * 1000
        return CheckResult(
            protocol,
            endpoint,
            mechanism,
            False,
            counter.flights,
            elapsed,
            check_advice(exc, endpoint),
        )
    elapsed = (time.perf_counter() - start) * 1000
    flights = counter.flights
    _close_quietly(protocol, connection)
    return CheckResult(protocol, endpoint, mechanism, True, flights, elapsed)


class _FlightCounter:
    flights = 0


def _count_flights(context: ssl.SSLContext) -> type[_FlightCounter]:
    """Make ``context`` count client writes after the TLS handshake.

    Each command line (and each SASL continuation) is one write followed by a wait
    for the server, so writes during a login are its round trips.
    """

    class Counter(_FlightCounter):
        pass

    class CountingSSLSocket(ssl.SSLSocket):
        def sendall(self, data: object, flags: int = 0) -> None:
            Counter.flights += 1
            super().sendall(data, flags)  # type: ignore[arg-type]

    context.sslsocket_class = CountingSSLSocket
    return Counter


def _open(
    protocol: str,
    user: str,
    tokens: TokenSource,
    host: str,
    port: int,
    starttls: bool,
    context: ssl.SSLContext,
    mechanism: str,
    timeout: float,
) -> object:
    connect: Callable[..., object]
    if protocol == "imap":
        from .imap import IMAP4

        # The login is what is checked: COMPRESS would add a round trip to it.
        connect = functools.partial(IMAP4, compress=False)
    elif protocol == "pop":
        from .pop import POP3

        connect = POP3
    else:
        from .smtp import SMTP

        connect = SMTP
    # reconnect=False: a diagnostic reports the first login as it happened.
    return connect(
        user,
        tokens,
        host,
        port,
        starttls=starttls,
        ssl_context=context,
        timeout=timeout,
        mechanism=mechanism,
        reconnect=False,
    )


def _close_quietly(protocol: str, connection: object) -> None:
    method = {"imap": "logout", "pop": "quit", "smtp": "quit"}[protocol]
    try:
        getattr(connection, method)()
    except Exception:  # noqa: S110 - the login result is already known
        pass
    close = getattr(connection, "close", None)
    if protocol == "pop" and callable(close):
        try:
            close()
        except Exception:  # noqa: S110
            pass


def check_advice(exc: BaseException, endpoint: str) -> str:
    """:func:`describe_error` for a failed login, with what to check in ``check``.

    A server that answers in another protocol (a wrong port, or ``--starttls``
    against an implicit-TLS port) shows up as a lost connection without an
    operating-system cause, a timeout, or an error of the standard library.
    """
    if not isinstance(exc, (Error, OSError)):
        return (
            f"unexpected answer from {endpoint} ({type(exc).__module__}."
            f"{type(exc).__qualname__}); {_ENDPOINT_ADVICE}"
        )
    reason = describe_error(exc)
    cause = _os_cause(exc)
    if isinstance(exc, InsecureConnection) and isinstance(
        cause, ssl.SSLCertVerificationError
    ):
        return f"{reason}; {_CAFILE_ADVICE}"
    if isinstance(exc, Timeout | ProtocolError) or (
        isinstance(exc, ConnectionLost) and cause is None
    ):
        return f"{reason}; {_ENDPOINT_ADVICE}"
    return reason


def describe_error(exc: BaseException) -> str:
    """One sentence for ``exc`` that says what went wrong and what to do.

    Never includes a secret: library messages hold none, and for other exceptions
    only the type and the operating system's text are used.
    """
    if isinstance(exc, Error):
        # Library messages say what happened and what to do (a rejected token's
        # is the API's, word for word); add what to do about a network cause.
        cause = _os_cause(exc)
        if isinstance(exc, ConnectionLost) and cause is not None:
            advice = _network_advice(cause)
            return f"{exc}; {advice}" if advice not in str(exc) else str(exc)
        return str(exc)
    if isinstance(exc, OSError):
        return f"{_network_problem(exc)}; {_network_advice(exc)}"
    return f"unexpected {type(exc).__name__}; run again, and report it if it persists"


def _os_cause(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc``, following its chain."""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and not isinstance(cause, Error):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _network_problem(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate did not verify ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    return f"network error ({exc.strerror or type(exc).__name__})"


def _network_advice(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "check the host name and your network connection"
    if isinstance(exc, ConnectionRefusedError):
        return "check the host and port"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _CAFILE_ADVICE
    if isinstance(exc, ssl.SSLError):
        return "check the port and --starttls"
    return "check your network connection and the port"
