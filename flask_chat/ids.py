"""Message ids: strings that sort in time order across the whole system.

An id is ``<epoch ms, 13 digits>-<seq, 4 digits>``, for example ``1764291234567-0003``.
Both parts are fixed width, so plain string comparison is time order (until the year
2286), and the id never becomes a JavaScript-unsafe integer. The Redis server's clock
is the one clock: every process allocates through the same atomic script.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import redis

from .keys import Keys
from .scripts import Scripts

ID_RE = re.compile(r"[0-9]{13}-[0-9]{4}")  # ASCII only: \d also matches other scripts' digits


def format_id(ms: int, seq: int) -> str:
    return f"{ms:013d}-{seq:04d}"


def next_id(client: redis.Redis, scripts: Scripts, keys: Keys) -> str:
    ms, seq = scripts.next_id(keys=[keys.ids()], client=client)
    return format_id(int(ms), int(seq))


def is_valid_id(value: str) -> bool:
    return bool(ID_RE.fullmatch(value))


def id_time(message_id: str) -> datetime:
    """The UTC time a message id was allocated at."""
    ms = int(message_id.split("-", 1)[0])
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z``, as JavaScript prints it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )
