"""Conversation keys: ``<id>_User`` and ``<id>_Group``, seen from the owner's side."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import ValidationError

Kind = Literal["User", "Group"]

# Ids are positive integers below 2**53 so they survive a trip through JavaScript.
MAX_ID = 2**53 - 1
_KEY_RE = re.compile(r"^([1-9][0-9]{0,15})_(User|Group)$")


@dataclass(frozen=True)
class ConversationKey:
    id: int
    kind: Kind

    def __str__(self) -> str:
        return f"{self.id}_{self.kind}"

    @property
    def is_group(self) -> bool:
        return self.kind == "Group"

    @classmethod
    def parse(cls, value: object, field: str = "to") -> ConversationKey:
        """Parse ``2_User`` / ``5_Group``; anything else is a ``invalid_conversation`` error."""
        if not isinstance(value, str):
            raise ValidationError(
                f"{field!r} must be a conversation key such as '2_User' or '5_Group'.",
                code="invalid_conversation",
                field=field,
            )
        match = _KEY_RE.fullmatch(value)
        if match is None or int(match.group(1)) > MAX_ID:
            raise ValidationError(
                f"{field!r} must be a conversation key such as '2_User' or '5_Group', "
                f"not {value[:40]!r}.",
                code="invalid_conversation",
                field=field,
            )
        kind: Kind = "User" if match.group(2) == "User" else "Group"
        return cls(int(match.group(1)), kind)

    @classmethod
    def user(cls, user_id: int) -> ConversationKey:
        return cls(user_id, "User")

    @classmethod
    def group(cls, group_id: int) -> ConversationKey:
        return cls(group_id, "Group")


def valid_user_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID
