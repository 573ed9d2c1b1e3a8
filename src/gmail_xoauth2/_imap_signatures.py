"""imaplib's commands typed as imaplib accepts them, where typeshed is narrower.

imaplib sends each argument as it is: a ``str`` is encoded, ``bytes`` go out
unchanged and ``None`` is left out (``IMAP4._command``). typeshed's stubs take
``str`` only, so ``imap.uid("SEARCH", None, "ALL")`` (the form imaplib's own
documentation uses) or a message number taken from a SEARCH reply fails
``mypy --strict`` in user code. The methods here widen those signatures and
call imaplib's own; they change no behaviour. Ints are not accepted: imaplib
cannot send them (``bytes + int`` raises TypeError).

Replies are ``(type, data)`` with ``data`` a ``list[Any]``, as typeshed types
most commands: a list of bytes and ``(bytes, bytes)`` tuples (a literal and
the line around it), or ``[None]``.
"""

from __future__ import annotations

import imaplib
from collections.abc import Callable
from typing import Any

__all__ = ["Response", "TypedCommands"]

Response = tuple[str, list[Any]]
"""A command's reply: the status (``"OK"``, ``"NO"``...) and its data."""

# imaplib's method under a type that lets wider arguments through to it.
_Command = Callable[..., Response]


class TypedCommands(imaplib.IMAP4):
    """Mixin: imaplib's commands with the argument types imaplib accepts."""

    def copy(self, message_set: str | bytes, new_mailbox: str) -> Response:
        """COPY; ``message_set`` may be bytes, as SEARCH replies hold them."""
        command: _Command = super().copy
        return command(message_set, new_mailbox)

    def fetch(self, message_set: str | bytes, message_parts: str | bytes) -> Response:
        """FETCH; ``message_set`` may be bytes, as SEARCH replies hold them.

        The data is typed ``list[Any]``: typeshed's union of lists cannot be
        indexed as ``data[0][1]`` without a check on every item.
        """
        command: _Command = super().fetch
        return command(message_set, message_parts)

    def search(self, charset: str | None, *criteria: str | bytes) -> Response:
        """SEARCH; a criterion may be bytes (text in ``charset``, e.g. UTF-8)."""
        command: _Command = super().search
        return command(charset, *criteria)

    def sort(
        self, sort_criteria: str, charset: str, *search_criteria: str | bytes
    ) -> Response:
        """SORT (RFC 5256); a search criterion may be bytes, as in :meth:`search`."""
        command: _Command = super().sort
        return command(sort_criteria, charset, *search_criteria)

    def store(
        self, message_set: str | bytes, command: str | bytes, flags: str
    ) -> Response:
        """STORE; ``message_set`` and ``command`` may be bytes.

        ``flags`` stays ``str``: imaplib adds the parentheses by looking at its
        first and last characters, which does not work on bytes.
        """
        store: _Command = super().store
        return store(message_set, command, flags)

    def thread(
        self, threading_algorithm: str, charset: str, *search_criteria: str | bytes
    ) -> Response:
        """THREAD (RFC 5256); a search criterion may be bytes, as in :meth:`search`."""
        command: _Command = super().thread
        return command(threading_algorithm, charset, *search_criteria)

    def uid(self, command: str, *args: str | bytes | None) -> Response:
        """UID ``command``; an argument may be bytes, or None to leave it out.

        ``uid("SEARCH", None, "ALL")`` is imaplib's documented form: the None
        stands for the charset of :meth:`search`.
        """
        uid: _Command = super().uid
        return uid(command, *args)
