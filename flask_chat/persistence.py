"""SQL is the record; the Redis cache is a window over it.

:class:`HistoryStore` writes messages (once, keyed by their id) and what each user saw,
idempotently: a retried batch writes nothing twice. :func:`collect` reads users' caches
(window and spill) into such batches, and :func:`persist_users` is persist-then-clear:
write a batch in one transaction, then remove from the caches exactly the ids written,
so a message that lands meanwhile is neither lost nor cleared unpersisted.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .conversations import ConversationKey
from .ids import id_time
from .models import messages, sessions, views

if TYPE_CHECKING:
    from .extension import ChatState


#: A user's session: (started, ended or None, session id).
Span = tuple[datetime, datetime | None, int]


def _utc(moment: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything stored is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Batch:
    """Messages (by id) and views ((user, message) -> (conversation, direction))."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    views: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)

    def add_entry(self, owner: int, conversation: str, entry: dict[str, Any]) -> None:
        """One message as it sat in ``owner``'s cache."""
        conv = ConversationKey.parse(conversation)
        sender = int(entry["sender_id"])
        if conv.is_group:
            target = conv.id
        else:
            target = conv.id if entry["type"] == "sent" else owner
        self.add_message(entry["id"], sender, conv.kind, target, entry)
        self.views[(owner, entry["id"])] = (conversation, entry["type"])

    def add_event(self, event: dict[str, Any], owners: Iterable[Sequence[Any]]) -> None:
        """A write-behind record: the side-neutral message event and who holds it."""
        to = ConversationKey.parse(event["to"])
        self.add_message(event["id"], int(event["sender_id"]), to.kind, to.id, event)
        for owner, conversation, direction in owners:
            self.views[(int(owner), event["id"])] = (conversation, direction)

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


@dataclass
class WriteResult:
    written: int = 0
    already: int = 0
    views_written: int = 0

    def add(self, other: WriteResult) -> None:
        self.written += other.written
        self.already += other.already
        self.views_written += other.views_written


class HistoryStore:
    #: Rows per INSERT statement (SQLite allows 32,766 bound parameters).
    CHUNK = 1000

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    def write(self, batch: Batch) -> WriteResult:
        """Write a batch in one transaction; rows already there are left alone."""
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
    from .ids import iso_utc

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


def collect(state: ChatState, user_ids: Iterable[int]) -> Collected:
    batch = Batch()
    window: dict[int, dict[str, list[str]]] = {}
    spill: dict[int, list[str]] = {}
    for uid in user_ids:
        groups = () if state.config.group_member_caches else _group_ids(uid)
        history = state.cache.export(uid, groups)
        window[uid] = {}
        for conversation, data in history.items():
            for entry in data["messages"]:
                batch.add_entry(uid, conversation, entry)
            window[uid][conversation] = [m["id"] for m in data["messages"]]
        spilled = state.cache.spilled(uid)
        for name, entry in spilled.items():
            batch.add_entry(uid, name.split("|", 1)[0], entry)
        spill[uid] = list(spilled)
    return Collected(batch, window, spill)


def _group_ids(user_id: int) -> list[int]:
    from flask import current_app

    return current_app.extensions["chat"].user_group_ids(user_id)  # type: ignore[no-any-return]


def decode_queue_records(raw: Iterable[bytes | str]) -> Batch:
    batch = Batch()
    for record in raw:
        data = json.loads(record)
        batch.add_event(data["m"], data["v"])
    return batch
