"""A TCP proxy on loopback that tests turn against the module: pass traffic, refuse it, or swallow it."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; `refuse()` cuts every connection and refuses new ones,
    `blackhole()` accepts and forwards nothing, `restore()` passes traffic again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.mode = "pass"
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def refuse(self) -> None:
        """Cut every open connection and answer new ones with a reset, as a stopped server would."""
        self.mode = "refuse"
        self._cut_all()

    def blackhole(self) -> None:
        """Accept connections and let nothing through either way, as a lost network would."""
        self.mode = "blackhole"

    def restore(self) -> None:
        """Pass traffic again (connections swallowed meanwhile are cut, so clients reconnect)."""
        if self.mode == "blackhole":
            self._cut_all()
        self.mode = "pass"

    def close(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._cut_all()
        self._listener.close()

    def _cut_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    end.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.mode == "refuse":
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        ends = {client: upstream, upstream: client}
        while not self._stopped.is_set():
            try:
                readable, _, _ = select.select(list(ends), [], [], 0.1)
            except (OSError, ValueError):
                return
            if self.mode == "blackhole":
                time.sleep(0.05)
                continue
            for source in readable:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    for end in ends:
                        with contextlib.suppress(OSError):
                            end.close()
                    return
                try:
                    ends[source].sendall(data)
                except OSError:
                    return


@contextlib.contextmanager
def proxy_to(host: str, port: int) -> Iterator[TcpProxy]:
    """A TcpProxy to host:port for the block."""
    proxy = TcpProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()
