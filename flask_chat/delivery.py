"""Publishing the events that are not messages: presence, typing, read marks, window
state, group membership. (Messages are published by :mod:`flask_chat.messaging`, in the
same round trip as their cache writes.)

Every event goes to the fewest channels that reach its audience: a group's channel
reaches all its online members with one PUBLISH, never one per member. On Redis Cluster
it is SPUBLISH (sharded pub/sub: only the channel's shard carries it).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from functools import partial

from . import protocol
from .coalesce import SharedReads
from .conversations import ConversationKey
from .metrics import METRICS
from .scripts import command
from .state import ChatState

#: Who sees a user come and go: (user ids, group ids whose members do).
Audience = tuple[list[int], list[int]]


def publish(state: ChatState, channels: Iterable[str], payload: bytes) -> None:
    pipe = state.redis.pipeline(transaction=False)
    for channel in dict.fromkeys(channels):
        command(pipe, state.publish_command, channel, payload)
    pipe.execute()


def conversation_channels(state: ChatState, user_id: int, to: ConversationKey) -> list[str]:
    """The channels that reach both sides of a conversation (and the user's other tabs)."""
    if to.is_group:
        return [state.keys.group_channel(to.id)]
    return [state.keys.user_channel(to.id), state.keys.user_channel(user_id)]


def presence_audience(
    state: ChatState, user_id: int, group_ids: list[int] | None = None
) -> Audience:
    """Who sees ``user_id`` come and go (the host's ``presence_audience_loader``, or the
    members of their groups and their 1:1 partners). ``group_ids``: the user's groups,
    if the host app was already asked for them."""
    return state.hooks.presence_audience(
        user_id, state.cache.conversation_ids(user_id), group_ids
    )


def presence(state: ChatState, changes: Mapping[int, tuple[bool, Audience]]) -> None:
    """Announce who came online (True) and who went offline (False), each to those who
    can see them: one frame per channel for the whole batch, one round trip."""
    channels: dict[str, tuple[set[int], set[int]]] = {}
    for user_id, (online, (users, groups)) in changes.items():
        METRICS.presence_changes.labels("online" if online else "offline").inc()
        names = [state.keys.group_channel(g) for g in groups]
        names += [state.keys.user_channel(u) for u in users if u != user_id]
        for name in names:
            channels.setdefault(name, (set(), set()))[0 if online else 1].add(user_id)
    if not channels:
        return
    pipe = state.redis.pipeline(transaction=False)
    for name, (came, went) in channels.items():
        command(pipe, state.publish_command, name, protocol.presence(sorted(came), sorted(went)))
    pipe.execute()


def typing(state: ChatState, user_id: int, to: ConversationKey) -> None:
    channels = conversation_channels(state, user_id, to)
    publish(state, channels, protocol.typing(user_id, str(to)))


def read_mark(state: ChatState, user_id: int, to: ConversationKey, message_id: str) -> None:
    state.redis.hset(state.keys.reads(user_id), str(to), message_id)
    channels = conversation_channels(state, user_id, to)
    publish(state, channels, protocol.read_mark(user_id, str(to), message_id))


def window(state: ChatState, user_id: int, conversation: str, window_state: str) -> None:
    """Keep a user's tabs in sync when one of them opens, minimises or hides a window."""
    publish(state, [state.keys.user_channel(user_id)], protocol.window(conversation, window_state))


def membership(
    state: ChatState, group_id: int, added: Iterable[int], removed: Iterable[int]
) -> None:
    """Tell each affected user's connections to join or leave the group's channel."""
    pipe = state.redis.pipeline(transaction=False)
    for uid in added:
        command(pipe, state.publish_command, state.keys.user_channel(uid),
                             protocol.membership(group_id, True))
    for uid in removed:
        command(pipe, state.publish_command, state.keys.user_channel(uid),
                             protocol.membership(group_id, False))
    pipe.execute()


def logout(state: ChatState, user_id: int) -> None:
    """Refuse every websocket token issued to ``user_id`` so far and close their live
    connections on every instance (each hub closes its own on the ``logout`` event)."""
    key = state.keys.token_generation(user_id)
    pipe = state.redis.pipeline(transaction=False)
    pipe.incr(key)
    # Tokens older than this are refused by their age anyway; after it, the key may go.
    pipe.expire(key, state.config.token_max_age + 60)
    command(pipe, state.publish_command, state.keys.user_channel(user_id), protocol.LOGOUT)
    pipe.execute()


#: Per app, this process's reads of groups' online members, shared by concurrent connects.
_group_reads: weakref.WeakKeyDictionary[ChatState, SharedReads[int, tuple[int, ...]]] = (
    weakref.WeakKeyDictionary()
)


def online_snapshot(
    state: ChatState,
    user_id: int,
    audience: Audience | None = None,
) -> list[int]:
    """Who of the people ``user_id`` can see is online now (for ``online`` frames and
    ``GET /chats/online_users``), in id order."""
    users, groups = audience or presence_audience(state, user_id)
    online: set[int] = set()
    if groups:
        reads = _group_reads.get(state)
        if reads is None:
            reads = _group_reads[state] = SharedReads()
        for gid in groups:
            # A connect storm in a big group shares a few reads (host app, ZMSCORE)
            # instead of one each: see coalesce.py.
            online.update(reads.get(gid, partial(_online_members, state, gid)))
    online.update(state.presence.online_ids(u for u in dict.fromkeys(users) if u not in online))
    online.discard(user_id)
    return sorted(online)


def _online_members(state: ChatState, group_id: int) -> tuple[int, ...]:
    group = state.hooks.get_group(group_id)
    return tuple(state.presence.online_ids(group.members)) if group is not None else ()
