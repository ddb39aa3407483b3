"""Records that could not be persisted, kept in Redis for an operator to inspect.

A write-behind record or a cache entry that is not a message, or that the database
refused on its data (see :mod:`flask_chat.persistence`), is logged, counted in its job's
summary and kept here: one hash field per record and place, so a cache entry that every
sweep retries is one entry, not one per sweep. A refused cache entry also stays in its
cache (it is never cleared unpersisted); a write-behind record leaves the queue for this
hash (the caches hold the message too). ``flask chat dead-letters`` lists them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from .keys import Keys
from .persistence import Rejected, record_digest

log = logging.getLogger("flask_chat.deadletters")


def field_name(item: Rejected) -> str:
    if item.source == "cache":
        return f"cache:{item.owner}:{item.conversation}:{item.message_id}"
    return f"{item.source}:{item.message_id or 'sha1-' + record_digest(item.record)}"


def keep(client: redis.Redis, keys: Keys, items: Iterable[Rejected]) -> int:
    """Store these records (one field each); returns how many."""
    now = datetime.now(timezone.utc).isoformat()
    mapping: dict[FieldT, EncodableT] = {}
    for item in items:
        mapping[field_name(item)] = json.dumps(
            {
                "source": item.source,
                "message_id": item.message_id,
                "owner": item.owner,
                "conversation": item.conversation,
                "error": item.error,
                "record": item.record,
                "at": now,
            },
            ensure_ascii=False,
        )
        log.error(
            "flask-chat: could not persist %s record %s (owner %s): %s",
            item.source, item.message_id or "(no id)", item.owner, item.error,
        )
    if mapping:
        client.hset(keys.dead_letters(), mapping=mapping)
    return len(mapping)


def read(client: redis.Redis, keys: Keys) -> dict[str, dict[str, Any]]:
    raw = client.hgetall(keys.dead_letters())
    return {str(name): json.loads(body) for name, body in sorted(raw.items())}


def forget(client: redis.Redis, keys: Keys, names: Iterable[str] | None = None) -> int:
    """Remove these entries (all of them when ``names`` is None); returns how many."""
    if names is not None:
        chosen = list(names)
        return int(client.hdel(keys.dead_letters(), *chosen)) if chosen else 0
    pipe = client.pipeline(transaction=True)
    pipe.hlen(keys.dead_letters())
    pipe.delete(keys.dead_letters())
    count, _ = pipe.execute()
    return int(count)
