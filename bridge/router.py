"""Delivering ``juggernaut`` publishes to this process's clients, and the events back.

Every instance SUBSCRIBEs to ``juggernaut`` (one channel, through the process's hub) and
delivers each publish to its own clients subscribed to the listed channels, with
Juggernaut's semantics: duplicates kept, ``except`` by session id, extra keys passed
through. Clients are legacy socket.io 0.8 browsers and flask-chat clients alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from flask import Flask

from flask_chat.connection import Connection
from flask_chat.hub import running_hub
from flask_chat.protocol import ws_frame

from . import protocol
from .metrics import BRIDGE_METRICS
from .roster import Roster

if TYPE_CHECKING:
    from flask_chat.state import ChatState

    from .extension import JuggernautBridge

log = logging.getLogger("flask_chat_bridge.router")

LEGACY = "juggernaut_legacy"  # Connection.data key: True for socket.io 0.8 clients
_BUCKET = "juggernaut_bucket"  # Connection.data key: [tokens, when] of its frame rate


@dataclass(frozen=True)
class Limits:
    """Per connection: legacy subscriptions (0: no cap), and the token bucket of its
    subscribe / meta / event frames (rate 0: no limit); the largest legacy message
    delivered, in bytes (0: no cap). From the CHAT_JUGGERNAUT_* settings (extension.py)."""

    max_subscriptions: int
    frame_rate: float
    frame_burst: float
    max_message_bytes: int = 0


class LegacyRouter:
    def __init__(self, bridge: JuggernautBridge, app: Flask, state: ChatState,
                 limits: Limits) -> None:
        self.bridge = bridge
        self.app = app
        self.state = state
        self.limits = limits
        self.roster = Roster(state.redis, state.keys.prefix, state.config.presence_ttl)
        # channel -> connections, one entry per subscribe (a client that subscribed
        # twice gets every message twice, as with Juggernaut).
        self.subscribers: dict[str, list[Connection]] = {}
        # Sessions that ended while the roster could not be trusted (Redis unreachable,
        # or back but not yet rebuilt: a restart empties it): session id -> (channels,
        # meta), their unsubscribes published once the roster is rebuilt.
        self.unfinished: dict[str, tuple[list[str | None], Any]] = {}
        # The subscriber's reconnect count the roster was last rebuilt for.
        self._rebuilt_for = 0

    # -- subscriptions ---------------------------------------------------------------

    @staticmethod
    def session(conn: Connection) -> dict[str, Any]:
        # "channels": the names the client subscribed to, in order, one per subscribe;
        # None for a subscribe without a channel (Juggernaut's channel "undefined", whose
        # events have no channel key).
        session: dict[str, Any] = conn.data.setdefault(
            "juggernaut", {"channels": [], "meta": protocol.NO_META}
        )
        return session

    key = staticmethod(protocol.channel_key)

    def subscription_count(self, conn: Connection) -> int:
        """Its subscribes in force, a second one to the same channel included (it costs
        a second delivery of every message, as with Juggernaut)."""
        session = conn.data.get("juggernaut")
        return len(session["channels"]) if session else 0

    def over_subscription_cap(self, conn: Connection) -> bool:
        cap = self.limits.max_subscriptions
        return bool(cap) and self.subscription_count(conn) >= cap

    def take_frame(self, conn: Connection) -> bool:
        """One token from the connection's bucket; False when it is empty. In process
        memory: a connection lives in one process."""
        rate = self.limits.frame_rate
        if not rate:
            return True
        now = time.monotonic()
        bucket: list[float] | None = conn.data.get(_BUCKET)
        if bucket is None:
            bucket = conn.data[_BUCKET] = [self.limits.frame_burst, now]
        tokens = min(self.limits.frame_burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def subscribe(self, conn: Connection, channel: str | None) -> None:
        self.subscribers.setdefault(self.key(channel), []).append(conn)
        session = self.session(conn)
        # The meta goes to the roster with the first channel; later, set_meta writes it.
        first = not session["channels"]
        session["channels"].append(channel)
        session["order"] = order = session.get("order", 0) + 1
        self.roster.add(conn.id, channel, order, session["meta"], write_meta=first,
                        event=self._event("subscribe", conn, channel=channel))

    def unsubscribe(self, conn: Connection, channel: str | None) -> None:
        session = self.session(conn)
        key = self.key(channel)
        names = [c for c in session["channels"] if self.key(c) == key]
        if not names:
            return  # Juggernaut sends no event for a channel the client was not in
        session["channels"] = [c for c in session["channels"] if self.key(c) != key]
        self._drop(conn, key)
        self.roster.remove(conn.id, channel,
                           event=self._event("unsubscribe", conn, channel=names[0]))

    def set_meta(self, conn: Connection, meta: Any) -> None:
        session = self.session(conn)
        session["meta"] = meta
        if session["channels"]:
            self.roster.set_meta(conn.id, meta)

    def custom(self, conn: Connection, data: Any) -> None:
        self.publish_event("custom", conn, data=data)

    def disconnected(self, conn: Connection) -> None:
        """One unsubscribe per channel the client was in (a hub close callback).

        Close callbacks run in the event loop (from the socket's watcher), where nothing
        may block: the Redis work goes to a greenlet of its own."""
        session = conn.data.get("juggernaut")
        if not session:
            return
        channels = protocol.distinct_channels(session["channels"])
        for channel in channels:
            self._drop(conn, self.key(channel))
        hub = running_hub(self.state)
        if hub is not None and hub.draining:
            return  # the client reconnects elsewhere; the reaper cleans up if not
        gevent.spawn(self._forget, conn.id, channels, session["meta"])

    def _forget(self, session_id: str, channels: list[str | None], meta: Any) -> None:
        try:
            if self.roster.forget(session_id):
                self._publish_unsubscribes(session_id, channels, meta)
                return
        except Exception:
            # Redis is away: after it is back (and the roster rebuilt), the unsubscribes
            # go out from here (a restart emptied the roster: no reaper would see them).
            log.warning("flask-chat bridge: could not end session %s yet", session_id,
                        exc_info=True)
            self.unfinished[session_id] = (channels, meta)
            return
        if not self._roster_trusted():
            # Not in the roster: reaped by another instance (this one looked dead), or
            # lost with a Redis restart the hub has not caught up with yet.
            self.unfinished[session_id] = (channels, meta)

    def _roster_trusted(self) -> bool:
        hub = running_hub(self.state)
        if hub is None:
            return True
        subscriber = hub.subscriber
        return bool(subscriber.connected) and subscriber.reconnects == self._rebuilt_for

    # -- after a Redis restart -------------------------------------------------------

    def reconnected(self) -> None:
        """A hub reconnect callback: the subscriber is back (Redis restarted, or was out
        of reach). Redis may have lost the roster: write it again from the live
        sessions, then publish the unsubscribes of those that ended meanwhile.

        Runs in the subscriber's read loop: the Redis work goes to a greenlet."""
        hub = running_hub(self.state)
        if hub is not None:
            gevent.spawn(self._rebuild, hub.subscriber.reconnects)

    def _rebuild(self, reconnects: int) -> None:
        hub = running_hub(self.state)
        assert hub is not None
        conns = [c for c in hub.connections.values() if c.data.get("juggernaut")]
        try:
            for start in range(0, len(conns), hub.SLICE):
                sessions = []
                for conn in conns[start : start + hub.SLICE]:
                    session = conn.data["juggernaut"]
                    if not conn.closed and session["channels"]:
                        sessions.append((conn.id, session["channels"], session["meta"]))
                self.roster.restore(sessions)
            if hub.subscriber.reconnects == reconnects:
                self._rebuilt_for = reconnects
            for session_id, (channels, meta) in list(self.unfinished.items()):
                # Whatever is left of it goes; its unsubscribes were published by nobody
                # (at least once: an instance that reaped it meanwhile published them too).
                self.roster.forget(session_id)
                self._publish_unsubscribes(session_id, channels, meta)
                del self.unfinished[session_id]
        except Exception:
            # Redis went away again: the next reconnect rebuilds once more.
            log.warning("flask-chat bridge: rebuilding the legacy roster failed", exc_info=True)

    def _publish_unsubscribes(self, session_id: str, channels: Iterable[str | None],
                              meta: Any) -> None:
        for payload in protocol.unsubscribe_payloads(session_id, channels, meta):
            self._publish(protocol.EVENT_CHANNELS["unsubscribe"], payload)

    def _drop(self, conn: Connection, channel: str) -> None:
        members = self.subscribers.get(channel)
        if members is None:
            return
        members[:] = [c for c in members if c is not conn]
        if not members:
            del self.subscribers[channel]

    def _event(self, kind: str, conn: Connection, channel: str | None = None,
               data: Any = protocol.NO_META) -> tuple[str, str]:
        """(Redis channel, payload) of a ``juggernaut:<kind>`` event."""
        session = self.session(conn)
        payload = protocol.event_payload(kind, conn.id, session["meta"], channel=channel,
                                         data=data)
        return protocol.EVENT_CHANNELS[kind], payload

    def publish_event(self, kind: str, conn: Connection, channel: str | None = None,
                      data: Any = protocol.NO_META) -> None:
        self._publish(*self._event(kind, conn, channel=channel, data=data))

    def _publish(self, channel: str, payload: str) -> None:
        self.state.redis.publish(channel, payload)

    # -- periodic work ---------------------------------------------------------------

    def heartbeat(self) -> None:
        """Renew this process's sessions; publish the unsubscribes of dead instances'."""
        hub = running_hub(self.state)
        if hub is not None:
            self.roster.renew([c.id for c in hub.connections.values() if c.data.get("juggernaut")])
        for session_id, channels, meta in self.roster.reap():
            self._publish_unsubscribes(session_id, channels, meta)

    # -- delivery --------------------------------------------------------------------

    def on_publish(self, payload: bytes) -> None:
        try:
            publish = protocol.parse_publish(payload)
        except protocol.InvalidPublish as exc:
            BRIDGE_METRICS.dropped.labels(str(exc)).inc()
            log.debug("flask-chat bridge: dropped a juggernaut publish (%s): %.200r", exc, payload)
            return
        BRIDGE_METRICS.publishes.inc()
        mirrored = publish.origin is not None
        written = 0
        cap = self.limits.max_message_bytes
        too_large = False
        for channel, value in publish.targets():
            members = self.subscribers.get(channel)
            if not members:
                continue
            try:
                body = protocol.dumps(publish.message_for(value)).encode()
            except (ValueError, RecursionError):
                BRIDGE_METRICS.dropped.labels("not encodable").inc()
                return
            if cap and len(body) > cap:
                if not too_large:
                    too_large = True
                    BRIDGE_METRICS.dropped.labels("too large").inc()
                    log.warning("flask-chat bridge: dropped a legacy message of %d bytes on "
                                "%.200r (CHAT_JUGGERNAUT_MAX_MESSAGE_BYTES is %d)",
                                len(body), channel, cap)
                if not mirrored:
                    self._tell_too_large(members, publish.exclude, value, len(body))
                continue
            legacy_frame = new_frame = b""
            for conn in tuple(members):
                if conn.id in publish.exclude:
                    continue
                if conn.data.get(LEGACY):
                    if not legacy_frame:
                        legacy_frame = ws_frame(b"3:::" + body)
                    conn.write(legacy_frame)
                elif not mirrored:
                    # flask-chat clients already got what flask-chat mirrored out.
                    if not new_frame:
                        new_frame = ws_frame(b'{"type":"juggernaut","message":' + body + b"}")
                    conn.write(new_frame)
                else:
                    continue
                written += 1
        if written:
            BRIDGE_METRICS.deliveries.inc(written)
        if not mirrored and self.bridge.translator is not None and self.bridge.is_translating:
            gevent.spawn(self._translate, publish)

    @staticmethod
    def _tell_too_large(members: list[Connection], exclude: frozenset[str], channel: Any,
                        size: int) -> None:
        """Native clients that would have got a message over the cap get an error frame
        instead (legacy clients get nothing: the protocol has no error frames)."""
        frame = b""
        for conn in tuple(members):
            if conn.id in exclude or conn.data.get(LEGACY):
                continue
            if not frame:
                frame = ws_frame(protocol.dumps({
                    "type": "error", "error": "message_too_large",
                    "message": f"A legacy message of {size} bytes was dropped: over the "
                               "bridge's limit.",
                    "channel": channel, "bytes": size,
                }).encode())
            conn.write(frame)

    def _translate(self, publish: protocol.Publish) -> None:
        with self.app.app_context():
            self.bridge.translate(publish)


def subscribe_listener(router: LegacyRouter) -> Callable[[Any], None]:
    """A hub listener: route ``juggernaut`` through ``router`` once the hub runs."""

    def attach(hub: Any) -> None:
        hub.handle_channel(protocol.PUBLISH_CHANNEL.encode(), router.on_publish)
        hub.close_callbacks.append(router.disconnected)
        hub.heartbeat_callbacks.append(router.heartbeat)
        hub.reconnect_callbacks.append(router.reconnected)

    return attach
