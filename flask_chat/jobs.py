"""Background jobs (RQ): persist-then-clear, the offline sweep, the write-behind drain.

Job functions are module-level, take ids and plain values, and run in a fresh app
context (the worker started by ``flask chat worker`` pushes one per job). Scheduling
goes through :func:`schedule_sweep` only, so rq-scheduler could be swapped for RQ's
own scheduler in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, current_app
from rq import Queue, Retry, Worker

from .persistence import WriteResult, collect, decode_queue_records

if TYPE_CHECKING:
    from .extension import Chat, ChatState

log = logging.getLogger("flask_chat.jobs")

#: Retries with backoff for every job: a database outage fails the job, the cache
#: stays as it was, and the job runs again later.
RETRY = Retry(max=5, interval=[2, 10, 30, 60, 120])


def _chat() -> tuple[Chat, ChatState]:
    chat: Chat = current_app.extensions["chat"]
    return chat, chat.state


def rq_connection(state: ChatState) -> redis.Redis:
    """RQ needs a client that returns bytes; flask-chat's own decodes to str."""
    if state.rq_redis is None:
        state.rq_redis = redis.Redis.from_url(state.config.redis_url)
    return state.rq_redis


def queue(state: ChatState) -> Queue:
    return Queue(state.keys.rq_queue(), connection=rq_connection(state))


# -- the jobs ------------------------------------------------------------------------------


def persist_users(user_ids: list[int], clear: bool = True) -> dict[str, int]:
    """Persist these users' cached history (window and spill), then clear the window of
    those who are offline. A user still online elsewhere keeps their cache.

    Idempotent: a retry writes nothing twice. Only the ids that were written are
    removed, so a message that arrives while this runs stays in the cache.
    """
    _, state = _chat()
    collected = collect(state, user_ids)
    written = state.history.write(collected.batch)
    cleared = kept = 0
    for uid in user_ids:
        state.cache.drop_spilled(uid, collected.spill.get(uid, []))
        if clear and not state.presence.is_online(uid):
            state.cache.remove_listed(uid, collected.window.get(uid, {}))
            cleared += 1
        else:
            kept += 1
    summary = {
        "users": len(user_ids),
        "messages": len(collected.batch),
        "written": written.written,
        "already": written.already,
        "cleared": cleared,
        "kept": kept,
    }
    log.info("flask-chat: persisted %s", summary)
    return summary


def sweep(
    batch_size: int | None = None, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """The every-5-minutes task: persist every cached user's history; clear the caches
    of those who are not online. Batches keep SQL round trips bounded."""
    _, state = _chat()
    size = batch_size or state.config.persist_batch_users
    totals = {"users": 0, "messages": 0, "written": 0, "already": 0, "cleared": 0, "kept": 0}
    for chunk in _chunks(state.cache.cached_users(), size):
        result = persist_users(chunk, clear=True)
        for key in totals:
            totals[key] += result[key]
        if progress is not None:
            progress(len(chunk))
    log.info("flask-chat: sweep done: %s", totals)
    return totals


def drain_write_behind(max_batches: int = 1000) -> int:
    """Write queued sent messages to SQL in batches until the queue is empty."""
    _, state = _chat()
    key = state.keys.persist_queue()
    total = WriteResult()
    for _ in range(max_batches):
        raw = state.redis.lpop(key, state.config.persist_batch)
        if not raw:
            break
        records = [r if isinstance(r, bytes | str) else str(r) for r in raw]
        try:
            total.add(state.history.write(decode_queue_records(records)))
        except Exception:
            # Put them back for the retry; they are in the caches too, so even a
            # lost batch would be persisted on logout or by the sweep.
            state.redis.rpush(key, *records)
            raise
    return total.written


# -- enqueueing and scheduling ------------------------------------------------------------


def enqueue_drain(state: ChatState) -> None:
    try:
        queue(state).enqueue(drain_write_behind, retry=RETRY, job_timeout=600)
    except redis.RedisError:
        # Best effort: the messages are in the caches and reach SQL on logout or sweep.
        log.warning("flask-chat: could not enqueue the write-behind drain", exc_info=True)


def enqueue_persist(state: ChatState, user_id: int, clear: bool = True) -> Any:
    return queue(state).enqueue(
        persist_users,
        [user_id],
        clear,
        retry=RETRY,
        job_timeout=600,
        description=f"flask-chat: persist user {user_id}",
    )


def schedule_sweep(state: ChatState, interval: int | None = None) -> Any:
    """Register the periodic sweep with rq-scheduler. The job id is fixed, so however
    many processes call this, one sweep is scheduled."""
    from rq_scheduler import Scheduler

    scheduler = Scheduler(queue_name=state.keys.rq_queue(), connection=rq_connection(state))
    job_id = state.keys.sweep_job_id()
    every = interval or state.config.sweep_interval
    if job_id in scheduler:
        existing = scheduler.job_class.fetch(job_id, connection=scheduler.connection)
        if existing.meta.get("interval") == every:
            return existing
        scheduler.cancel(job_id)
    return scheduler.schedule(
        scheduled_time=datetime.now(timezone.utc),
        func=sweep,
        interval=every,
        repeat=None,
        id=job_id,
        result_ttl=every * 10,
        timeout=max(every, 600),
        meta={"interval": every},
    )


class AppWorker(Worker):
    """An RQ worker that runs each job in a fresh app context of its Flask app."""

    app: Flask

    def perform_job(self, *args: Any, **kwargs: Any) -> bool:
        with self.app.app_context():
            # The job runs in a forked work horse: database connections pooled by the
            # parent must not be shared with it (SQLAlchemy's advice for os.fork()).
            current_app.extensions["chat"].state.history.engine.dispose(close=False)
            return bool(super().perform_job(*args, **kwargs))


def _chunks(items: Iterable[int], size: int) -> Iterable[list[int]]:
    chunk: list[int] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
