"""Who is subscribed to which legacy channel, kept in Redis so that every unsubscribe
event is published — also when an instance dies (the legacy Node server published none
then, and Rails rosters drifted).

Per session (socket.io session id or flask-chat connection id): a hash with one field
per channel and one for the meta, and an expiry in a sorted set renewed by the instance
that holds it. A subscribe or an unsubscribe writes its one field (one round trip,
whatever the number of channels). When the expiry passes, whichever instance's reaper
removes the session first publishes its unsubscribes, once.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from flask_chat.scripts import command

from . import protocol

_META = "meta"
# Channel fields: "c:" + the channel's key as JSON (never "meta"; ASCII, so a name with
# a lone surrogate can be a field); the value is [order, name], the order of the first
# subscribe (unsubscribes follow it) and the name it was made with (None for the
# channel "undefined" joined without a name).
_CHANNEL = "c:"
# What the previous release wrote: every channel, in one JSON list, rewritten each time.
_OLD_CHANNELS = "channels"


class Roster:
    def __init__(self, client: redis.Redis, prefix: str, ttl: float) -> None:
        self.client = client
        self.sessions_key = f"{prefix}:jug:sessions"
        self.prefix = prefix
        self.ttl = ttl

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:jug:session:{session_id}"

    def add(self, session_id: str, channel: str | None, order: int,
            meta: Any = protocol.NO_META, write_meta: bool = False,
            event: tuple[str, str] | None = None) -> None:
        """A subscribe, and its ``event`` (Redis channel, payload) published in the same
        round trip. A second subscribe to a channel changes nothing here: the first
        one's name and place are kept, as the unsubscribes on disconnect use them."""
        key = self._key(session_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hsetnx(key, _field(channel), json.dumps([order, channel]))
        if write_meta:
            self._meta(pipe, key, meta)
        pipe.zadd(self.sessions_key, {session_id: time.time() + self.ttl})
        if event is not None:
            # Classic pub/sub (Juggernaut's channels): cluster-wide on Redis Cluster too.
            # Not pipe.publish, which redis-py's cluster pipeline refuses.
            command(pipe, "PUBLISH", *event)
        pipe.execute()

    def remove(self, session_id: str, channel: str | None,
               event: tuple[str, str] | None = None) -> None:
        """An unsubscribe (of every subscribe to that channel), and its ``event``."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hdel(self._key(session_id), _field(channel))
        pipe.zadd(self.sessions_key, {session_id: time.time() + self.ttl})
        if event is not None:
            command(pipe, "PUBLISH", *event)
        pipe.execute()

    def set_meta(self, session_id: str, meta: Any) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._meta(pipe, self._key(session_id), meta)
        pipe.execute()

    @staticmethod
    def _meta(pipe: Any, key: str, meta: Any) -> None:
        if meta is protocol.NO_META:
            pipe.hdel(key, _META)  # a meta frame without data: no meta key in events
        else:
            pipe.hset(key, _META, json.dumps(meta))

    def restore(self, sessions: list[tuple[str, list[str | None], Any]]) -> None:
        """Write these live sessions' entries again, (session id, channels in the order
        subscribed, meta) each, as a subscribe by subscribe would have: after a Redis
        restart emptied the roster. One transaction, so a reaper never reads half an
        entry."""
        if not sessions:
            return
        pipe = self.client.pipeline(transaction=True)
        expires = time.time() + self.ttl
        for session_id, channels, meta in sessions:
            key = self._key(session_id)
            pipe.delete(key)
            fields: dict[Any, Any] = {  # (redis-py's Mapping type wants no dict[str, str])
                _field(channel): json.dumps([order, channel])
                for order, channel in enumerate(protocol.distinct_channels(channels), 1)
            }
            pipe.hset(key, mapping=fields)
            self._meta(pipe, key, meta)
            pipe.zadd(self.sessions_key, {session_id: expires})
        pipe.execute()

    def renew(self, session_ids: list[str]) -> None:
        if session_ids:
            expires = time.time() + self.ttl
            self.client.zadd(self.sessions_key, {sid: expires for sid in session_ids}, xx=True)

    def forget(self, session_id: str) -> bool:
        """Drop a session; True for the one caller that removed it."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.sessions_key, session_id)
        pipe.delete(self._key(session_id))
        return bool(pipe.execute()[0])

    def reap(self) -> list[tuple[str, list[str | None], Any]]:
        """Sessions whose instance died: (session id, channels, meta) for each one this
        call claimed, so their unsubscribes are published exactly once."""
        expired = self.client.zrangebyscore(self.sessions_key, "-inf", time.time(), 0, 200)
        claimed = []
        for sid in expired:
            session_id = str(sid)
            data = self.client.hgetall(self._key(session_id))
            if self.forget(session_id):
                meta = json.loads(data[_META]) if _META in data else protocol.NO_META
                claimed.append((session_id, _channels(data), meta))
        return claimed


def _field(channel: str | None) -> str:
    return _CHANNEL + json.dumps(protocol.channel_key(channel))


def _channels(data: dict[Any, Any]) -> list[str | None]:
    """A session's channels in the order first subscribed."""
    if _OLD_CHANNELS in data:  # written by an instance of the previous release
        old: list[str | None] = json.loads(data[_OLD_CHANNELS])
        return old
    entries = sorted(
        (json.loads(v) for k, v in data.items() if k.startswith(_CHANNEL)), key=lambda e: e[0]
    )
    return [name for _, name in entries]
