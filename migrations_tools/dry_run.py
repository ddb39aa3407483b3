"""For ``--dry-run``: what of a batch SQL already holds, read without writing."""

from __future__ import annotations

from sqlalchemy import Engine, select

from flask_chat.models import messages, views
from flask_chat.persistence import Batch, HistoryStore

CHUNK = HistoryStore.CHUNK


def present(engine: Engine, batch: Batch) -> tuple[int, int]:
    """(messages, views) of ``batch`` that are already stored."""
    ids = sorted(batch.messages)
    found_messages = 0
    found_views: set[tuple[int, str]] = set()
    with engine.connect() as conn:
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            query = select(messages.c.id).where(messages.c.id.in_(chunk))
            found_messages += len(list(conn.scalars(query)))
            rows = conn.execute(
                select(views.c.user_id, views.c.message_id).where(views.c.message_id.in_(chunk))
            )
            found_views.update((int(u), str(m)) for u, m in rows)
    return found_messages, len(found_views & set(batch.views))
