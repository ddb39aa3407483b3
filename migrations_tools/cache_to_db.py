"""Moving everything flask-chat has cached into SQL, for every cached user.

It is the sweep's own persist-then-clear (:func:`flask_chat.jobs.persist_users`), run
over every cached user in batches, with what a one-off migration adds: a dry run, a
checkpoint to resume from, and a report. A cache entry that is not a message, or that
the database refuses, is skipped with its reason (``corrupt``, ``refused``) and stays
in the cache; the rest of its batch is persisted. Without ``clear`` nothing leaves the
cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flask_chat.extension import ChatState
from flask_chat.jobs import persist_cached
from flask_chat.persistence import collect

from . import dry_run as dry
from .checkpoint import Checkpoint
from .report import Report


def _chunks(ids: Iterator[int], size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for uid in ids:
        chunk.append(uid)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def persist_cache(
    state: ChatState,
    *,
    clear: bool = False,
    dry_run: bool = False,
    batch_size: int = 200,
    checkpoint: Checkpoint | None = None,
    max_users: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Persist every cached user's history. Needs an app context (the job's code does)."""
    report = Report("cache-to-db", dry_run=dry_run)
    if dry_run:
        checkpoint = None
    if checkpoint is not None and checkpoint.started():
        report.add_counts(checkpoint.totals())
    seen = 0
    try:
        for chunk in _chunks(state.cache.cached_users(), batch_size):
            if max_users is not None and seen + len(chunk) > max_users:
                chunk = chunk[: max_users - seen]
                report.interrupted = True
            if chunk:
                _batch(state, chunk, report, clear, dry_run, checkpoint)
                seen += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            if report.interrupted:
                break
    except KeyboardInterrupt:
        report.interrupted = True
    if not report.interrupted and checkpoint is not None:
        checkpoint.clear()
    return report


def _batch(state: ChatState, chunk: list[int], report: Report, clear: bool, dry_run: bool,
           checkpoint: Checkpoint | None) -> None:
    todo = chunk
    if checkpoint is not None:
        flags = checkpoint.done(chunk)
        report.n["resumed"] += sum(flags)
        todo = [uid for uid, done in zip(chunk, flags, strict=True) if not done]
    delta = Report(report.command, dry_run=dry_run)
    delta.n["keys"] += len(todo)
    if todo:
        _persist(state, todo, delta, clear, dry_run)
    if checkpoint is not None:
        checkpoint.mark(todo, delta.counts())
    report.absorb(delta)


def _persist(state: ChatState, users: list[int], delta: Report, clear: bool, dry_run: bool) -> None:
    conversations = state.cache.conversation_counts(users)
    if dry_run:
        collected = collect(state, users)
        batch = collected.batch
        present, _ = dry.present(state.history.engine, batch)
        counts = {"messages_read": len(batch), "written": len(batch) - present, "already": present}
        rejected = collected.rejected
        readable = {owner for owner, _ in batch.views}
    else:
        done = persist_cached(state, users, clear=clear)
        summary = done.summary
        counts = {"messages_read": summary["messages"], "written": summary["written"],
                  "already": summary["already"], "cleared": summary["cleared"],
                  "kept": summary["kept"]}
        rejected, readable = done.rejected, done.readable
    # An entry that is not a message, or that the database refused, is reported (and,
    # outside a dry run, kept in the cache and the dead letters); the rest is persisted.
    for item in rejected:
        delta.skip("refused" if item.by_database else "corrupt",
                   f"user {item.owner} message {item.message_id}", item.error)
    imported = [uid for uid in users if uid in readable or not any(
        item.owner == uid for item in rejected)]
    delta.n["users"] += len(imported)
    delta.n["conversations"] += sum(conversations[uid] for uid in imported)
    delta.n.update(counts)
