"""Deterministic message ids for legacy messages, which had neither ids nor times.

A flask-chat id is ``<13-digit epoch ms>-<4-digit seq>``. A legacy message's id is

    ms  = epoch + 3 * code + lane      (one millisecond per conversation)
    seq = its position in the conversation (0-9999)

where ``epoch`` is ``--legacy-epoch`` (default 2012-01-01 UTC) and the conversation's
``code`` / ``lane`` number it injectively:

- lane 0, a 1:1 conversation between users a <= b: ``code = b * (b + 1) / 2 + a``
- lane 1, a group conversation merged over the group's members: ``code = group id``
- lane 2, one user's own copy of a group conversation that could not be merged
  (the host app does not know the group, or the user is not a member):
  ``code = (g + u) * (g + u + 1) / 2 + u`` (Cantor's pairing of group g and user u)

So the same conversation always gets the same ids (a re-run writes nothing twice), the
ids of one conversation sort in its order, two conversations never share an id, and
every legacy id sorts before ``--legacy-until`` (default 2020-01-01 UTC), long before
any id flask-chat itself allocated. A conversation that would land past it (user ids
above about 410,000 with the defaults: 1:1 codes grow as 1.5 x id^2 milliseconds;
``--legacy-epoch 1990-01-01`` makes room for about 790,000, 1970-01-01 for about
1,000,000) or that has more than 10,000 messages is refused with
:class:`~.errors.OutOfRange`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from flask_chat.ids import format_id

from .errors import OutOfRange

DEFAULT_EPOCH = datetime(2012, 1, 1, tzinfo=timezone.utc)
DEFAULT_UNTIL = datetime(2020, 1, 1, tzinfo=timezone.utc)
MAX_MESSAGES = 10_000

Lane = Literal["pair", "group", "copy"]
_LANES: dict[str, int] = {"pair": 0, "group": 1, "copy": 2}


@dataclass(frozen=True)
class ConversationId:
    """Which conversation a legacy copy belongs to, seen from no one's side.

    ``pair``: users ``a <= b``; ``group``: group ``a`` (``b`` is 0); ``copy``: group
    ``a`` as user ``b``'s own copy.
    """

    lane: Lane
    a: int
    b: int = 0

    @classmethod
    def pair(cls, one: int, other: int) -> ConversationId:
        return cls("pair", min(one, other), max(one, other))

    @property
    def code(self) -> int:
        if self.lane == "pair":
            return self.b * (self.b + 1) // 2 + self.a
        if self.lane == "group":
            return self.a
        s = self.a + self.b
        return s * (s + 1) // 2 + self.b


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class LegacyIds:
    epoch: datetime = DEFAULT_EPOCH
    until: datetime = DEFAULT_UNTIL

    def __post_init__(self) -> None:
        if self.until <= self.epoch:
            raise ValueError("--legacy-until must be after --legacy-epoch")

    def conversation_ms(self, conversation: ConversationId) -> int:
        ms = _ms(self.epoch) + 3 * conversation.code + _LANES[conversation.lane]
        if ms >= _ms(self.until):
            raise OutOfRange(
                f"{conversation.lane} conversation {conversation.a}/{conversation.b} would be "
                f"numbered after {self.until.date()} (move --legacy-epoch back)"
            )
        return ms

    def message_ids(self, conversation: ConversationId, count: int) -> list[str]:
        """Ids of a conversation's messages, in order."""
        if count > MAX_MESSAGES:
            raise OutOfRange(f"a conversation of {count} messages (at most {MAX_MESSAGES})")
        ms = self.conversation_ms(conversation)
        return [format_id(ms, seq) for seq in range(count)]

    def settings(self) -> dict[str, str]:
        """What a later run must use too, or its ids would differ."""
        return {"epoch": self.epoch.isoformat(), "until": self.until.isoformat()}
