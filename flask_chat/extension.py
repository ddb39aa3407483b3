"""The extension object, :class:`Chat`: setup, the host app's hooks, the public API.

Everything it offers is built in the modules below it (``settings``, ``state``,
``messaging``, ``delivery``, ``hub``...); nothing in flask-chat imports this module.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, cast

import redis
from flask import Flask, current_app, has_request_context
from flask import session as flask_session
from redis.cluster import RedisCluster

# Registers /ws and /poll on the blueprint (flask-sock's websocket route, long polling).
from . import database, delivery, directory, hub, jobs, longpoll, messaging, reading, websocket  # noqa: E402,F401,I001
from .cache import ChatCache
from .cli import attach_tools, chat_cli
from .conversations import ConversationKey
from .directory import (
    CurrentUserLoader,
    GroupInfo,
    GroupLoader,
    PermissionHandler,
    UserGroupsLoader,
    UserInfo,
    UserLoader,
)
from .hooks import HostHooks
from .keys import Keys
from .persistence import HistoryStore
from .presence import Presence
from .scripts import Scripts
from .settings import DEFAULTS, ChatConfig, read_config
from .signals import cache_cleared
from .state import ChatState, FrameHandler
from .templating import chat_bootstrap
from .views import blueprint, metrics_view, register_routing_errors
from .windows import Windows

__all__ = ["Chat", "ChatConfig", "ChatState", "DEFAULTS"]

_SESSION_KEY = "_flask_chat_session"


class Chat:
    """Real-time one-to-one and group chat for a Flask app.

    ::

        chat = Chat(app)          # or: chat = Chat(); chat.init_app(app)

        @chat.user_loader
        def load_user(user_id):
            user = User.query.get(user_id)
            return user and {"name": user.name, "image": user.avatar_url}

    ``options`` are ``CHAT_*`` settings given in code (``Chat(redis_url=...)`` sets
    ``CHAT_REDIS_URL``); the app's config wins over them.
    """

    def __init__(self, app: Flask | None = None, db: Any = None, **options: Any) -> None:
        #: A Flask-SQLAlchemy ``db`` whose engine holds the history, if given.
        self.db = db
        self._options = {f"CHAT_{k.upper()}": v for k, v in options.items()}
        unknown = set(self._options) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"Unknown Chat options: {', '.join(sorted(unknown))}.")
        self._states: weakref.WeakKeyDictionary[Flask, ChatState] = weakref.WeakKeyDictionary()
        #: The host app's answers (filled in by the decorators below), for every app.
        self.hooks = HostHooks()
        if app is not None:
            self.init_app(app)

    # -- setup ---------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Register flask-chat on ``app``.

        Settings (``app.config``), each with its default:

        ``CHAT_REDIS_URL`` (None)
            Redis for the cache, presence and pub/sub. Required unless the embedded
            server is on.
        ``CHAT_REDIS_MAX_CONNECTIONS`` (64)
            Redis connections per process (per node on a cluster); greenlets beyond
            it wait for one.
        ``CHAT_REDIS_CLUSTER`` (False)
            ``CHAT_REDIS_URL`` names a node of a Redis Cluster (any node: the others
            are discovered). Events go over sharded pub/sub; ``CHAT_RQ_REDIS_URL`` is
            then required.
        ``CHAT_RQ_REDIS_URL`` (None)
            The plain Redis server of RQ and rq-scheduler. None: ``CHAT_REDIS_URL``
            (not allowed on a cluster, which RQ does not support).
        ``CHAT_REDIS_WAIT_REPLICAS`` (0), ``CHAT_REDIS_WAIT_TIMEOUT_MS`` (1000)
            A send is acknowledged only once this many replicas of every Redis node
            it wrote to hold its writes (``WAIT``), so a failover loses no
            acknowledged message; fewer within the timeout: 503 ``unavailable``
            (retry with the same idempotency key). 0 switches it off.
        ``CHAT_EMBEDDED_REDIS`` (None)
            Start a bundled ``redis-server`` when ``CHAT_REDIS_URL`` is unset. None means
            "in debug mode only". Needs ``flask-chat[embedded]``.
        ``CHAT_URL_PREFIX`` (``/chats``)
            Where the routes live (the legacy ``ChatsController`` path).
        ``CHAT_KEY_PREFIX`` (``chat``)
            Prefix of every Redis key, so several apps can share one Redis.
        ``CHAT_MAX_MESSAGE_LENGTH`` (2000)
            Longest message text, in characters.
        ``CHAT_HISTORY_LIMIT`` (200)
            Messages kept in the cache per conversation (a window; SQL is the record).
        ``CHAT_PAGE_SIZE`` (50)
            Default ``limit`` of ``GET /chats/conversations/<key>`` (at most 4x this).
        ``CHAT_MAX_REQUEST_BYTES`` (65536)
            Largest request body flask-chat's routes read.
        ``CHAT_CSRF_ENABLED`` (True)
            Check the ``X-CSRF-Token`` header on state-changing routes.
        ``CHAT_SEND_RATE`` (10.0), ``CHAT_SEND_BURST`` (30)
            Per-user send limit (token bucket in Redis): messages a second, and how many
            may come at once. 0 switches the limit off.
        ``CHAT_PING_INTERVAL`` (25.0)
            Seconds between websocket pings; a peer silent for two intervals is dropped.
        ``CHAT_PRESENCE_TTL`` (30.0)
            Seconds a connection counts as alive without a heartbeat; a killed
            instance's users go offline within this.
        ``CHAT_PRESENCE_GRACE`` (3.0)
            Seconds a user whose last connection closed stays online: back by then (a
            page navigation reconnects), on any instance, and nobody sees them go
            offline or come online. At most 3/4 of ``CHAT_PRESENCE_TTL`` (a longer
            grace is cut to that). 0: offline at once.
        ``CHAT_WS_ALLOWED_ORIGINS`` (())
            Origins besides the app's own that may open the websocket.
        ``CHAT_WS_TOKEN_MAX_AGE`` (3600)
            Lifetime in seconds of the websocket token in the bootstrap data.
        ``CHAT_WS_MAX_MESSAGE_BYTES`` (65536)
            Largest client websocket message (larger: close 1009).
        ``CHAT_WS_MAX_QUEUE_BYTES`` (1048576)
            Bytes a connection may have waiting to be written before it is dropped as a
            slow client (close 1008); it reconnects and catches up.
        ``CHAT_WS_MAX_FRAGMENTS`` (64)
            Most frames one client websocket message may be split into (more: 1009).
        ``CHAT_WS_FRAME_RATE`` (20.0), ``CHAT_WS_FRAME_BURST`` (60)
            Per-connection limit on the frames that are not sends (typing, read,
            window, catchup, ping; add-ons limit their own): frames a second, and how
            many may come at once. Over it: an error frame ``rate_limited``. 0: no limit.
        ``CHAT_WS_MAX_CONNECTIONS_PER_USER`` (32)
            Live websockets one user may hold across every instance (more: 429
            ``too_many_connections`` before the handshake).
        ``CHAT_CATCHUP_RETENTION`` (3600)
            Seconds a reconnecting client can catch up over (older: ``recovered: false``).
        ``CHAT_CATCHUP_LIMIT`` (1000)
            Most messages one catch-up replays (more: ``recovered: false``).
        ``CHAT_METRICS_PATH`` (``/metrics``)
            Where Prometheus metrics are served; None switches them off.
        ``CHAT_DATABASE_URL`` (None)
            The SQL database for history. None: the host's Flask-SQLAlchemy ``db`` if
            given as ``Chat(db=db)``, else SQLite in the app's instance folder.
        ``CHAT_DATABASE_AUTO_UPGRADE`` (False)
            Create/upgrade flask-chat's tables at ``init_app`` (the demo does; in
            production run ``flask chat db upgrade``).
        ``CHAT_PERSISTENCE`` (True)
            Queue every sent message for SQL (write-behind, drained by RQ workers).
        ``CHAT_SWEEP_INTERVAL`` (300)
            Seconds between sweeps that persist and clear offline users' caches.
        ``CHAT_PERSIST_BATCH`` (500)
            Messages per write-behind batch.
        ``CHAT_PERSIST_BATCH_USERS`` (200)
            Users per sweep batch (one SQL transaction each).
        ``CHAT_GROUP_MEMBER_CACHES`` (``"view"``)
            How group messages sit in members' caches. ``"view"``: stored once, in the
            group's store, and each member's cache shows exactly what the legacy rule
            gives them (the messages sent while they were online, trimmed, cleared and
            persisted as a copy would be), with one write per message whatever the
            group's size. True: a copy in every online member's cache (the legacy
            layout: one Redis script call per member). False: members read the group's
            shared store (every recent message, online or not).
        ``CHAT_API_TOKEN`` (None)
            Shared secret for ``POST /chats/api/messages``, the send API for trusted
            servers (e.g. Rails); None switches that route off.
        ``CHAT_IDEMPOTENCY_WINDOW`` (86400)
            Seconds a send's idempotency key is remembered: a retry with the same key
            within it answers the original message instead of sending another.
        ``CHAT_SEND_IN_ONE_STEP`` (True)
            On one Redis server, a send is one script call (claim, rate limit, id,
            stores, publish, write-behind). False: the steps Redis Cluster takes (a
            round trip for the id, then the stores).
        """
        if "chat" in app.extensions:
            raise RuntimeError(
                "A 'Chat' instance has already been registered on this Flask app. "
                "Import and use that instance instead of creating another."
            )
        for name, value in DEFAULTS.items():
            app.config.setdefault(name, self._options.get(name, value))
        config = read_config(
            app.config,
            debug=app.debug,
            default_database_url=(
                "" if self.db is not None else database.default_url(app.instance_path)
            ),
            logger=app.logger,
        )
        client, cluster = _redis_client(config)
        keys = Keys(config.key_prefix)
        scripts = Scripts.register(client)
        if config.database_url:
            engine = database.make_engine(config.database_url)
        else:
            with app.app_context():
                engine = self.db.engine
        if config.database_auto_upgrade:
            database.upgrade(engine)
        self._states[app] = ChatState(
            config=config,
            redis=client,
            keys=keys,
            scripts=scripts,
            cache=ChatCache(client, keys, scripts, config.history_limit, config.catchup_retention,
                            cluster=cluster is not None),
            windows=Windows(client, keys),
            presence=Presence(client, keys, config.presence_ttl, config.presence_grace),
            history=HistoryStore(engine),
            hooks=self.hooks,
            app_ref=weakref.ref(app),
            cluster=cluster,
        )
        app.extensions["chat"] = self
        self._connect_login_signals(app)
        attach_tools()
        app.cli.add_command(chat_cli)
        app.register_blueprint(blueprint, url_prefix=config.url_prefix)
        register_routing_errors(app)
        app.add_template_global(chat_bootstrap, "chat_bootstrap")
        if config.metrics_path:
            app.add_url_rule(config.metrics_path, "chat_metrics", metrics_view)

    @property
    def state(self) -> ChatState:
        """The current app's flask-chat state (needs an app context)."""
        return self.state_of(current_app._get_current_object())  # type: ignore[attr-defined]

    def state_of(self, app: Flask) -> ChatState:
        """``app``'s flask-chat state (no app context needed)."""
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                "flask-chat is not registered on the current app: call chat.init_app(app)."
            ) from None

    # -- add-ons -------------------------------------------------------------------

    def add_frame_handler(self, app: Flask, kind: str, handler: FrameHandler) -> None:
        """Let an add-on (the Juggernaut bridge) handle websocket frames of type ``kind``
        on ``app``'s ``/chats/ws``: ``handler(connection, frame)``, with the frame parsed
        (an object with that ``type``). The add-on limits its own frames' rate."""
        self.state_of(app).frame_handlers[kind] = handler

    def add_hub_listener(self, app: Flask, listener: Callable[[hub.Hub], None]) -> None:
        """Call ``listener(hub)`` when ``app``'s hub starts in this process (at once if it
        already runs): where an add-on subscribes its own channels."""
        hub.add_listener(self.state_of(app), listener)

    # -- hooks ---------------------------------------------------------------------

    def current_user_loader(self, func: CurrentUserLoader) -> CurrentUserLoader:
        """Register the function that says who is logged in.

        It takes no arguments and returns a user id, a Flask-Login style user, or None.
        Default: Flask-Login's ``current_user`` when Flask-Login is set up.
        """
        self.hooks.current_user_loader = func
        return func

    def user_loader(self, func: UserLoader) -> UserLoader:
        """Register ``func(user_id)`` returning ``{"name", "image"}`` (or a
        :class:`UserInfo`), or None when there is no such user.

        Default: Flask-Login's user loader, reading ``name``/``username`` and
        ``image_url``/``avatar_url`` off the user.
        """
        self.hooks.user_loader = func
        return func

    def group_loader(self, func: GroupLoader) -> GroupLoader:
        """Register ``func(group_id)`` returning ``{"name", "members"}`` (or a
        :class:`GroupInfo`), or None when there is no such group. Default: no groups."""
        self.hooks.group_loader = func
        return func

    def user_groups_loader(self, func: UserGroupsLoader) -> UserGroupsLoader:
        """Register ``func(user_id)`` returning the ids of the user's groups. Default: none."""
        self.hooks.user_groups_loader = func
        return func

    def permission_handler(self, func: PermissionHandler) -> PermissionHandler:
        """Register ``func(sender_id, conversation_key)`` returning whether the sender
        may write to that user or group (which is known to exist).

        Default: any user may message any other user; only members may message a group.
        """
        self.hooks.permission_handler = func
        return func

    def presence_audience_loader(self, func: UserGroupsLoader) -> UserGroupsLoader:
        """Register ``func(user_id)`` returning the ids of the users who see that user
        come online and go offline. Default: the members of the user's groups and the
        users they have a 1:1 conversation with."""
        self.hooks.presence_audience_loader = func
        return func

    # -- asking the host app -------------------------------------------------------

    def current_user_id(self) -> int | None:
        """The logged-in user's id, or None."""
        return self.hooks.current_user_id()

    def get_user(self, user_id: int) -> UserInfo | None:
        return self.hooks.get_user(user_id)

    def get_group(self, group_id: int) -> GroupInfo | None:
        return self.hooks.get_group(group_id)

    def user_group_ids(self, user_id: int) -> list[int]:
        return self.hooks.user_group_ids(user_id)

    @property
    def has_permission_handler(self) -> bool:
        return self.hooks.permission_handler is not None

    def can_message(
        self, sender_id: int, to: ConversationKey, group: GroupInfo | None = None
    ) -> bool:
        """May ``sender_id`` write to ``to``? ``group``: the group, if already looked up."""
        return self.hooks.can_message(sender_id, to, group)

    # -- the public API ------------------------------------------------------------

    def send_message(
        self, sender_id: int, to: str, text: str, idempotency_key: str | None = None
    ) -> messaging.Message:
        """Send ``text`` from ``sender_id`` to conversation ``to`` (``2_User``, ``5_Group``).

        Works in any app context (a request, an RQ job, a script). Validates exactly as
        ``POST /chats/send_message`` does and raises a :class:`~flask_chat.ChatError`
        with nothing stored when the input is refused.

        ``idempotency_key``: a string unique to this message (1-128 letters, digits,
        ``-_.:``). Sending again with the same key within ``CHAT_IDEMPOTENCY_WINDOW``
        returns the original message (``replayed`` True) and sends nothing; the same
        key with another ``to`` or text raises ``idempotency_key_reused`` (422).
        """
        return messaging.send(self.state, sender_id, to, text, idempotency_key)[0]

    def history(self, user_id: int) -> dict[str, Any]:
        """The user's chat cache in the legacy layout (what ``GET /chats/history`` returns)."""
        return reading.history(self.state, user_id)

    def clear_cache(self, user_id: int) -> int:
        """Clear one user's cache; returns how many messages were removed."""
        _, removed = self.state.cache.clear(user_id)
        cache_cleared.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            user_id=user_id,
            removed=removed,
        )
        return removed

    def cached_user_ids(self) -> Iterable[int]:
        """Ids of the users who have a cache."""
        return self.state.cache.cached_users()

    def is_online(self, user_id: int) -> bool:
        """Whether the user has a live websocket on any instance."""
        return self.state.presence.is_online(user_id)

    def presence_audience(
        self, user_id: int, group_ids: list[int] | None = None
    ) -> tuple[list[int], list[int]]:
        """Who sees ``user_id`` come and go: (user ids, group ids whose members do).

        The ``presence_audience_loader`` hook decides; by default, the members of the
        user's groups and the users they have a 1:1 conversation with. ``group_ids``:
        the user's groups, if the caller already asked the host app for them.
        """
        return delivery.presence_audience(self.state, user_id, group_ids)

    # -- sessions and history ------------------------------------------------------

    def login(self, user_id: int) -> int:
        """Start a chat session for ``user_id`` (called for you on Flask-Login's
        ``user_logged_in``). Returns the session id, also kept in the Flask session."""
        session_id = self.state.history.open_session(user_id, self._now())
        if has_request_context():
            flask_session[_SESSION_KEY] = session_id
        return session_id

    def logout(self, user_id: int) -> Any:
        """End the chat session and enqueue persist-then-clear of the user's cache
        (called for you on Flask-Login's ``user_logged_out``). Every websocket token
        issued to the user so far is refused from now on, and their live connections
        are closed (code 4401) on every instance. A user still connected elsewhere when
        the job runs keeps their cache: it is persisted, not cleared."""
        # First of all: websocket tokens issued so far stop working and the user's live
        # connections close, on every instance (the legacy logout cleared the user's
        # chat for all their browsers too).
        delivery.logout(self.state, user_id)
        session_id = flask_session.pop(_SESSION_KEY, None) if has_request_context() else None
        self.state.history.close_session(user_id, session_id, self._now())
        return jobs.enqueue_persist(self.state, user_id, clear=True)

    def transcripts(self, user_id: int, page: int = 1, per_page: int = 10) -> dict[str, Any]:
        """The user's persisted history (``GET /chats/transcripts``): sessions newest
        first, each with its conversations — named, in order of their first message —
        and their messages, oldest first."""
        return reading.transcripts(self.state, user_id, page, per_page)

    def _now(self) -> datetime:
        """Now on the Redis server's clock, to the millisecond: the clock message ids
        use, so a session and the messages in it agree on what came first."""
        seconds, micros = self.state.redis.time()
        return datetime.fromtimestamp(seconds + (micros // 1000) / 1000, tz=timezone.utc)

    def _connect_login_signals(self, app: Flask) -> None:
        try:
            from flask_login import user_logged_in, user_logged_out
        except ImportError:
            return

        # A failure here must not fail the host app's login or logout: the history
        # is still in the cache, and the sweep persists it later.
        def logged_in(sender: Flask, user: Any, **_: Any) -> None:
            user_id = directory.as_user_id(user)
            if user_id is not None:
                try:
                    self.login(user_id)
                except Exception:
                    sender.logger.exception("flask-chat: could not start the chat session")

        def logged_out(sender: Flask, user: Any, **_: Any) -> None:
            user_id = directory.as_user_id(user)
            if user_id is not None:
                try:
                    self.logout(user_id)
                except Exception:
                    sender.logger.exception("flask-chat: could not end the chat session")

        # Strong references: these closures exist nowhere else.
        user_logged_in.connect(logged_in, app, weak=False)
        user_logged_out.connect(logged_out, app, weak=False)

    def group_membership_changed(
        self, group_id: int, added: Iterable[int] = (), removed: Iterable[int] = ()
    ) -> None:
        """Tell live connections that users joined or left a group (call it from the
        host app after changing the membership); no reconnect is needed."""
        delivery.membership(self.state, group_id, added, removed)


def _redis_client(config: ChatConfig) -> tuple[redis.Redis, RedisCluster | None]:
    """The process's Redis client for this config (and the same, typed as a cluster
    client, on Redis Cluster)."""
    if config.redis_cluster:
        # One pool per node, blocking as below; the slot map is refreshed on MOVED and
        # on connection errors.
        cluster = RedisCluster.from_url(
            config.redis_url,
            decode_responses=True,
            max_connections=config.redis_max_connections,
            connection_pool_class=redis.BlockingConnectionPool,
            timeout=10,
        )
        return cast(redis.Redis, cluster), cluster
    # A blocking pool: under load, greenlets wait for a connection (up to the timeout)
    # instead of failing once CHAT_REDIS_MAX_CONNECTIONS are in use.
    return redis.Redis(
        connection_pool=redis.BlockingConnectionPool.from_url(
            config.redis_url,
            decode_responses=True,
            max_connections=config.redis_max_connections,
            timeout=10,
        )
    ), None
