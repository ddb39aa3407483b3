"""The Juggernaut bridge, a Flask extension on top of :class:`flask_chat.Chat`.

::

    chat = Chat(app)
    bridge = JuggernautBridge(app, chat)   # or bridge.init_app(app) in a factory

With ``CHAT_JUGGERNAUT_ENABLED``, every instance consumes the ``juggernaut`` channel for
its own clients, serves unchanged Juggernaut browser clients at ``/socket.io/1/``,
publishes ``juggernaut:subscribe|unsubscribe|custom`` as the Node server did, and lets
flask-chat clients subscribe to legacy channels the host app allows.
"""

from __future__ import annotations

import fnmatch
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from flask import Flask, current_app, g

from flask_chat import Chat, ChatError, Message, message_sent
from flask_chat.connection import Connection
from flask_chat.errors import ConfigurationError, ValidationError

from . import protocol
from .metrics import BRIDGE_METRICS
from .polling import PollingSessions
from .router import LegacyRouter, Limits, subscribe_listener

log = logging.getLogger("flask_chat_bridge")

#: Every setting, with its default (see ``init_app``).
DEFAULTS: dict[str, Any] = {
    "CHAT_JUGGERNAUT_ENABLED": False,
    "CHAT_JUGGERNAUT_CHANNELS": (),
    "CHAT_LEGACY_PUBLIC_CHANNELS": (),
    "CHAT_JUGGERNAUT_TRANSLATE": True,
    "CHAT_JUGGERNAUT_MIRROR": False,
    "CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS": 100,
    "CHAT_JUGGERNAUT_FRAME_RATE": 10,
    "CHAT_JUGGERNAUT_FRAME_BURST": 150,
    "CHAT_JUGGERNAUT_MAX_MESSAGE_BYTES": 16 * 1024 * 1024,
}

Translation = tuple[int, str, str]
Translator = Callable[[str, dict[str, Any]], "Translation | Iterable[Translation] | None"]
ChannelAuthorizer = Callable[[int, str], bool]
MirrorChannels = Callable[[Message, list[int]], Iterable[str]]

_TRANSLATOR_LOCK_TTL_MS = 10_000


