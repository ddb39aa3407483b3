"""Background jobs (RQ): persist-then-clear, the offline sweep, the write-behind drain.

Job functions are module-level, take ids and plain values, and run in a fresh app
context (the worker started by ``flask chat worker`` pushes one per job). Scheduling
goes through :func:`schedule_sweep` only, so rq-scheduler could be swapped for RQ's
own scheduler in one place.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis
from flask import Flask, current_app
from rq import Queue, Retry, Worker, get_current_job

from . import deadletters
from .persistence import Rejected, collect, decode_queue_records
from .scripts import CLAIM_BATCH, RECLAIM_BATCH
from .state import ChatState, current_state

log = logging.getLogger("flask_chat.jobs")

#: Retries with backoff for every job: a database outage fails the job, the cache
#: stays as it was, and the job runs again later. A job whose worker was killed is
#: retried the same way once RQ finds it abandoned (see AppWorker).
RETRY = Retry(max=5, interval=[2, 10, 30, 60, 120])

#: How long a drain's batch is its own (renewed on every batch). A killed drain's batch
#: is resumed at once by the same job's retry; past its lease, any drain or the sweep
#: gives it back to the queue.
DRAIN_LEASE_MS = 120_000

#: A clear that dropped a user from the set of cached users and did not re-check within
#: this many seconds died; the sweep re-checks that user.
CLEARING_GRACE = 60.0


def rq_connection(state: ChatState) -> redis.Redis:
    """RQ's client: on ``CHAT_RQ_REDIS_URL`` (a plain server; RQ does not run on Redis
    Cluster), returning bytes as RQ needs (flask-chat's own decodes to str)."""
    if state.rq_redis is None:
        state.rq_redis = redis.Redis.from_url(state.config.rq_redis_url)
    return state.rq_redis


def queue(state: ChatState) -> Queue:
    return Queue(state.keys.rq_queue(), connection=rq_connection(state))


# -- the jobs ------------------------------------------------------------------------------


def persist_users(user_ids: list[int], clear: bool = True) -> dict[str, int]:
    """Persist these users' cached history (window and spill), then clear the window of
    those who are offline. A user still online elsewhere keeps their cache.

    Idempotent: a retry writes nothing twice. Only the ids that were written are
    removed, so a message that arrives while this runs stays in the cache, and so does
    one that could not be persisted (it is counted in ``rejected`` and kept in the
    dead letters, see :mod:`flask_chat.deadletters`).
    """
    state = current_state()
    return persist_cached(state, user_ids, clear).summary


@dataclass
class Persisted:
    summary: dict[str, int]
    #: What could not be persisted (kept in the caches and the dead letters).
    rejected: list[Rejected]
    #: Users who had at least one message that could be read.
    readable: set[int]


def persist_cached(state: ChatState, user_ids: list[int], clear: bool = True) -> Persisted:
    """:func:`persist_users`, also returning what could not be persisted."""
    collected = collect(state, user_ids)
    written = state.history.write(collected.batch)
    rejected = collected.refused(written)
    deadletters.keep(state.redis, state.keys, rejected)
    cleared = kept = 0
    for uid in user_ids:
        window = collected.window.get(uid, {})
        spill = collected.spill.get(uid, [])
        if clear and not state.presence.is_online(uid):
            state.cache.remove_listed(uid, window, spill)
            cleared += 1
        else:
            if spill:
                state.cache.remove_listed(uid, {}, spill, drop_if_empty=False)
            kept += 1
    summary = {
        "users": len(user_ids),
        "messages": len(collected.batch),
        "written": written.written,
        "already": written.already,
        "cleared": cleared,
        "kept": kept,
        "rejected": len(rejected),
    }
    log.info("flask-chat: persisted %s", summary)
    return Persisted(summary, rejected, {owner for owner, _ in collected.batch.views})


def sweep(
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    recover_grace: float | None = None,
) -> dict[str, int]:
    """The every-5-minutes task: persist every cached user's history; clear the caches
    of those who are not online. Batches keep SQL round trips bounded.

    First it resolves what killed jobs left: users a dead clear dropped from the set of
    cached users before re-checking them (older than ``recover_grace`` seconds), and
    write-behind batches of dead drains whose lease ran out (back to the queue, and a
    drain enqueued)."""
    state = current_state()
    size = batch_size or state.config.persist_batch_users
    grace = CLEARING_GRACE if recover_grace is None else recover_grace
    totals = {"users": 0, "messages": 0, "written": 0, "already": 0, "cleared": 0, "kept": 0,
              "rejected": 0}
    totals["restored"] = state.cache.recover_clearing(grace)
    totals["reclaimed"] = reclaim_abandoned(state)
    if totals["reclaimed"]:
        enqueue_drain(state)
    for chunk in _chunks(state.cache.cached_users(), size):
        result = persist_users(chunk, clear=True)
        for key in result:
            totals[key] += result[key]
        if progress is not None:
            progress(len(chunk))
    log.info("flask-chat: sweep done: %s", totals)
    return totals


def drain_write_behind(max_batches: int = 1000) -> dict[str, int]:
    """Write queued sent messages to SQL in batches until the queue is empty.

    Each batch moves atomically from the queue to this drain's processing list and is
    acknowledged (deleted) only after its SQL commit: a drain killed mid-batch leaves
    it there, and its retry (same job id, same list) writes it first. A database outage
    fails the job with the batch still in its list, for the retry. Records that are not
    messages, or that the database refuses on their data, go to the dead letters
    instead of blocking the rest (the caches still hold those messages).
    """
    state = current_state()
    keys = state.keys
    job = get_current_job()
    token = job.id if job is not None else uuid.uuid4().hex
    processing = keys.persist_processing(token)
    claim = state.redis.register_script(CLAIM_BATCH)
    summary = {"batches": 0, "records": 0, "written": 0, "already": 0, "rejected": 0,
               "reclaimed": reclaim_abandoned(state, mine=token)}
    for _ in range(max_batches):
        raw = claim(keys=[keys.persist_queue(), processing, keys.persist_leases()],
                    args=[token, state.config.persist_batch, DRAIN_LEASE_MS])
        if not raw:
            break
        decoded = decode_queue_records(raw)
        result = state.history.write(decoded.batch)
        rejected = decoded.refused(result)
        deadletters.keep(state.redis, keys, rejected)
        state.redis.delete(processing)  # acknowledged: the batch is in SQL
        summary["batches"] += 1
        summary["records"] += len(raw)
        summary["written"] += result.written
        summary["already"] += result.already
        summary["rejected"] += len(rejected)
    if summary["batches"] or summary["reclaimed"]:
        log.info("flask-chat: write-behind drained %s", summary)
    return summary


def reclaim_abandoned(state: ChatState, mine: str | None = None) -> int:
    """Give the batches of dead drains whose lease ran out back to the queue; returns
    how many records went back. ``mine``: the calling drain's own token (its batch is
    resumed, not given back)."""
    keys = state.keys
    reclaim = state.redis.register_script(RECLAIM_BATCH)
    total = 0
    for member in state.redis.zrange(keys.persist_leases(), 0, -1):
        token = str(member)
        if token == mine:
            continue
        total += int(reclaim(
            keys=[keys.persist_queue(), keys.persist_processing(token), keys.persist_leases()],
            args=[token],
        ))
    if total:
        log.warning("flask-chat: %d write-behind records of a dead drain went back to the "
                    "queue", total)
    return total


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


#: How often (s) a worker cleans RQ's registries: that is when it finds the jobs of a
#: killed worker (abandoned: their heartbeat ran out) and retries them with their
#: backoff, and when a worker without the scheduler lock tries to take it over. RQ's
#: default is 10 minutes, and an idle worker only gets to it when its blocking dequeue
#: times out (worker_ttl - 15 s: 405 by default), so ``flask chat worker`` sets
#: worker_ttl to this + 15. A worker busy with a job gets to it after that job.
MAINTENANCE_INTERVAL = 30

#: How often (s) a worker refreshes the heartbeat of the job it runs (RQ: 30). RQ deems
#: a job abandoned this long plus a fixed 60 s after its last heartbeat.
JOB_MONITORING_INTERVAL = 10


def abandoned_retry_bound(
    maintenance: int = MAINTENANCE_INTERVAL, monitoring: int = JOB_MONITORING_INTERVAL
) -> int:
    """Seconds after a worker is killed by which a live idle worker has found the job it
    was running abandoned and scheduled its retry, plus the scheduler's 1 s poll; the
    retry's RETRY backoff comes on top. The heartbeat runs out (monitoring + RQ's fixed
    60 s grace), then the next maintenance finds it. The killed worker's scheduler lock
    (61 s) has run out by then too, and a live worker takes it at a maintenance, so the
    retry is enqueued when its backoff is over."""
    return monitoring + 60 + maintenance + 1


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
