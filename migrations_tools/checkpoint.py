"""Resuming an interrupted run: which users are done, and the counts so far.

A batch is marked done only after its SQL transaction committed, so a run killed at any
point resumes by redoing at most one batch, which the idempotent writes make harmless.
A run that finishes deletes its checkpoint: the next run starts over (and, the writes
being idempotent, writes nothing that is already there).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from .keys import MigrationKeys


class Checkpoint:
    def __init__(self, client: redis.Redis, keys: MigrationKeys, job: str) -> None:
        self.client = client
        self.job = job
        self.done_key = keys.done(job)
        self.totals_key = keys.totals(job)

    def done(self, user_ids: Sequence[int]) -> list[bool]:
        if not user_ids:
            return []
        return [bool(x) for x in self.client.smismember(self.done_key, list(user_ids))]

    def mark(self, user_ids: Sequence[int], counts: dict[str, int]) -> None:
        pipe = self.client.pipeline(transaction=True)
        if user_ids:
            pipe.sadd(self.done_key, *user_ids)
        for name, value in counts.items():
            if value:
                pipe.hincrby(self.totals_key, name, value)
        pipe.execute()

    def totals(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.client.hgetall(self.totals_key).items()}

    def started(self) -> bool:
        return bool(self.client.exists(self.done_key, self.totals_key))

    def clear(self) -> None:
        self.client.delete(self.done_key, self.totals_key)