class JuggernautBridge:
    def __init__(self, app: Flask | None = None, chat: Chat | None = None) -> None:
        self.chat: Chat = chat  # type: ignore[assignment]
        self.router: LegacyRouter | None = None
        self.polling: PollingSessions | None = None
        self.translator: Translator | None = None
        self._authorizer: ChannelAuthorizer | None = None
        self._mirror: MirrorChannels | None = None
        self.instance_id = secrets.token_hex(8)
        self.is_translating = False
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the bridge. Settings:

        ``CHAT_JUGGERNAUT_ENABLED`` (False)
            Consume ``juggernaut``, serve legacy browsers, publish the events.
        ``CHAT_JUGGERNAUT_CHANNELS`` (())
            Glob patterns of legacy channels a logged-in user may subscribe to;
            ``{user_id}`` stands for their id (e.g. ``"/chats/user_{user_id}"``).
            The ``channel_authorizer`` hook replaces this.
        ``CHAT_LEGACY_PUBLIC_CHANNELS`` (())
            Glob patterns anyone may subscribe to, logged in or not.
        ``CHAT_JUGGERNAUT_TRANSLATE`` (True)
            Take part in translating legacy publishes into chat messages (one process
            at a time does, under a Redis lock; see the ``translator`` hook).
        ``CHAT_JUGGERNAUT_MIRROR`` (False)
            Publish flask-chat messages on ``juggernaut`` too, to legacy channels (see
            the ``mirror_channels`` hook), for pages still on the legacy Node server.
        ``CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS`` (100)
            Legacy-channel subscriptions per connection (0: no cap); a second subscribe
            to a channel counts too. Over it, a legacy client's subscribe is dropped, a
            native client's gets a ``too_many_subscriptions`` error frame.
        ``CHAT_JUGGERNAUT_FRAME_RATE`` (10)
            ``subscribe``, ``meta`` and ``event`` frames a second per connection, with
            bursts of ``CHAT_JUGGERNAUT_FRAME_BURST`` (150: a reconnecting legacy client
            sends its meta and every subscribe at once); 0: no limit. Over it, a legacy
            client's frame is dropped, a native client's gets a ``rate_limited`` error.
        ``CHAT_JUGGERNAUT_MAX_MESSAGE_BYTES`` (16 MiB)
            The largest legacy message delivered (a publish's JSON as a browser gets it,
            per channel); 0: no cap. A bigger one is dropped and counted
            (``flask_chat_juggernaut_dropped_total{reason="too large"}``); native clients
            subscribed to its channel get a ``message_too_large`` error frame.
        """
        if "chat_bridge" in app.extensions:
            raise RuntimeError(
                "A JuggernautBridge is already registered on this app; use that one."
            )
        chat = app.extensions.get("chat")
        if chat is None:
            raise RuntimeError("Register flask-chat first: Chat(app), then JuggernautBridge(app).")
        self.chat = chat
        for name, value in DEFAULTS.items():
            app.config.setdefault(name, value)
        enabled = app.config["CHAT_JUGGERNAUT_ENABLED"]
        limits = _limits(app.config) if enabled else None  # checked before registering
        app.extensions["chat_bridge"] = self
        if limits is None:
            return
        from .socketio import handle_frame, legacy

        with app.app_context():
            state = chat.state
        self.router = LegacyRouter(self, app, state, limits)
        chat.add_hub_listener(app, subscribe_listener(self.router))
        self.polling = PollingSessions(app, state, self.instance_id,
                                       lambda conn, text: handle_frame(self, conn, text))
        chat.add_hub_listener(app, self.polling.attach)
        chat.add_hub_listener(app, self._start_election)
        for kind in ("subscribe", "unsubscribe", "meta", "event"):
            chat.add_frame_handler(app, kind, self._native_frame)
        app.register_blueprint(legacy)
        message_sent.connect(self._mirror_message, app, weak=False)

    # -- hooks ---------------------------------------------------------------------

    def channel_authorizer(self, func: ChannelAuthorizer) -> ChannelAuthorizer:
        """Register ``func(user_id, channel)`` saying whether a logged-in user may
        subscribe to a legacy channel (replaces ``CHAT_JUGGERNAUT_CHANNELS``)."""
        self._authorizer = func
        return func

    def translator_hook(self, func: Translator) -> Translator:
        """Register ``func(channel, message)`` turning a legacy publish into chat
        messages: return ``(sender_id, to, text)``, several, or None to leave it.

        ``message`` is what a legacy browser on ``channel`` receives (the publish's
        ``data`` and extra keys). The messages are sent with ``chat.send_message``, so
        they reach caches, live clients, history and SQL like any other.
        """
        self.translator = func
        return func

    def mirror_channels(self, func: MirrorChannels) -> MirrorChannels:
        """Register ``func(message, recipients)`` naming the legacy channels a flask-chat
        message is mirrored to (with ``CHAT_JUGGERNAUT_MIRROR``). Default:
        ``/chats/user_<recipient>`` for 1:1, ``/chats/group_<id>`` for groups."""
        self._mirror = func
        return func

    # -- policy --------------------------------------------------------------------

    def may_subscribe(self, user_id: int | None, channel: str) -> bool:
        config = current_app.config
        if any(fnmatch.fnmatchcase(channel, p) for p in config["CHAT_LEGACY_PUBLIC_CHANNELS"]):
            return True
        if user_id is None:
            return False
        if self._authorizer is not None:
            return bool(self._authorizer(user_id, channel))
        patterns = [
            p.replace("{user_id}", str(user_id)) for p in config["CHAT_JUGGERNAUT_CHANNELS"]
        ]
        return any(fnmatch.fnmatchcase(channel, p) for p in patterns)

    # -- native clients' frames ----------------------------------------------------

    def _native_frame(self, conn: Connection, frame: dict[str, Any]) -> None:
        from .socketio import handle_message

        kind = frame["type"]
        channel = frame.get("channel")
        if kind in ("subscribe", "unsubscribe"):
            if not isinstance(channel, str):
                raise ValidationError("'channel' must be a string.", code="invalid_field",
                                      field="channel")
            frame = {"type": kind, "channel": channel}  # no ``channels`` to override it
        elif "data" in frame:
            try:
                protocol.dumps(frame["data"])  # what the event will carry must be JSON
            except (ValueError, RecursionError):
                raise ValidationError("'data' must be JSON (no NaN or Infinity).",
                                      code="invalid_field", field="data") from None
        handle_message(self, conn, frame, conn.user_id or None)

    # -- translation (legacy publish -> chat message) ------------------------------

    def _start_election(self, hub: Any) -> None:
        if current_app.config["CHAT_JUGGERNAUT_TRANSLATE"] and self.translator is not None:
            state = self.chat.state
            # The first round now, while the hub starts (with the server): a publish read
            # as soon as the server accepts requests is translated already.
            self._hold(state)
            gevent.spawn(self._elect, state)

    def _elect(self, state: Any) -> None:
        """Hold the translator lock while alive: one process translates each publish."""
        while True:
            gevent.sleep(_TRANSLATOR_LOCK_TTL_MS / 3000)
            self._hold(state)

    def _hold(self, state: Any) -> None:
        key = f"{state.keys.prefix}:jug:translator"
        try:
            self.is_translating = hold_lock(state.redis, key, self.instance_id,
                                            _TRANSLATOR_LOCK_TTL_MS)
        except Exception:
            self.is_translating = False
            log.warning("flask-chat bridge: translator election failed", exc_info=True)

    def translate(self, publish: protocol.Publish) -> None:
        """Run the translator hook on a publish (once per listed channel: its name, as
        Node looked it up, and the message a browser on it receives)."""
        assert self.translator is not None
        g.flask_chat_bridge_translating = True  # so the mirror does not echo it back
        for channel, value in publish.first_values().items():
            try:
                result = self.translator(channel, publish.message_for(value))
            except Exception:
                log.exception("flask-chat bridge: the translator failed on %r", channel)
                continue
            if result is None:
                continue
            items = [result] if isinstance(result, tuple) else list(result)
            for sender_id, to, text in items:
                try:
                    self.chat.send_message(sender_id, to, text)
                    BRIDGE_METRICS.translated.inc()
                except ChatError as exc:
                    log.warning("flask-chat bridge: legacy message refused (%s: %s)",
                                exc.code, exc.message)

    # -- mirror (chat message -> legacy channels) ----------------------------------

    def _mirror_message(self, app: Flask, message: Message, recipients: list[int]) -> None:
        if not app.config["CHAT_JUGGERNAUT_MIRROR"] or g.get("flask_chat_bridge_translating"):
            return
        if self._mirror is not None:
            channels = list(self._mirror(message, recipients))
        elif message.conversation.is_group:
            channels = [f"/chats/group_{message.conversation.id}"]
        else:
            channels = [f"/chats/user_{uid}" for uid in recipients]
        if not channels:
            return
        data = {"sender_id": message.sender_id, "message_text": message.message_text,
                "image": message.image, "id": message.id, "to": str(message.conversation),
                "sent_at": message.sent_at}
        payload = {"channels": channels, "data": data, protocol.ORIGIN_KEY: self.instance_id}
        self.chat.state.redis.publish(protocol.PUBLISH_CHANNEL, protocol.dumps(payload))


def _limits(config: Any) -> Limits:
    def number(name: str, minimum: float) -> float:
        value = config[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
            raise ConfigurationError(f"{name} must be a number of at least {minimum:g}, "
                                     f"not {value!r}.")
        return float(value)

    cap = config["CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS"]
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        raise ConfigurationError("CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS must be a whole number "
                                 f"of at least 0, not {cap!r}.")
    size = config["CHAT_JUGGERNAUT_MAX_MESSAGE_BYTES"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigurationError("CHAT_JUGGERNAUT_MAX_MESSAGE_BYTES must be a whole number "
                                 f"of at least 0, not {size!r}.")
    limits = Limits(cap, number("CHAT_JUGGERNAUT_FRAME_RATE", 0),
                    number("CHAT_JUGGERNAUT_FRAME_BURST", 1), size)
    if limits.frame_rate and cap and limits.frame_burst < cap + 1:
        log.warning("flask-chat bridge: CHAT_JUGGERNAUT_FRAME_BURST (%g) is below "
                    "CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS + 1 (%d): a legacy client that "
                    "reconnects with all its channels loses some", limits.frame_burst, cap + 1)
    return limits


_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def hold_lock(client: Any, key: str, owner: str, ttl_ms: int) -> bool:
    """Take or keep a lease; True while ``owner`` holds it."""
    return bool(client.eval(_HOLD, 1, key, owner, ttl_ms))
