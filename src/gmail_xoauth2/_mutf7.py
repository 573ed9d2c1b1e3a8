"""IMAP's modified UTF-7 (RFC 3501 section 5.1.3): mailbox names and Gmail labels.

Printable US-ASCII (0x20 to 0x7E) stands for itself, except ``&``, written
``&-``. Every other character is written as UTF-16BE (surrogate pairs for
characters beyond the BMP) in base64 with ``,`` for ``/`` and no padding,
between ``&`` and ``-``: ``Envoyés`` is ``Envoy&AOk-s``. Gmail writes its
folder names (``[Gmail]/Envoy&AOk-s``) and its X-GM-LABELS this way.

Decoding is strict, so that what decodes encodes back to the same text: a
stray or unterminated ``&``, a character outside printable ASCII, base64 that
is not whole UTF-16 or hides a printable ASCII character, a lone surrogate,
or two encoded runs in a row (one run would do) raise
:class:`ModifiedUTF7Error`.
"""

from __future__ import annotations

import binascii
import re

from .errors import ProtocolError

__all__ = ["ModifiedUTF7Error", "decode", "encode"]

_B64_RUN = re.compile(r"&([A-Za-z0-9+,]*)-")


class ModifiedUTF7Error(ProtocolError, ValueError):
    """Text is not valid IMAP modified UTF-7 (RFC 3501 section 5.1.3).

    A :class:`~gmail_xoauth2.ProtocolError` (a server sent a mailbox name or
    label that cannot be decoded) and a :class:`ValueError`.
    """


def _printable(char: str) -> bool:
    return " " <= char <= "~"


def encode(text: str, /) -> str:
    """``text`` in modified UTF-7: printable ASCII as is, ``&`` as ``&-``.

    Raises:
        ModifiedUTF7Error: ``text`` holds a lone surrogate, which UTF-16
            cannot carry.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            try:
                utf16 = "".join(run).encode("utf-16-be")
            except UnicodeEncodeError as exc:
                raise ModifiedUTF7Error(
                    f"cannot encode {text!r}: it holds a lone surrogate"
                ) from exc
            b64 = binascii.b2a_base64(utf16, newline=False).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for char in text:
        if _printable(char):
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def decode(data: str | bytes, /) -> str:
    """The text that ``data``, in modified UTF-7, stands for.

    Raises:
        ModifiedUTF7Error: ``data`` is not valid modified UTF-7 (see the
            module's docstring); the message quotes it.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            raise ModifiedUTF7Error(
                f"not modified UTF-7 (a byte outside ASCII): {data!r}"
            ) from None
    out: list[str] = []
    pos = 0
    previous_run_end = -1
    while pos < len(data):
        char = data[pos]
        if char != "&":
            if not _printable(char):
                raise ModifiedUTF7Error(
                    f"not modified UTF-7 (a character outside printable ASCII "
                    f"at {pos}): {data!r}"
                )
            out.append(char)
            pos += 1
            continue
        match = _B64_RUN.match(data, pos)
        if match is None:
            raise ModifiedUTF7Error(
                f"not modified UTF-7 (an '&' at {pos} without its '-'): {data!r}"
            )
        b64 = match.group(1)
        if not b64:
            out.append("&")
        else:
            if pos == previous_run_end:
                raise ModifiedUTF7Error(
                    f"not modified UTF-7 (two encoded runs in a row at {pos}): {data!r}"
                )
            out.append(_decode_run(b64, data))
            previous_run_end = match.end()
        pos = match.end()
    return "".join(out)


def _decode_run(b64: str, whole: str) -> str:
    """One ``&...-`` run's base64 (without the delimiters) as text."""
    if len(b64) % 4 == 1:
        raise ModifiedUTF7Error(f"not modified UTF-7 (truncated base64): {whole!r}")
    padded = b64.replace(",", "/") + "=" * (-len(b64) % 4)
    raw = binascii.a2b_base64(padded)
    # RFC 4648 section 3.5: the bits after the last whole byte must be zero,
    # or two spellings would decode to the same text.
    if binascii.b2a_base64(raw, newline=False).decode("ascii") != padded:
        raise ModifiedUTF7Error(f"not modified UTF-7 (stray base64 bits): {whole!r}")
    if len(raw) % 2:
        raise ModifiedUTF7Error(f"not modified UTF-7 (half a UTF-16 unit): {whole!r}")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise ModifiedUTF7Error(
            f"not modified UTF-7 (a lone UTF-16 surrogate): {whole!r}"
        ) from None
    if any(_printable(char) for char in text):
        # RFC 3501: printable ASCII MUST NOT be encoded; it represents itself.
        raise ModifiedUTF7Error(
            f"not modified UTF-7 (printable ASCII encoded in base64): {whole!r}"
        )
    return text
