"""The shape of a message, in one place: the stored :class:`Message`, and the cache
entry each owner holds (the legacy layout: ``message_text``, ``type`` sent/received,
``image``, plus ``id``, ``sender_id``, ``sent_at``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conversations import ConversationKey


@dataclass(frozen=True)
class Message:
    """A stored message. ``conversation`` is the key as the sender sees it."""

    id: str
    conversation: ConversationKey
    sender_id: int
    message_text: str
    image: str | None
    sent_at: str
    #: True when this answers a retried send (same idempotency key): nothing was sent.
    replayed: bool = False

    def cache_entry(self, type_: str) -> dict[str, Any]:
        """The message as it sits in an owner's cache; ``type_`` is ``sent`` or ``received``."""
        return {
            "message_text": self.message_text,
            "type": type_,
            "image": self.image,
            "id": self.id,
            "sender_id": self.sender_id,
            "sent_at": self.sent_at,
        }

    def for_sender(self) -> dict[str, Any]:
        """What ``POST /chats/send_message`` answers: the message as the sender sees it."""
        return {
            "id": self.id,
            "conversation": str(self.conversation),
            "message_text": self.message_text,
            "type": "sent",
            "image": self.image,
            "sender_id": self.sender_id,
            "sent_at": self.sent_at,
        }


def entry_from_event(event: dict[str, Any], owner_id: int) -> dict[str, Any]:
    """A message event (side-neutral) as a cache entry seen by ``owner_id``."""
    return {
        "message_text": event["message_text"],
        "type": "sent" if event["sender_id"] == owner_id else "received",
        "image": event["image"],
        "id": event["id"],
        "sender_id": event["sender_id"],
        "sent_at": event["sent_at"],
    }
