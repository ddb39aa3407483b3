"""The per-user chat cache in Redis, in the legacy Rails layout.

Exported, a user's cache is exactly what ``ChatsController`` kept per user::

    {"2_User":  {"type": "User",  "messages": [{"message_text": "hi", "type": "received",
                                                 "image": "/img/bob.png", "id": "...",
                                                 "sender_id": 2, "sent_at": "..."}]},
     "5_Group": {"type": "Group", "messages": [...]}}

Each message is stored once per owner, keyed by its id (see :mod:`flask_chat.keys` for
the Redis structures), so concurrent sends never overwrite each other and a retried
append is a no-op. The cache is a window of at most ``history_limit`` messages per
conversation; SQL is the record.

A group message is stored once, in the group's store, and each member's conversation
of that group is a *view* over it (``CHAT_GROUP_MEMBER_CACHES = "view"``, the default;
see ``scripts._VIEWS``): exported, cleared, trimmed and persisted exactly as the copy
the legacy layout (True) puts in every online member's cache. A user's views are
found in ``chat:views``; everything here reads and clears them along with the user's
own keys, whichever layout wrote what.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from .conversations import ConversationKey
from .entries import entry_from_event
from .keys import Keys
from .scripts import CLEAR, Scripts, command, queue

History = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class View:
    """One member's view of a group's store, as a copy would hold it: message id ->
    event JSON (the window, and what is below it, waiting for SQL), and the score of
    the conversation among the member's (None when the window is empty)."""

    window: dict[str, str]
    spill: dict[str, str]
    score: int | None


@dataclass(frozen=True)
class CacheEntry:
    """One message as one owner sees it, ready to append.

    The owner is a user, or (``user_id`` None, ``keys`` given) a group's shared store.
    """

    user_id: int | None
    conversation: str
    message_id: str
    body: str | bytes  # serialised once and shared by every owner alike
    keys: list[str] | None = None


