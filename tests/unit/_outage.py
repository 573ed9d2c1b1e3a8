"""A loopback TCP forwarder that can go down (connections refused) and come back.

Put in front of a server (the fake Gmail, Dovecot), it forwards bytes both
ways unchanged, so TLS runs end to end through it. :meth:`down` closes the
listening socket (new connections are refused, as when a network is gone) and
cuts every open connection; :meth:`up` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class OutageProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self.refused_while_down = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pipes: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.up()

    def up(self) -> None:
        """Listen (again, on the same port once chosen)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            pipes, self._pipes = self._pipes, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in pipes:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def close(self) -> None:
        self.down()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self.accepted += 1
                self._pipes += [client, server]
            for src, dst in ((client, server), (server, client)):
                thread = threading.Thread(
                    target=self._pipe, args=(src, dst), daemon=True
                )
                self._threads.append(thread)
                thread.start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
