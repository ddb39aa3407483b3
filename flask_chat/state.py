"""What flask-chat keeps per app: its settings, its Redis plumbing, the host's hooks.

Lower modules take a :class:`ChatState` (or just the part they need), never the
:class:`flask_chat.Chat` object, so the extension sits on top of everything and nothing
imports it back.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from redis import Redis
from redis.cluster import RedisCluster

from .cache import ChatCache
from .connection import Connection
from .hooks import HostHooks
from .keys import Keys
from .persistence import HistoryStore
from .presence import Presence
from .scripts import Scripts
from .settings import ChatConfig
from .windows import Windows

#: An add-on's handler of a websocket frame type: ``handler(connection, frame)``.
FrameHandler = Callable[[Connection, dict[str, Any]], None]


@dataclass(eq=False)  # identity: states are dictionary keys (see hub.py)
class ChatState:
    config: ChatConfig
    #: The client for everything but RQ. On Redis Cluster it is a ``RedisCluster``
    #: (same command methods; see :attr:`cluster`), typed as ``Redis`` for the callers.
    redis: Redis
    keys: Keys
    scripts: Scripts
    cache: ChatCache
    windows: Windows
    presence: Presence
    history: HistoryStore
    hooks: HostHooks
    #: The app (weakly: the app owns its state, not the other way round).
    app_ref: weakref.ReferenceType[Flask]
    #: The same client as :attr:`redis` when it is a Redis Cluster client, else None.
    cluster: RedisCluster | None = None
    #: A bytes-returning client for RQ, made on first use (see ``queueing.py``).
    rq_redis: Redis | None = None
    #: Websocket frame types handled by add-ons (see ``Chat.add_frame_handler``).
    frame_handlers: dict[str, FrameHandler] = field(default_factory=dict)

    @property
    def app(self) -> Flask:
        app = self.app_ref()
        if app is None:  # pragma: no cover - the app owns the state
            raise RuntimeError("The app of this flask-chat state is gone.")
        return app

    @property
    def publish_command(self) -> str:
        """How events are published: sharded pub/sub on a cluster, classic otherwise."""
        return "SPUBLISH" if self.cluster is not None else "PUBLISH"


def current_state() -> ChatState:
    """The current app's state (needs an app context)."""
    chat = current_app.extensions.get("chat")
    if chat is None:
        raise RuntimeError(
            "flask-chat is not registered on the current app: call chat.init_app(app)."
        )
    state: ChatState = chat.state
    return state