class ChatCache:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        history_limit: int,
        retention: int = 3600,
        cluster: bool = False,
    ) -> None:
        self.client = client
        #: On Redis Cluster: no raw pooled connection (keys live on several nodes), and
        #: events go out with SPUBLISH.
        self.cluster = cluster
        self.keys = keys
        self.scripts = scripts
        self.history_limit = history_limit
        # How long the catch-up floor is remembered; older catch-ups never recover.
        self.retention = retention
        # Called directly (EVALSHA, loaded again by redis-py after a Redis restart).
        self._clear = client.register_script(CLEAR)

    def append(
        self,
        entries: Iterable[CacheEntry],
        score: int,
        publish: Iterable[tuple[str, bytes]] = (),
        persist: bytes | None = None,
        persist_max: int = 100_000,
    ) -> tuple[list[int], int | None]:
        """Append messages to their owners' caches, then publish, in one round trip.

        Each append is atomic per owner; owners are independent (no cross-slot
        transaction). ``score`` orders a conversation created by this append among
        the owner's others. ``publish`` holds (channel, payload) pairs sent after the
        appends on the same connection, so a subscriber that reacts to an event finds
        the message already cached. ``persist`` is pushed on the write-behind queue
        (kept to ``persist_max`` records: the caches hold everything anyway). Returns,
        per entry, how many old messages were trimmed off the window (or -1 where the
        id was already cached), and the queue's length after the push.
        """
        entries = list(entries)
        users = {e.user_id for e in entries if e.user_id is not None}
        if not entries:
            return [], None

        def build(pipe: Pipeline) -> None:
            for entry in entries:
                keys = entry.keys
                if keys is None:
                    assert entry.user_id is not None
                    keys = self.keys.conversation_keys(entry.user_id, entry.conversation)
                flag = 1 if entry.user_id is not None else 0
                queue(pipe, self.scripts.append, keys, [
                    entry.conversation, entry.message_id, entry.body, self.history_limit,
                    score, self.retention, flag,
                ])
            # After the appends, so a concurrent clear() can never leave a user with a
            # cache outside the set (clear removes from the set before it removes data).
            if users:
                pipe.sadd(self.keys.cached_users(), *users)
            if persist is not None:
                pipe.rpush(self.keys.persist_queue(), persist)
                pipe.ltrim(self.keys.persist_queue(), -persist_max, -1)
            for channel, payload in publish:
                command(pipe, "SPUBLISH" if self.cluster else "PUBLISH", channel, payload)

        results = self.scripts.run(self.client, build)
        count = len(entries)
        queued = int(results[count + (1 if users else 0)]) if persist is not None else None
        return [int(r) for r in results[:count]], queued

    def append_to_many(
        self, user_ids: list[int], conversation: str, message_id: str, body: str, score: int
    ) -> None:
        """Append one message (the same bytes) to many users' caches: a group message to
        its online members. The same script call as :meth:`append` for each owner, but
        the commands are packed here — one constant tail, only the keys differ — because
        redis-py's packing costs ~20 µs a command, and a big group has thousands."""
        if not user_ids:
            return
        args = (conversation, message_id, body, self.history_limit, score, self.retention, 1)
        if self.cluster:
            # The members' keys live on several nodes: a cluster pipeline splits the calls
            # per node (each call's keys are one user's, so one slot).
            def build(pipe: Pipeline) -> None:
                for uid in user_ids:
                    queue(pipe, self.scripts.append,
                          self.keys.conversation_keys(uid, conversation), args)
                pipe.sadd(self.keys.cached_users(), *user_ids)

            self.scripts.run(self.client, build)
            return

        def bulk(value: str | bytes | int) -> bytes:
            data = value.encode() if isinstance(value, str) else (
                value if isinstance(value, bytes) else str(value).encode())
            return b"$%d\r\n%s\r\n" % (len(data), data)

        head = b"*%d\r\n" % (3 + 5 + len(args))
        head += bulk("EVALSHA") + bulk(self.scripts.append.sha) + bulk(5)
        tail = b"".join(bulk(a) for a in args)
        commands = [
            head + b"".join(bulk(k) for k in self.keys.conversation_keys(uid, conversation)) + tail
            for uid in user_ids
        ]
        for attempt in (1, 2):
            connection = self.client.connection_pool.get_connection()
            try:
                connection.send_packed_command(commands)  # type: ignore[no-untyped-call]
                errors = []
                for _ in commands:
                    try:
                        connection.read_response()
                    except redis.ResponseError as exc:
                        errors.append(exc)
            except BaseException:
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
            finally:
                self.client.connection_pool.release(connection)
            if not errors:
                break
            if attempt == 2 or not all(isinstance(e, NoScriptError) for e in errors):
                raise errors[0]
            self.scripts.load(self.client)  # appends are idempotent: run them all again
        self.client.sadd(self.keys.cached_users(), *user_ids)

    def conversation_counts(self, user_ids: list[int]) -> dict[int, int]:
        """How many conversations each user's cache holds, their own and views."""
        pipe = self.client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.zrange(self.keys.conversations(uid), 0, -1)
        counts: dict[int, int] = {}
        for uid, own in zip(user_ids, pipe.execute(), strict=True):
            names = {str(c) for c in own}
            names.update(f"{gid}_Group" for gid, view in self.views_raw(uid).items()
                         if view.window)
            counts[uid] = len(names)
        return counts

    def conversation_ids(self, user_id: int) -> list[str]:
        return [str(c) for c in self.client.zrange(self.keys.conversations(user_id), 0, -1)]

    def export(self, user_id: int, group_ids: Iterable[int] = ()) -> History:
        """The user's whole cache in the seed layout, conversations in order of first use.

        ``group_ids``: groups whose shared store is merged in (when members' caches hold
        no copies of group messages: ``CHAT_GROUP_MEMBER_CACHES = False``).
        """
        own, shared = self.export_raw(user_id, group_ids)
        history: History = {}
        for conversation, bodies in own.items():
            history[conversation] = {
                "type": ConversationKey.parse(conversation).kind,
                "messages": [json.loads(bodies[mid]) for mid in sorted(bodies)],
            }
        views = {gid: v for gid, v in self.views_raw(user_id).items() if v.window}
        if views:
            # In order of first use, as one sorted set of conversations would have them.
            ranked: list[tuple[str, float]] = self.client.zrange(  # type: ignore[assignment]
                self.keys.conversations(user_id), 0, -1, withscores=True)
            scores = {str(c): float(s) for c, s in ranked}
            for gid, view in views.items():
                key = f"{gid}_Group"
                merged = {m["id"]: m for m in history.get(key, {"messages": []})["messages"]}
                for mid, body in view.window.items():
                    merged.setdefault(mid, entry_from_event(json.loads(body), user_id))
                history[key] = {"type": "Group", "messages": [merged[i] for i in sorted(merged)]}
                assert view.score is not None
                scores[key] = min(scores.get(key, view.score), view.score)
            history = {k: history[k] for k in sorted(history, key=lambda k: (scores.get(k, 0), k))}
        for gid, bodies in shared.items():
            key = f"{gid}_Group"
            merged = {m["id"]: m for m in history.get(key, {"messages": []})["messages"]}
            for mid, body in bodies.items():
                merged.setdefault(mid, entry_from_event(json.loads(body), user_id))
            history[key] = {"type": "Group", "messages": [merged[i] for i in sorted(merged)]}
        return history

    def export_raw(
        self, user_id: int, group_ids: Iterable[int] = ()
    ) -> tuple[dict[str, dict[str, str]], dict[int, dict[str, str]]]:
        """The user's cache as stored, unparsed: (conversation -> id -> body, and for each
        of ``group_ids`` the group's shared store: group id -> id -> event JSON), so a
        body that is not JSON can be set aside without losing the rest."""
        conversations = self.conversation_ids(user_id)
        own: dict[str, dict[str, str]] = {}
        if conversations:
            pipe = self.client.pipeline(transaction=True)
            for conversation in conversations:
                pipe.hgetall(self.keys.message_bodies(user_id, conversation))
            for conversation, bodies in zip(conversations, pipe.execute(), strict=True):
                if bodies:
                    own[conversation] = {str(k): str(v) for k, v in bodies.items()}
        shared: dict[int, dict[str, str]] = {}
        groups = list(group_ids)
        if groups:
            pipe = self.client.pipeline(transaction=False)
            for gid in groups:
                pipe.hgetall(self.keys.group_bodies(gid))
            for gid, bodies in zip(groups, pipe.execute(), strict=True):
                if bodies:
                    shared[gid] = {str(k): str(v) for k, v in bodies.items()}
        return own, shared

    # -- views of group stores --------------------------------------------------------

    def view_groups(self, user_id: int) -> list[int]:
        """Groups of which the user may hold a view."""
        names = self.client.zrangebylex(self.keys.views(), f"[{user_id}:", f"({user_id};")
        return [int(str(n).split(":", 1)[1]) for n in names]

    def views_raw(
        self, user_id: int, with_spill: bool = False, group_ids: Iterable[int] | None = None
    ) -> dict[int, View]:
        """The user's views (of ``group_ids``, else of every group they may have one of),
        unparsed; the spill's bodies only ``with_spill``."""
        groups = self.view_groups(user_id) if group_ids is None else list(group_ids)
        if not groups:
            return {}
        args = [user_id, self.history_limit, 1 if with_spill else 0]

        def build(pipe: Pipeline) -> None:
            for gid in groups:
                queue(pipe, self.scripts.view, self.keys.group_view_keys(gid), args)

        out: dict[int, View] = {}
        for gid, reply in zip(groups, self.scripts.run(self.client, build), strict=True):
            out[gid] = _parse_view(reply, with_spill)
        return out

    def _view_held(self, user_id: int, group_id: int) -> bool:
        view = self.views_raw(user_id, group_ids=[group_id])[group_id]
        return bool(view.window or view.spill)

    def page(
        self, user_id: int, conversation: str, before: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of one conversation older than ``before``, newest first."""
        bodies = self._page(
            self.keys.message_index(user_id, conversation),
            self.keys.message_bodies(user_id, conversation),
            before,
            limit,
        )
        entries = [json.loads(b) for b in bodies]
        if conversation.endswith("_Group"):
            gid = int(conversation.split("_", 1)[0])
            if gid in self.view_groups(user_id):
                view = self.views_raw(user_id, group_ids=[gid])[gid]
                merged = {e["id"]: e for e in entries}
                for mid, body in view.window.items():
                    if before is None or mid < before:
                        merged.setdefault(mid, entry_from_event(json.loads(body), user_id))
                entries = [merged[i] for i in sorted(merged, reverse=True)[:limit]]
        return entries

    def group_page(
        self, owner_id: int, group_id: int, before: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Like :meth:`page`, from the group's shared store, as ``owner_id`` sees it."""
        index, bodies = self.keys.group_index(group_id), self.keys.group_bodies(group_id)
        return [
            entry_from_event(json.loads(b), owner_id)
            for b in self._page(index, bodies, before, limit)
        ]

    def _page(self, index: str, bodies: str, before: str | None, limit: int) -> list[str]:
        top = f"({before}" if before else "+"
        ids = self.client.zrevrangebylex(index, top, "-", start=0, num=limit)
        if not ids:
            return []
        # A body can vanish between the two reads if a clear runs; skip it then.
        return [str(b) for b in self.client.hmget(bodies, ids) if b is not None]

    def spilled(self, user_id: int) -> dict[str, dict[str, Any]]:
        """Trimmed messages waiting for SQL: ``"<conversation>|<id>"`` -> entry."""
        raw = self.client.hgetall(self.keys.spill(user_id))
        return {str(name): json.loads(body) for name, body in raw.items()}

    def spilled_raw(self, user_id: int) -> dict[str, str]:
        """Like :meth:`spilled`, unparsed."""
        raw = self.client.hgetall(self.keys.spill(user_id))
        return {str(name): str(body) for name, body in raw.items()}

    def clear(self, user_id: int) -> tuple[History, int]:
        """Clear the user's cache; returns what was cleared and how many messages.

        Only what was read is removed, so a message that lands while this runs stays
        in the cache (and in the set of cached users).
        """
        history = self.export(user_id)
        removed = self.remove_listed(
            user_id,
            {conv: [m["id"] for m in data["messages"]] for conv, data in history.items()},
        )
        return history, removed

    def remove_listed(
        self,
        user_id: int,
        ids_by_conversation: dict[str, list[str]],
        spill_fields: Iterable[str] = (),
        drop_if_empty: bool = True,
    ) -> int:
        """Remove exactly these ids (and spill fields) in one atomic step, then, if that
        left the cache empty, drop the user from the set of cached users. Returns how
        many window ids were removed.

        The set is in another slot than the user's keys, so the drop cannot be part of
        the step: it is ``SREM``, then a re-check (an append that landed meanwhile adds
        the user back itself, or the re-check does), inside an intent marker in
        ``chat:clearing``. A process killed between the ``SREM`` and the re-check
        leaves its marker, and the sweep re-checks that user (:meth:`recover_clearing`):
        a user with a cache is always in the set or named by a marker.
        """
        todo = {conv: ids for conv, ids in ids_by_conversation.items() if ids}
        fields = list(spill_fields)
        keys = [self.keys.conversations(user_id), self.keys.floor(user_id),
                self.keys.spill(user_id)]
        args: list[Any] = [self.retention, len(fields), *fields]
        for conversation, ids in todo.items():
            keys += [self.keys.message_index(user_id, conversation),
                     self.keys.message_bodies(user_id, conversation)]
            args += [conversation, len(ids), *ids]
        removed, _, empty = self._clear(keys=keys, args=args)
        if empty and drop_if_empty:
            self._drop_from_cached(user_id)
        return int(removed) + self._remove_from_views(user_id, todo, fields, drop_if_empty)

    def _remove_from_views(
        self,
        user_id: int,
        ids_by_conversation: dict[str, list[str]],
        spill_fields: list[str],
        drop_if_empty: bool,
    ) -> int:
        """The part of :meth:`remove_listed` that the user's views of groups hold."""
        wanted: set[int] = set()
        for name in [*ids_by_conversation, *(f.split("|", 1)[0] for f in spill_fields)]:
            if name.endswith("_Group"):
                wanted.add(int(name.split("_", 1)[0]))
        if not wanted:
            return 0
        removed = 0
        for gid in (g for g in self.view_groups(user_id) if g in wanted):
            conversation = f"{gid}_Group"
            ids = ids_by_conversation.get(conversation, [])
            spill = [f.split("|", 1)[1] for f in spill_fields
                     if f.startswith(conversation + "|")]
            if ids:
                # Raised first: a catch-up that runs meanwhile is told "not recovered".
                self.scripts.raise_floor(keys=[self.keys.floor(user_id)],
                                         args=[max(ids), self.retention])
            count, _, _, empty = self.scripts.view_clear(
                keys=self.keys.group_view_keys(gid),
                args=[user_id, self.history_limit, len(ids), *ids, len(spill), *spill],
            )
            removed += int(count)
            if int(empty) and drop_if_empty:
                self._drop_view(user_id, gid)
        return removed

    def _drop_view(self, user_id: int, group_id: int) -> None:
        """Take an emptied view's name out of ``chat:views``, as ``_drop_from_cached``
        does for the set of cached users (a send adds the name after storing)."""
        marker = f"{user_id}@{group_id}:{uuid.uuid4().hex}"
        name = f"{user_id}:{group_id}"
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.clearing(), {marker: time.time()})
        pipe.zrem(self.keys.views(), name)
        pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        if self._view_held(user_id, group_id):
            pipe.zadd(self.keys.views(), {name: 0})
        pipe.zrem(self.keys.clearing(), marker)
        pipe.execute()

    def _drop_from_cached(self, user_id: int) -> None:
        marker = f"{user_id}:{uuid.uuid4().hex}"
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.clearing(), {marker: time.time()})
        pipe.srem(self.keys.cached_users(), user_id)
        pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        if self._has_any(user_id):
            pipe.sadd(self.keys.cached_users(), user_id)
        pipe.zrem(self.keys.clearing(), marker)
        pipe.execute()

    def _has_any(self, user_id: int) -> bool:
        return bool(self.client.exists(self.keys.conversations(user_id), self.keys.spill(user_id)))

    def recover_clearing(self, grace: float = 60.0) -> int:
        """Resolve the intent markers of clears that died between dropping a user from
        the set of cached users and re-checking their cache (older than ``grace``
        seconds: a live clear takes milliseconds). Returns how many users had a cache
        and were put back."""
        markers = self.client.zrangebyscore(self.keys.clearing(), "-inf", time.time() - grace)
        restored = 0
        for item in markers:
            marker = str(item)
            owner = marker.split(":", 1)[0]
            if "@" in owner:  # a view's name (see _drop_view)
                user_id, group_id = (int(x) for x in owner.split("@", 1))
                if self._view_held(user_id, group_id):
                    self.client.zadd(self.keys.views(), {f"{user_id}:{group_id}": 0})
                    restored += 1
            elif self._has_any(int(owner)):
                self.client.sadd(self.keys.cached_users(), int(owner))
                restored += 1
            self.client.zrem(self.keys.clearing(), marker)
        return restored

    def cached_users(self) -> Iterator[int]:
        """Ids of users who have a cache, their own or views of groups (a user whose
        cache just emptied may show up)."""
        seen: set[int] = set()
        for member in self.client.sscan_iter(self.keys.cached_users(), count=500):
            seen.add(int(member))
            yield int(member)
        for name, _ in self.client.zscan_iter(self.keys.views(), count=500):
            user_id = int(str(name).split(":", 1)[0])
            if user_id not in seen:
                seen.add(user_id)
                yield user_id


def _parse_view(reply: list[Any], with_spill: bool) -> View:
    score = int(reply[0]) if reply[0] not in ("", b"", None) else None
    n = int(reply[1])
    ids = [str(x) for x in reply[2 : 2 + n]]
    bodies = [str(x) for x in reply[2 + n : 2 + 2 * n]]
    rest = reply[2 + 2 * n :]
    m = int(rest[0])
    spill_ids = [str(x) for x in rest[1 : 1 + m]]
    spill_bodies = [str(x) for x in rest[1 + m : 1 + 2 * m]] if with_spill else [""] * m
    return View(dict(zip(ids, bodies, strict=True)),
                dict(zip(spill_ids, spill_bodies, strict=True)), score)
