"""Every Redis key the migration tools write, built in this one module.

They live under flask-chat's own key prefix (``CHAT_KEY_PREFIX``), in flask-chat's
Redis, never in the legacy store being read::

    chat:migrate:<job>:done       SET    user ids a resumable run has finished
    chat:migrate:<job>:totals     HASH   that run's counts so far (for the final report)
    chat:migrate:legacy-ids       HASH   the legacy id scheme's settings, fixed by the
                                         first import (a different epoch would give
                                         every legacy message a second id)
"""

from __future__ import annotations


class MigrationKeys:
    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}:migrate"

    def done(self, job: str) -> str:
        return f"{self.prefix}:{job}:done"

    def totals(self, job: str) -> str:
        return f"{self.prefix}:{job}:totals"

    def legacy_ids(self) -> str:
        return f"{self.prefix}:legacy-ids"
