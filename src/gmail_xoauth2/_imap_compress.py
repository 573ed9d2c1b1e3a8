"""COMPRESS=DEFLATE (RFC 4978): a flushing deflater and a bounded inflater.

Free of I/O: the transport feeds the inflater what the socket gave and takes
plain bytes out in steps of a size it chooses, so a few kilobytes that inflate
to gigabytes (a zip bomb) cost no more memory than one step. What was not
inflated yet stays as compressed input (zlib's ``unconsumed_tail``), and the
reply's bounds (:class:`~gmail_xoauth2.Limits`) apply to the inflated bytes.
"""

from __future__ import annotations

import zlib

from .errors import ProtocolError

__all__ = ["Deflater", "Inflater"]

# RFC 4978 section 3: raw DEFLATE (RFC 1951), no zlib header or checksum.
_RAW = -zlib.MAX_WBITS
# Real DEFLATE data yields plain bytes within a few hundred bytes of input
# (a block header, its Huffman tables). This much input with no output is a
# server feeding empty blocks forever, which would otherwise cost nothing
# against any bound but time.
_MAX_BARREN = 1 << 20


class Deflater:
    """Compress what the client sends; each write is flushed (Z_SYNC_FLUSH).

    RFC 4978 section 4: the flush makes every command complete on the wire
    while the dictionary carries over between commands.
    """

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        # A 4 KiB window and a small hash: 32 KiB of zlib state instead of
        # 256 KiB per connection. The client sends short commands (and the
        # odd APPEND); any window is valid for the server's 32 KiB inflater.
        self._z = zlib.compressobj(level, zlib.DEFLATED, -12, 5)

    def compress(self, data: bytes) -> bytes:
        """``data`` compressed and flushed, ready to send."""
        z = self._z
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)


class Inflater:
    """Inflate what the server sends, in bounded steps.

    ``feed()`` compressed bytes, then ``inflate(limit)`` until it returns
    b"" (it needs more input). Memory held: the compressed input not yet
    inflated and zlib's 32 KiB window, whatever the data inflates to.

    Args:
        where: the server, for error messages.
        data: compressed bytes that arrived with the reply to COMPRESS.
    """

    def __init__(self, where: str, data: bytes = b"") -> None:
        self._where = where
        self._z = zlib.decompressobj(_RAW)
        self._input = data
        self._full = False
        self._barren = 0

    @property
    def pending(self) -> bool:
        """Whether plain bytes may come out without more input."""
        return bool(self._input) or self._full

    @property
    def backlog(self) -> int:
        """Compressed bytes received and not inflated yet."""
        return len(self._input)

    @property
    def ended(self) -> bool:
        """The server ended its DEFLATE stream: nothing more can be read."""
        return self._z.eof

    def feed(self, data: bytes) -> None:
        """Add compressed bytes received from the server."""
        self._input = self._input + data if self._input else data

    def inflate(self, limit: int) -> bytes:
        """At most ``limit`` plain bytes; b"" when more input is needed.

        Raises:
            ProtocolError: the server's data is not DEFLATE.
        """
        z = self._z
        data = self._input
        if not (data or self._full) or z.eof:
            self._input = b""
            return b""
        try:
            # With max_length, input zlib did not get to stays in
            # unconsumed_tail; a step that filled ``limit`` may also have left
            # output inside zlib (a long match half copied), so the next step
            # runs even without new input.
            out = z.decompress(data, limit)
        except zlib.error as exc:
            raise ProtocolError(
                f"{self._where} sent data that is not DEFLATE after COMPRESS "
                f"({exc}); the connection was closed"
            ) from exc
        self._input = z.unconsumed_tail
        self._full = len(out) == limit
        if out:
            self._barren = 0
        else:
            self._barren += len(data) - len(self._input)
            if self._barren > _MAX_BARREN:
                raise ProtocolError(
                    f"{self._where} sent {self._barren} bytes of DEFLATE data "
                    "that inflate to nothing; the connection was closed"
                )
        return out
