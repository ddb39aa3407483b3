"""Catch-up after a reconnect: replay exactly the messages a client missed.

Message ids sort in time order across the system, so the highest id a client holds is
its position. Everything after it is still in Redis — in the user's cache, and in the
shared stores of the user's groups — unless it was trimmed or cleared: each store keeps
a *floor*, the highest id that ever left it. Replay is complete (``recovered``) when
the position is at or above every floor and within ``CHAT_CATCHUP_RETENTION``;
otherwise the client reloads ``/chats/history``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from . import protocol
from .ids import id_time, is_valid_id

if TYPE_CHECKING:
    from .connection import Connection
    from .extension import ChatState


def missed(
    state: ChatState, user_id: int, group_ids: list[int], after: str
) -> tuple[bool, list[bytes]]:
    """(recovered, message events after ``after`` in id order) for one user."""
    if not is_valid_id(after):
        return False, []
    if id_time(after).timestamp() < time.time() - state.config.catchup_retention:
        return False, []
    keys = state.keys
    conversations = state.cache.conversation_ids(user_id)

    pipe = state.redis.pipeline(transaction=False)
    pipe.get(keys.floor(user_id))
    for gid in group_ids:
        pipe.get(keys.group_floor(gid))
    lower = f"({after}"
    for conversation in conversations:
        pipe.zrangebylex(keys.message_index(user_id, conversation), lower, "+")
    for gid in group_ids:
        pipe.zrangebylex(keys.group_index(gid), lower, "+")
    results = pipe.execute()
    floors = results[: 1 + len(group_ids)]
    if any(f is not None and f > after for f in floors):
        return False, []
    id_lists = results[1 + len(group_ids) :]
    total = sum(len(ids) for ids in id_lists)
    if total > state.config.catchup_limit:
        return False, []
    if not total:
        return True, []

    pipe = state.redis.pipeline(transaction=False)
    sources: list[tuple[str | None, list[str]]] = []
    for conversation, ids in zip(conversations, id_lists, strict=False):
        if ids:
            pipe.hmget(keys.message_bodies(user_id, conversation), ids)
            sources.append((conversation, ids))
    for gid, ids in zip(group_ids, id_lists[len(conversations) :], strict=True):
        if ids:
            pipe.hmget(keys.group_bodies(gid), ids)
            sources.append((None, ids))
    events: dict[str, bytes] = {}

    for (source, ids), bodies in zip(sources, pipe.execute(), strict=True):
        for message_id, body in zip(ids, bodies, strict=True):
            if body is None or message_id in events:
                continue
            if source is None:  # a group store holds the event itself
                events[message_id] = body.encode()
            else:
                events[message_id] = protocol.message_event_from_cache(
                    user_id, source, json.loads(body)
                )
    return True, [events[i] for i in sorted(events)]


def replay(state: ChatState, conn: Connection, after: str, held: bool = False) -> None:
    """Write what ``conn`` missed after ``after``, then the ``catchup`` frame, then the
    live frames that arrived meanwhile (held back so the order stays: replay first).

    ``held``: the caller already called ``conn.hold()`` (before joining the hub's
    channels, so nothing published after the replay's read can slip between the two).
    """
    if not held:
        conn.hold()
    replayed: set[str] = set()
    try:
        recovered, events = missed(state, conn.user_id, conn.data["groups"], after)
        for event in events:
            conn.write(protocol.ws_frame(event))
            message_id = protocol.payload_message_id(event)
            if message_id is not None:
                replayed.add(message_id)
        conn.write(protocol.ws_frame(protocol.catchup_done(recovered, len(events))))
    finally:
        conn.release(replayed)
