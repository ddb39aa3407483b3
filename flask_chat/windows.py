"""Which chat windows a user has open, minimised or hidden, so every page rebuilds them.

Stored per user in one Redis hash (``Keys.windows``); closing a window hides it, as the
legacy client kept closed windows in the DOM.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import redis

from .errors import ValidationError
from .keys import Keys

WindowState = Literal["open", "minimised", "hidden"]
STATES: tuple[WindowState, ...] = ("open", "minimised", "hidden")


def parse_state(value: object) -> WindowState:
    if value not in STATES:
        raise ValidationError(
            f"'state' must be one of {', '.join(STATES)}.", code="invalid_state", field="state"
        )
    return value


class Windows:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def get(self, user_id: int) -> list[dict[str, Any]]:
        """The user's windows in the order they were first opened."""
        raw = self.client.hgetall(self.keys.windows(user_id))
        windows = [{"conversation": conv, **json.loads(value)} for conv, value in raw.items()]
        windows.sort(key=lambda w: (w.get("opened_at", 0), w["conversation"]))
        return [{"conversation": w["conversation"], "state": w["state"]} for w in windows]

    def set(self, user_id: int, conversation: str, state: WindowState) -> None:
        key = self.keys.windows(user_id)
        current = self.client.hget(key, conversation)
        opened_at = json.loads(current)["opened_at"] if current else int(time.time() * 1000)
        self.client.hset(key, conversation, json.dumps({"state": state, "opened_at": opened_at}))
