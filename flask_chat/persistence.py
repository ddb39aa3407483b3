"""SQL is the record; the Redis cache is a window over it.

:class:`HistoryStore` writes messages (once, keyed by their id) and what each user saw,
idempotently: a retried batch writes nothing twice. :func:`collect` reads users' caches
(window and spill) into such batches, and :func:`persist_users` is persist-then-clear:
write a batch in one transaction, then remove from the caches exactly the ids written,
so a message that lands meanwhile is neither lost nor cleared unpersisted.

One bad record never blocks its batch: a record that is not a message (bad JSON, a
missing or mistyped field) is set aside when the batch is read, and a batch the
database refuses on its data (:data:`DATA_ERRORS`: U+0000 in PostgreSQL text, a value
too long, a constraint) is written again in halves until the refused messages are
isolated; the rest is written. Each is returned as a :class:`Rejected` for the caller to
report (and keep: see :mod:`flask_chat.deadletters`). A database that is down is not a
data error: it fails the write as before.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from sqlalchemy import Engine, and_, exc, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .cache import ChatCache
from .conversations import ConversationKey
from .entries import entry_from_event
from .errors import ChatError
from .hooks import HostHooks
from .ids import id_time, is_valid_id, iso_utc
from .models import messages, sessions, views
from .settings import ChatConfig

#: A user's session: (started, ended or None, session id).
Span = tuple[datetime, datetime | None, int]

#: What the database raises when it refuses a batch on its data, not on its health.
#: (An outage is an OperationalError or InterfaceError: the whole write fails.)
DATA_ERRORS = (exc.DataError, exc.IntegrityError)

#: What reading one record that is not a message raises.
BAD_RECORD = (ValueError, KeyError, TypeError, AttributeError, ChatError)

log = logging.getLogger("flask_chat.persistence")


class BadRecord(ValueError):
    """A record that is not a message flask-chat can store."""


@dataclass
class Rejected:
    """A record that could not be persisted, with why and where it was."""

    #: ``write-behind``, ``cache`` or ``import``.
    source: str
    error: str
    #: The record as it was read (the queue record, or the cache entry).
    record: str
    message_id: str | None = None
    owner: int | None = None
    conversation: str | None = None
    #: Refused by the database (else: not a message at all).
    by_database: bool = False


def describe(error: BaseException) -> str:
    """A short, single-line reason for a report."""
    if isinstance(error, exc.DBAPIError) and error.orig is not None:
        error = error.orig
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]


def _check(message_id: Any, sender: Any, fields: dict[str, Any]) -> None:
    if not isinstance(message_id, str) or not is_valid_id(message_id):
        raise BadRecord(f"invalid record: message id {str(message_id)[:40]!r}")
    # 0: a legacy group message whose sender no copy names (see flask_chat_migrations).
    if not isinstance(sender, int) or isinstance(sender, bool) or sender < 0:
        raise BadRecord(f"invalid record: sender_id {str(sender)[:40]!r}")
    if not isinstance(fields.get("message_text"), str):
        raise BadRecord("invalid record: message_text is not a string")
    image = fields.get("image")
    if image is not None and not isinstance(image, str):
        raise BadRecord("invalid record: image is not a string")


def _utc(moment: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything stored is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Batch:
    """Messages (by id) and views ((user, message) -> (conversation, direction))."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    views: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)

    def add_entry(self, owner: int, conversation: str, entry: dict[str, Any]) -> None:
        """One message as it sat in ``owner``'s cache; raises :class:`BadRecord` (or
        another of :data:`BAD_RECORD`) and adds nothing if it is not one."""
        conv = ConversationKey.parse(conversation)
        if entry["type"] not in ("sent", "received"):
            raise BadRecord(f"invalid record: type {str(entry['type'])[:20]!r}")
        sender = entry["sender_id"]
        if conv.is_group:
            target = conv.id
        else:
            target = conv.id if entry["type"] == "sent" else owner
        _check(entry["id"], sender, entry)
        self.add_message(entry["id"], sender, conv.kind, target, entry)
        self.views[(owner, entry["id"])] = (conversation, entry["type"])

    def add_event(self, event: dict[str, Any], owners: Iterable[Sequence[Any]]) -> None:
        """A write-behind record: the side-neutral message event and who holds it."""
        to = ConversationKey.parse(event["to"])
        _check(event["id"], event["sender_id"], event)
        seen = []
        for owner, conversation, direction in owners:
            if not isinstance(owner, int) or not isinstance(conversation, str) or (
                direction not in ("sent", "received")
            ):
                raise BadRecord("invalid record: a holder is not (user, conversation, side)")
            seen.append(((owner, event["id"]), (conversation, direction)))
        self.add_message(event["id"], event["sender_id"], to.kind, to.id, event)
        self.views.update(seen)

    def add_message(
        self, message_id: str, sender: int, kind: str, target: int, fields: dict[str, Any]
    ) -> None:
        self.messages.setdefault(
            message_id,
            {
                "id": message_id,
                "sender_id": sender,
                "kind": kind,
                "target_id": target,
                "message_text": fields["message_text"],
                "image": fields.get("image"),
                "sent_at": id_time(message_id),
            },
        )

    def __len__(self) -> int:
        return len(self.messages)

    def part(self, message_ids: Iterable[str]) -> Batch:
        """These messages with their views."""
        chosen = {i: self.messages[i] for i in message_ids}
        part = Batch(messages=chosen)
        part.views = {k: v for k, v in self.views.items() if k[1] in chosen}
        return part


@dataclass
class WriteResult:
    written: int = 0
    already: int = 0
    views_written: int = 0
    #: Messages the database refused (with their views): id -> reason. Not written.
    rejected: dict[str, str] = field(default_factory=dict)

    def add(self, other: WriteResult) -> None:
        self.written += other.written
        self.already += other.already
        self.views_written += other.views_written
        self.rejected.update(other.rejected)


class HistoryStore:
    #: Rows per INSERT statement (SQLite allows 32,766 bound parameters).
    CHUNK = 1000

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    def write(self, batch: Batch) -> WriteResult:
        """Write a batch in one transaction; rows already there are left alone.

        If the database refuses the batch on its data (:data:`DATA_ERRORS`), each half
        is written again on its own, down to single messages: the refused ones are
        returned in ``rejected`` and everything else is written (k bad messages among n
        cost about 2k·log2(n) extra transactions). Any other error fails the write.
        """
        try:
            return self._write(batch)
        except DATA_ERRORS as error:
            ids = sorted(batch.messages)
            if len(ids) == 1:
                reason = describe(error)
                log.warning("flask-chat: the database refused message %s: %s", ids[0], reason)
                return WriteResult(rejected={ids[0]: reason})
            result = WriteResult()
            middle = len(ids) // 2
            for half in (ids[:middle], ids[middle:]):
                result.add(self.write(batch.part(half)))
            return result

    def _write(self, batch: Batch) -> WriteResult:
        result = WriteResult()
        if not batch.messages:
            return result
        ids = sorted(batch.messages)
        with self.engine.begin() as conn:
            present: set[str] = set()
            for i in range(0, len(ids), self.CHUNK):
                chunk = ids[i : i + self.CHUNK]
                present.update(conn.scalars(select(messages.c.id).where(messages.c.id.in_(chunk))))
            new = [batch.messages[i] for i in ids if i not in present]
            for i in range(0, len(new), self.CHUNK):
                conn.execute(self._insert(messages), new[i : i + self.CHUNK])
            result.written, result.already = len(new), len(present)

            owners = sorted({owner for owner, _ in batch.views})
            rows = []
            spans = self._sessions(conn, owners)
            for (owner, message_id), (conversation, direction) in batch.views.items():
                rows.append(
                    {
                        "user_id": owner,
                        "message_id": message_id,
                        "conversation": conversation,
                        "direction": direction,
                        "session_id": _session_at(
                            spans.get(owner), batch.messages[message_id]["sent_at"]
                        ),
                    }
                )
            for i in range(0, len(rows), self.CHUNK):
                # RETURNING counts what was inserted: psycopg reports no rowcount for
                # executemany, and conflicting rows return nothing.
                outcome = conn.execute(
                    self._insert(views).returning(views.c.user_id), rows[i : i + self.CHUNK]
                )
                result.views_written += len(outcome.all())
        return result

    @staticmethod
    def _sessions(conn: Any, owners: list[int]) -> dict[int, list[Span]]:
        spans: dict[int, list[Span]] = {}
        for i in range(0, len(owners), 1000):
            query = (
                select(
                    sessions.c.user_id, sessions.c.started_at, sessions.c.ended_at, sessions.c.id
                )
                .where(sessions.c.user_id.in_(owners[i : i + 1000]))
                .order_by(sessions.c.started_at)
            )
            for user_id, started, ended, sid in conn.execute(query):
                spans.setdefault(int(user_id), []).append(
                    (_utc(started), _utc(ended) if ended else None, int(sid))
                )
        return spans

    # -- sessions ------------------------------------------------------------------

    def open_session(self, user_id: int, at: datetime | None = None) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                sessions.insert().values(
                    user_id=user_id, started_at=at or datetime.now(timezone.utc)
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def close_session(
        self, user_id: int, session_id: int | None = None, at: datetime | None = None
    ) -> None:
        """End the given session, or the user's open sessions."""
        query = update(sessions).where(sessions.c.user_id == user_id, sessions.c.ended_at.is_(None))
        if session_id is not None:
            query = query.where(sessions.c.id == session_id)
        with self.engine.begin() as conn:
            conn.execute(query.values(ended_at=at or datetime.now(timezone.utc)))

    # -- reading back --------------------------------------------------------------

    def conversation_page(
        self, user_id: int, conversation: ConversationKey, before: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Persisted messages of one conversation as ``user_id`` sees it, newest first."""
        m = messages.c
        if conversation.is_group:
            where = [m.kind == "Group", m.target_id == conversation.id]
        else:
            other = conversation.id
            where = [
                m.kind == "User",
                ((m.sender_id == user_id) & (m.target_id == other))
                | ((m.sender_id == other) & (m.target_id == user_id)),
            ]
        if before:
            where.append(m.id < before)
        query = select(messages).where(and_(*where)).order_by(m.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_entry(row, user_id) for row in conn.execute(query).mappings()]

    def transcripts(self, user_id: int, page: int, per_page: int) -> dict[str, Any]:
        """The user's sessions, newest first, each with its conversations and messages."""
        with self.engine.connect() as conn:
            total = conn.scalar(
                select(func.count()).select_from(sessions).where(sessions.c.user_id == user_id)
            )
            rows = (
                conn.execute(
                    select(sessions)
                    .where(sessions.c.user_id == user_id)
                    .order_by(sessions.c.started_at.desc(), sessions.c.id.desc())
                    .limit(per_page)
                    .offset((page - 1) * per_page)
                )
                .mappings()
                .all()
            )
            session_ids = [r["id"] for r in rows]
            seen = (
                conn.execute(
                    select(views.c.session_id, views.c.conversation, views.c.direction, messages)
                    .join(messages, messages.c.id == views.c.message_id)
                    .where(views.c.user_id == user_id, views.c.session_id.in_(session_ids))
                    .order_by(views.c.message_id)
                )
                .mappings()
                .all()
                if session_ids
                else []
            )
        grouped: dict[int, dict[str, list[dict[str, Any]]]] = {sid: {} for sid in session_ids}
        for row in seen:
            grouped[row["session_id"]].setdefault(row["conversation"], []).append(
                _entry(row, user_id, row["direction"])
            )
        return {
            "total": int(total or 0),
            "page": page,
            "per_page": per_page,
            "sessions": [
                {
                    "id": r["id"],
                    "started_at": _iso(r["started_at"]),
                    "ended_at": _iso(r["ended_at"]) if r["ended_at"] else None,
                    "conversations": grouped[r["id"]],
                }
                for r in rows
            ],
        }


def _session_at(spans: list[Span] | None, at: datetime) -> int | None:
    """The session that was open at ``at``: the latest one that started by then and had
    ended before it (both to the millisecond, on the Redis clock). Messages that arrive
    between sessions belong to none."""
    if not spans:
        return None
    starts = [s for s, _, _ in spans]
    i = bisect.bisect_right(starts, at) - 1
    while i >= 0:
        started, ended, sid = spans[i]
        if ended is None or ended >= at:
            return sid
        i -= 1
    return None


def _iso(moment: datetime) -> str:

    return iso_utc(_utc(moment))


def _entry(row: Any, owner: int, direction: str | None = None) -> dict[str, Any]:
    """A persisted message as a cache entry (the legacy layout) seen by ``owner``."""
    return {
        "message_text": row["message_text"],
        "type": direction or ("sent" if row["sender_id"] == owner else "received"),
        "image": row["image"],
        "id": row["id"],
        "sender_id": int(row["sender_id"]),
        "sent_at": _iso(row["sent_at"]),
    }


# -- reading caches into batches ---------------------------------------------------------


@dataclass
class Collected:
    batch: Batch
    #: Per user: what to remove once written — window ids by conversation, spill fields.
    window: dict[int, dict[str, list[str]]]
    spill: dict[int, list[str]]
    #: Entries that are not messages; they stay in the cache.
    rejected: list[Rejected] = field(default_factory=list)

    def refused(self, result: WriteResult) -> list[Rejected]:
        """After the write: keep the messages the database refused out of what is to be
        removed (they stay in the cache), and return them with the unreadable entries."""
        out = list(self.rejected)
        if not result.rejected:
            return out
        for (owner, message_id), (conversation, direction) in self.batch.views.items():
            reason = result.rejected.get(message_id)
            if reason is None:
                continue
            ids = self.window.get(owner, {}).get(conversation)
            if ids is not None and message_id in ids:
                ids.remove(message_id)
            name = f"{conversation}|{message_id}"
            if name in self.spill.get(owner, []):
                self.spill[owner].remove(name)
            message = self.batch.messages[message_id]
            record = dict(message, type=direction, sent_at=message["sent_at"].isoformat())
            out.append(Rejected("cache", reason, json.dumps(record, ensure_ascii=False),
                                message_id, owner, conversation, by_database=True))
        return out


class CacheOwner(Protocol):
    """What :func:`collect` reads of a :class:`~flask_chat.state.ChatState`."""

    config: ChatConfig
    cache: ChatCache
    hooks: HostHooks


def collect(state: CacheOwner, user_ids: Iterable[int]) -> Collected:
    """Read these users' caches (window and spill) into one batch. An entry that is not
    a message is left out (and in the cache) and listed in ``rejected``."""
    collected = Collected(Batch(), {}, {})
    for uid in user_ids:
        groups = () if state.config.group_member_caches else state.hooks.user_group_ids(uid)
        own, shared = state.cache.export_raw(uid, groups)
        window: dict[str, list[str]] = {}
        for conversation, bodies in own.items():
            window[conversation] = [
                mid for mid in sorted(bodies)
                if _read(collected, uid, conversation, mid, bodies[mid])
            ]
        for gid, bodies in shared.items():
            conversation = f"{gid}_Group"
            for mid in sorted(bodies):
                if mid in own.get(conversation, {}):
                    continue
                try:
                    entry = entry_from_event(json.loads(bodies[mid]), uid)
                except BAD_RECORD:
                    continue  # the group's store is not persisted from here
                _read(collected, uid, conversation, mid, json.dumps(entry))
        spill = []
        for name, body in state.cache.spilled_raw(uid).items():
            if _read(collected, uid, name.split("|", 1)[0], name.split("|", 1)[-1], body):
                spill.append(name)
        # Views of group stores: read, and cleared after the write, as copies would be.
        for gid, view in state.cache.views_raw(uid, with_spill=True).items():
            conversation = f"{gid}_Group"
            ids = window.setdefault(conversation, [])
            for part, names in ((view.window, ids), (view.spill, spill)):
                for mid in sorted(part):
                    if mid in own.get(conversation, {}):
                        continue
                    try:
                        body = json.dumps(entry_from_event(json.loads(part[mid]), uid))
                    except BAD_RECORD:
                        body = part[mid]  # reported by _read, and left where it is
                    if _read(collected, uid, conversation, mid, body):
                        names.append(mid if names is ids else f"{conversation}|{mid}")
            if not ids:
                del window[conversation]
        collected.window[uid] = window
        collected.spill[uid] = spill
    return collected


def _read(collected: Collected, owner: int, conversation: str, mid: str, body: str) -> bool:
    try:
        entry = json.loads(body)
        if not isinstance(entry, dict) or entry.get("id") != mid:
            raise BadRecord("invalid record: not the message its key names")
        collected.batch.add_entry(owner, conversation, entry)
    except BAD_RECORD as error:
        reason = describe(error) if not isinstance(error, BadRecord) else str(error)
        collected.rejected.append(Rejected("cache", reason, body, mid, owner, conversation))
        return False
    return True


@dataclass
class QueueBatch:
    batch: Batch
    #: Message id -> the queue records that carried it.
    records: dict[str, list[str]]
    #: Records that are not messages.
    rejected: list[Rejected]

    def refused(self, result: WriteResult) -> list[Rejected]:
        out = list(self.rejected)
        for message_id, reason in result.rejected.items():
            for record in self.records.get(message_id, []):
                out.append(Rejected("write-behind", reason, record, message_id,
                                    by_database=True))
        return out


def decode_queue_records(raw: Iterable[bytes | str]) -> QueueBatch:
    decoded = QueueBatch(Batch(), {}, [])
    for item in raw:
        record = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
        message_id = None
        try:
            data = json.loads(record)
            message_id = data["m"]["id"]
            decoded.batch.add_event(data["m"], data["v"])
        except BAD_RECORD as error:
            reason = str(error) if isinstance(error, BadRecord) else describe(error)
            name = message_id if isinstance(message_id, str) else None
            decoded.rejected.append(Rejected("write-behind", reason, record, name))
            continue
        decoded.records.setdefault(message_id, []).append(record)
    return decoded


def record_digest(record: str) -> str:
    return hashlib.sha1(record.encode("utf-8", "replace")).hexdigest()[:16]
