"""Sending a message: validate, allocate an id, write every owner's cache, publish.

This is the one send path: ``POST /chats/send_message``, :meth:`flask_chat.Chat.send_message`,
the websocket ``send`` frame and the bridge all come through :func:`send`. It costs two
Redis round trips: (rate limit, id, who is online) and (the appends, then the publishes);
a group message adds a third, after the publish, for its online members' caches.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.client import Pipeline

from . import protocol
from .cache import CacheEntry
from .conversations import ConversationKey, valid_user_id
from .errors import ChatError, Forbidden, NotFound, ValidationError
from .ids import format_id, id_time, iso_utc
from .metrics import METRICS
from .scripts import queue

if TYPE_CHECKING:
    from .directory import GroupInfo
    from .extension import Chat, ChatState


class RateLimited(ChatError):
    code = "rate_limited"
    status = 429


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
    if "\x00" in value:
        # PostgreSQL text cannot hold U+0000: accepted here, the message would be cached
        # and published but could never reach SQL (and would fail its whole batch).
        raise ValidationError(
            "'message_text' contains U+0000 (NUL), which cannot be stored.",
            code="invalid_character",
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


def check_target(chat: Chat, sender_id: int, to: ConversationKey) -> GroupInfo | None:
    """Check that ``sender_id`` may write to ``to``; returns the group for a group key."""
    if not to.is_group:
        if to.id == sender_id:
            raise ValidationError(
                "You cannot send a message to yourself.", code="invalid_recipient", field="to"
            )
        if chat.get_user(to.id) is None:
            raise NotFound(f"There is no user {to.id}.", code="unknown_recipient", field="to")
        if not chat.can_message(sender_id, to):
            raise Forbidden(f"You may not message user {to.id}.", field="to")
        return None
    group = chat.get_group(to.id)
    if group is None:
        raise NotFound(f"There is no group {to.id}.", code="unknown_recipient", field="to")
    if not chat.can_message(sender_id, to, group):
        if chat.has_permission_handler:
            raise Forbidden(f"You may not message group {to.id}.", field="to")
        raise Forbidden(f"You are not a member of group {to.id}.", code="not_a_member", field="to")
    return group


def send(
    chat: Chat, state: ChatState, sender_id: object, to: object, text: object
) -> tuple[Message, list[int]]:
    """Validate, store and publish one message; returns it and the users whose caches
    received it (the sender excluded). Nothing is written unless every check passes."""
    started = time.perf_counter()
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
    group = check_target(chat, sender_id, conversation)
    keys = state.keys

    # Round trip 1: the rate limit, the id, and (for a group) who is online.
    config = state.config
    members = [m for m in group.members if m != sender_id] if group else []

    def first(pipe: Pipeline) -> None:
        if config.send_rate:
            queue(pipe, state.scripts.rate_limit, [keys.rate(sender_id)],
                  [config.send_rate, config.send_burst])
        queue(pipe, state.scripts.next_id, [keys.ids()], [])
        if members:
            pipe.zmscore(keys.online(), [str(m) for m in members])

    results = state.scripts.run(state.redis, first)
    if config.send_rate and not results.pop(0):
        raise RateLimited(
            f"Too many messages: at most {config.send_rate:g} a second.", field="message_text"
        )
    ms, seq = results[0]
    message_id = format_id(int(ms), int(seq))
    if group is None:
        recipients = [conversation.id]
    else:
        now = time.time()
        recipients = (
            [
                m
                for m, s in zip(members, results[1] if members else [], strict=True)
                if s is not None and s > now
            ]
            if members
            else []
        )

    sent = id_time(message_id)
    message = Message(
        id=message_id,
        conversation=conversation,
        sender_id=sender_id,
        message_text=message_text,
        image=sender.image,
        sent_at=iso_utc(sent),
    )
    # Round trip 2: every append, then the publishes. Each body is serialised once per
    # side, and one event (the same bytes) goes to every recipient and tab.
    event = protocol.message_event(message)
    received = json.dumps(message.cache_entry("received"), ensure_ascii=False)
    entries = [
        CacheEntry(
            sender_id,
            str(conversation),
            message_id,
            json.dumps(message.cache_entry("sent"), ensure_ascii=False),
        )
    ]
    if group is None:
        entries.append(
            CacheEntry(conversation.id, str(ConversationKey.user(sender_id)), message_id, received)
        )
        channels = [keys.user_channel(conversation.id), keys.user_channel(sender_id)]
    else:
        # The group's own store serves members who were offline, and catch-up.
        entries.append(
            CacheEntry(
                None,
                str(conversation),
                message_id,
                event,
                keys=keys.group_conversation_keys(group.id),
            )
        )
        channels = [keys.group_channel(group.id)]
    # Online members' caches get it too (the legacy rule), after the publish: a big
    # group costs one script call per member, and nobody should wait for those.
    later = [CacheEntry(uid, str(conversation), message_id, received) for uid in recipients
             if group is not None]
    copies = later if config.group_member_caches else []
    persist = None
    if config.persistence:
        # Write-behind: the message and who holds it go to SQL soon, in batches.
        owners = [(sender_id, str(conversation), "sent")]
        owners += [(e.user_id, e.conversation, "received") for e in entries[1:] + later
                   if e.user_id]
        persist = json.dumps({"m": json.loads(event), "v": owners}).encode()
    _, queued = state.cache.append(
        entries,
        score=int(sent.timestamp() * 1000),
        publish=[(c, event) for c in channels],
        persist=persist,
    )
    if copies:
        state.cache.append_to_many(
            [e.user_id for e in copies if e.user_id is not None],
            str(conversation), message_id, received, int(sent.timestamp() * 1000),
        )
    if queued == 1:
        # The queue was empty, so no drain job is pending: start one.
        from .jobs import enqueue_drain

        enqueue_drain(state)
    METRICS.sends.inc()
    METRICS.send_latency.observe(time.perf_counter() - started)
    return message, recipients
