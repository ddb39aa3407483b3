"""Catch-up after a reconnect: replay exactly the messages a client missed.

The highest id a client holds is its position ``P``. Everything it missed is still in
Redis — in the user's cache, and in the shared stores of the user's groups — unless it
was trimmed or cleared: each store keeps a *floor*, the highest id that ever left it.

Ids are allocated a round trip before the message is stored and published, so a slow
send can publish a lower id after a faster send's higher one, and "everything after
``P``" is not enough. Each store also logs when each message was stored and published
(one atomic step, ``scripts.DELIVER``, on the Redis server's clock). A client that saw
``P`` saw every message published on its channels before ``P`` was (one subscriber
connection per process gets them in publish order), so what it can have missed is:
every id above ``P``, and every id below ``P`` published at or after ``P`` was. Both are
replayed, in id order; the second set is usually empty, otherwise it may hold messages
the client has, which it drops by id.

Replay is complete (``recovered``) when the position is at or above every floor, within
``CHAT_CATCHUP_RETENTION`` and nothing it needs has left a store; otherwise the client
reloads ``/chats/history``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from . import protocol
from .ids import id_time, is_valid_id

if TYPE_CHECKING:
    from .connection import Connection
    from .state import ChatState


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
    # The publish logs: when P was published (as the user's stores know it), and what
    # was published since P's id was allocated (P cannot have been published earlier).
    logs = [(keys.published(user_id), conversations)]
    logs += [(keys.group_published(g), [f"{g}_Group"]) for g in group_ids]
    allocated = after.split("-", 1)[0]
    for log, convs in logs:
        if convs:
            pipe.zmscore(log, [f"{c}|{after}" for c in convs])
        pipe.zrangebyscore(log, allocated, "+inf", withscores=True)
    results = pipe.execute()
    floors = results[: 1 + len(group_ids)]
    if any(f is not None and f > after for f in floors):
        return False, []
    count = len(conversations) + len(group_ids)
    id_lists = results[1 + len(group_ids) : 1 + len(group_ids) + count]
    rest = results[1 + len(group_ids) + count :]

    published_p: list[float] = []
    logged: list[list[tuple[str, float]]] = []
    for _, convs in logs:
        if convs:
            published_p += [float(s) for s in rest.pop(0) if s is not None]
        logged.append(rest.pop(0))
    since = min(published_p) if published_p else float(allocated)
    # Per log, ids below P published at or after P was: the client may lack them.
    late: list[dict[str, list[str]]] = []
    for entries in logged:
        found: dict[str, list[str]] = {}
        for member, at in entries:
            conversation, _, message_id = member.rpartition("|")
            if message_id < after and at >= since:
                found.setdefault(conversation, []).append(message_id)
        late.append(found)

    # (conversation or None for a group store, bodies hash, ids, ids below P?)
    wanted: list[tuple[str | None, str, list[str], bool]] = []
    for conversation, ids in zip(conversations, id_lists, strict=False):
        bodies = keys.message_bodies(user_id, conversation)
        wanted.append((conversation, bodies, ids, False))
        wanted.append((conversation, bodies, late[0].get(conversation, []), True))
    for i, (gid, ids) in enumerate(zip(group_ids, id_lists[len(conversations) :], strict=True)):
        bodies = keys.group_bodies(gid)
        wanted.append((None, bodies, ids, False))
        wanted.append((None, bodies, late[1 + i].get(f"{gid}_Group", []), True))
    wanted = [w for w in wanted if w[2]]
    if set(late[0]) - set(conversations):
        return False, []  # a late message's whole conversation has been cleared since
    total = sum(len(ids) for _, _, ids, _ in wanted)
    if total > state.config.catchup_limit:
        return False, []
    if not total:
        return True, []

    pipe = state.redis.pipeline(transaction=False)
    for _, bodies, ids, _ in wanted:
        pipe.hmget(bodies, ids)
    events: dict[str, bytes] = {}
    recovered = True
    for (source, _, ids, below), bodies_found in zip(wanted, pipe.execute(), strict=True):
        for message_id, body in zip(ids, bodies_found, strict=True):
            if body is None:
                # Gone since it was logged (trimmed or cleared): a late one is lost to
                # catch-up; one above P was removed just now, and the floor says so.
                recovered = recovered and not below
                continue
            if message_id in events:
                continue
            if source is None:  # a group store holds the event itself
                events[message_id] = body.encode()
            else:
                events[message_id] = protocol.message_event_from_cache(
                    user_id, source, json.loads(body)
                )
    if not recovered:
        return False, []
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
