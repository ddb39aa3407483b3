"""Sending a message: validate, allocate an id, write every owner's cache.

This is the one send path: ``POST /chats/send_message``, :meth:`flask_chat.Chat.send_message`
and (later) websocket frames and the bridge all come through :func:`send`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import presence
from .cache import CacheEntry
from .conversations import ConversationKey, valid_user_id
from .errors import Forbidden, NotFound, ValidationError
from .ids import id_time, iso_utc, next_id

if TYPE_CHECKING:
    from .extension import Chat, ChatState


@dataclass(frozen=True)
class Message:
    """A stored message. ``conversation`` is the key as the sender sees it."""

    id: str
    conversation: ConversationKey
    sender_id: int
    message_text: str
    image: str | None
    sent_at: str

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


def validate_text(value: object, max_length: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            "'message_text' must be a string.", code="invalid_field", field="message_text"
        )
    if not value.strip():
        raise ValidationError(
            "'message_text' is empty.", code="empty_message", field="message_text"
        )
    if len(value) > max_length:
        raise ValidationError(
            f"'message_text' is longer than {max_length} characters.",
            code="message_too_long",
            field="message_text",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "'message_text' is not valid Unicode text.",
            code="invalid_field",
            field="message_text",
        ) from None
    return value


def resolve_recipients(chat: Chat, sender_id: int, to: ConversationKey) -> list[int]:
    """Check that ``sender_id`` may write to ``to``; return who it reaches, sender excluded."""
    if not to.is_group:
        if to.id == sender_id:
            raise ValidationError(
                "You cannot send a message to yourself.", code="invalid_recipient", field="to"
            )
        if chat.get_user(to.id) is None:
            raise NotFound(f"There is no user {to.id}.", code="unknown_recipient", field="to")
        if not chat.can_message(sender_id, to):
            raise Forbidden(f"You may not message user {to.id}.", field="to")
        return [to.id]
    group = chat.get_group(to.id)
    if group is None:
        raise NotFound(f"There is no group {to.id}.", code="unknown_recipient", field="to")
    if not chat.can_message(sender_id, to):
        if chat.has_permission_handler:
            raise Forbidden(f"You may not message group {to.id}.", field="to")
        raise Forbidden(f"You are not a member of group {to.id}.", code="not_a_member", field="to")
    return presence.online_user_ids(m for m in group.members if m != sender_id)


def send(
    chat: Chat, state: ChatState, sender_id: object, to: object, text: object
) -> tuple[Message, list[int]]:
    """Validate and store one message; returns it and the ids of the users it reached.

    Nothing is written unless every check passes.
    """
    if not valid_user_id(sender_id):
        raise ValidationError(
            "The sender id must be a positive integer.", code="invalid_sender", field="sender_id"
        )
    assert isinstance(sender_id, int)
    conversation = ConversationKey.parse(to)
    message_text = validate_text(text, state.config.max_message_length)
    sender = chat.get_user(sender_id)
    if sender is None:
        raise NotFound(f"There is no user {sender_id}.", code="unknown_sender", field="sender_id")
    recipients = resolve_recipients(chat, sender_id, conversation)

    message_id = next_id(state.redis, state.scripts, state.keys)
    sent = id_time(message_id)
    message = Message(
        id=message_id,
        conversation=conversation,
        sender_id=sender_id,
        message_text=message_text,
        image=sender.image,
        sent_at=iso_utc(sent),
    )
    # Serialise once per side: every recipient of a group message stores the same bytes.
    received_body = json.dumps(message.cache_entry("received"), ensure_ascii=False)
    their_key = (
        str(ConversationKey.user(sender_id)) if not conversation.is_group else str(conversation)
    )
    entries = [
        CacheEntry(
            sender_id,
            str(conversation),
            message_id,
            json.dumps(message.cache_entry("sent"), ensure_ascii=False),
        )
    ]
    entries.extend(CacheEntry(uid, their_key, message_id, received_body) for uid in recipients)
    state.cache.append(entries, score=int(sent.timestamp() * 1000))
    return message, recipients
