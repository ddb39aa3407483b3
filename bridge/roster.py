"""Who is subscribed to which legacy channel, kept in Redis so that every unsubscribe
event is published — also when an instance dies (the legacy Node server published none
then, and Rails rosters drifted).

Per session (socket.io session id or flask-chat connection id): a hash with its channels
and meta, and an expiry in a sorted set renewed by the instance that holds it. When it
expires, whichever instance's reaper removes it first publishes its unsubscribes, once.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from . import protocol


class Roster:
    def __init__(self, client: redis.Redis, prefix: str, ttl: float) -> None:
        self.client = client
        self.sessions_key = f"{prefix}:jug:sessions"
        self.prefix = prefix
        self.ttl = ttl

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:jug:session:{session_id}"

    def save(self, session_id: str, channels: list[str], meta: Any) -> None:
        fields: dict[Any, Any] = {"channels": json.dumps(channels)}
        if meta is not protocol.NO_META:
            fields["meta"] = json.dumps(meta)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self._key(session_id))
        pipe.hset(self._key(session_id), mapping=fields)
        pipe.zadd(self.sessions_key, {session_id: time.time() + self.ttl})
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

    def reap(self) -> list[tuple[str, list[str], Any]]:
        """Sessions whose instance died: (session id, channels, meta) for each one this
        call claimed, so their unsubscribes are published exactly once."""
        expired = self.client.zrangebyscore(self.sessions_key, "-inf", time.time(), 0, 200)
        claimed = []
        for sid in expired:
            session_id = str(sid)
            data = self.client.hgetall(self._key(session_id))
            if self.forget(session_id):
                meta = json.loads(data["meta"]) if "meta" in data else protocol.NO_META
                claimed.append((session_id, json.loads(data.get("channels", "[]")), meta))
        return claimed
