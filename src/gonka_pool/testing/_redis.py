"""A ``redis-server`` on 127.0.0.1, for the tests and benchmarks of ``gonka_pool.redis``.

Debian's ``redis-server`` binary (``make test`` installs it), on a free port, with no
persistence: each ``LocalRedis`` is a server of its own, which ``kill()`` stops and
``start()`` starts again, empty, on the same port (a restarted Redis).  Readiness
is a ``PING`` over a plain socket, so starting one needs no client library.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

from ._node import free_port

__all__ = ["LocalRedis"]


class LocalRedis:
    """A ``redis-server`` of its own on a free port of 127.0.0.1, without
    persistence; ``url`` is what ``redis.Redis.from_url`` takes.

    ``binary`` is the server to run (default: ``redis-server`` on ``PATH``).
    Not started until ``start()`` (or ``with``); ``kill()`` stops it, and a
    later ``start()`` brings it back empty on the same port, as a restarted
    Redis would be.
    """

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it answers ``PING``."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        give_up = time.monotonic() + timeout
        while not self._answers():
            if time.monotonic() > give_up or self.process.poll() is not None:
                self.kill()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> LocalRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Stop the server at once (SIGKILL: no goodbye to its clients)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
