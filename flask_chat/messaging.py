"""Sending a message: validate, allocate an id, write every owner's cache, publish.

This is the one send path: ``POST /chats/send_message``, :meth:`flask_chat.Chat.send_message`,
the websocket ``send`` frame and the bridge all come through :func:`send`.

On one Redis server a send is one script call (``scripts.SEND``: claim, rate limit, id,
who is online, every owner's store and publish, write-behind), sent on the process's
auto-pipelined connection under gevent (:mod:`flask_chat.autopipe`). On Redis Cluster a
send's keys span slots, so it takes the steps one slot at a time: (rate limit, id, who
is online), the claim of a send with an idempotency key, then (each owner's store and
publish, one script step per owner: ``scripts.DELIVER``). With the legacy layout
(``CHAT_GROUP_MEMBER_CACHES = True``) a group message is then copied into its online
members' caches, one round trip more.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from redis.client import Pipeline

from . import autopipe, protocol
from .access import check_target
from .cluster import NotReplicated, run_acknowledged
from .conversations import ConversationKey, valid_user_id
from .directory import GroupInfo
from .entries import Message
from .errors import ChatError, NotFound, ValidationError
from .ids import format_id, id_time, iso_utc
from .jobs import enqueue_drain
from .metrics import METRICS
from .scripts import queue
from .settings import ChatConfig
from .signals import message_sent
from .state import ChatState

__all__ = ["Message", "RateLimited", "send", "validate_text", "validate_idempotency_key"]


class RateLimited(ChatError):
    code = "rate_limited"
    status = 429


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


#: What an idempotency key may be: a UUID, a ULID, hex or base64url all fit.
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def validate_idempotency_key(value: object) -> str:
    if not isinstance(value, str) or not IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise ValidationError(
            "The idempotency key must be 1 to 128 letters, digits, '-', '_', '.' or ':'.",
            code="invalid_idempotency_key",
            field="idempotency_key",
        )
    return value


def _digest(conversation: ConversationKey, text: str) -> str:
    """What a retry must repeat exactly: the recipient and the text."""
    data = json.dumps([str(conversation), text], ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def send(
    state: ChatState,
    sender_id: object,
    to: object,
    text: object,
    idempotency_key: object = None,
) -> tuple[Message, list[int]]:
    """Validate, store and publish one message, then send ``message_sent``; returns it
    and the users whose caches received it (the sender excluded). Nothing is written
    unless every check passes.

    With an ``idempotency_key`` (unique per message, chosen by the client), a repeated
    send with the same key and content answers the original message — same id, stored
    and published once — with ``replayed`` set and no recipients; the same key with
    other content is refused (422 ``idempotency_key_reused``).
    """
    started = time.perf_counter()
    if not valid_user_id(sender_id):
        raise ValidationError(
            "The sender id must be a positive integer.", code="invalid_sender", field="sender_id"
        )
    assert isinstance(sender_id, int)
    conversation = ConversationKey.parse(to)
    message_text = validate_text(text, state.config.max_message_length)
    key = None if idempotency_key is None else validate_idempotency_key(idempotency_key)
    sender = state.hooks.get_user(sender_id)
    if sender is None:
        raise NotFound(f"There is no user {sender_id}.", code="unknown_sender", field="sender_id")
    group = check_target(state.hooks, sender_id, conversation)
    config = state.config
    # Once each: a view counts its holders.
    members = list(dict.fromkeys(m for m in group.members if m != sender_id)) if group else []
    if state.cluster is None and config.send_in_one_step:
        sent = _send_in_one_step(state, sender_id, conversation, message_text, key,
                                 sender.image, group, members)
        if sent is not None:
            message, recipients, queued = sent
            if message.replayed:
                return message, []
            return _sent(state, message, group, recipients, queued, started)
    keys = state.keys

    # Round trip 1: the rate limit (unless a claim does it below), the id, and (for a
    # group) who is online.
    limit_now = bool(config.send_rate) and key is None

    def first(pipe: Pipeline) -> None:
        if limit_now:
            queue(pipe, state.scripts.rate_limit, [keys.rate(sender_id)],
                  [config.send_rate, config.send_burst])
        queue(pipe, state.scripts.next_id, [keys.ids()], [])
        if members:
            pipe.zmscore(keys.online(), [str(m) for m in members])

    results = state.scripts.run(state.redis, first)
    if limit_now and not results.pop(0):
        raise _rate_limited(config.send_rate)
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

    message = Message(
        id=message_id,
        conversation=conversation,
        sender_id=sender_id,
        message_text=message_text,
        image=sender.image,
        sent_at=iso_utc(id_time(message_id)),
    )
    if key is not None:
        # Round trip 2 (keyed sends only): claim the key with the whole message, before
        # anything is stored, so that a retry finds the id to repeat.
        digest = _digest(conversation, message_text)
        record = json.dumps({"h": digest, "m": message.for_sender()}, ensure_ascii=False)
        claimed, existing = state.scripts.run(
            state.redis,
            lambda pipe: queue(
                pipe, state.scripts.claim, [keys.idempotency(sender_id, key), keys.rate(sender_id)],
                [record, config.idempotency_window, config.send_rate, config.send_burst],
            ),
        )[0]
        if int(claimed) == 2:
            raise _rate_limited(config.send_rate)
        if int(claimed) == 0:
            return _replay(state, sender_id, group, json.loads(existing), digest), []

    queued = _deliver(state, message, group, recipients)
    return _sent(state, message, group, recipients, queued, started, copied=True)


def _sent(
    state: ChatState,
    message: Message,
    group: GroupInfo | None,
    recipients: list[int],
    queued: int | None,
    started: float,
    copied: bool = False,
) -> tuple[Message, list[int]]:
    """What follows a stored send: the legacy layout's copies (unless ``copied``), the
    write-behind drain, metrics, the ``message_sent`` signal."""
    if not copied and group is not None and group_layout(state.config) == "copies":
        _copy_to_members(state, message, recipients)
    if queued == 1:
        # The queue was empty, so no drain job is pending: start one.
        enqueue_drain(state)
    METRICS.sends.inc()
    METRICS.send_latency.observe(time.perf_counter() - started)
    message_sent.send(state.app, message=message, recipients=recipients)
    return message, recipients


def group_layout(config: ChatConfig) -> str:
    """How group messages sit in members' caches: "view", "copies" or "shared"."""
    value = config.group_member_caches
    if value == "view":
        return "view"
    return "copies" if value else "shared"


def _score(message_id: str) -> int:
    """A conversation's score among its owner's: its first message's ms."""
    return int(message_id[:13])


def _copy_to_members(state: ChatState, message: Message, recipients: list[int]) -> None:
    # The legacy rule, after the publish: a big group costs one script call per online
    # member, and nobody should wait for those.
    if recipients:
        received = json.dumps(message.cache_entry("received"), ensure_ascii=False)
        state.cache.append_to_many(recipients, str(message.conversation), message.id,
                                   received, _score(message.id))


# -- one step (one Redis server) ----------------------------------------------------------

#: Placeholders for the id and the time in bodies serialised before the id exists; the
#: SEND script puts the real ones in. JSON writes each as an escape no text can produce
#: except next to a backslash, so a body holding one more than once takes the steps.
_ID_MARK, _TIME_MARK = "\x00i", "\x00t"
_ID_JSON, _TIME_JSON = b"\\u0000i", b"\\u0000t"


def _pieces(body: bytes) -> list[bytes] | None:
    """``body`` around its two placeholders, and which comes first (SEND's ``fill``)."""
    if body.count(_ID_JSON) != 1 or body.count(_TIME_JSON) != 1:
        return None
    i, t = body.index(_ID_JSON), body.index(_TIME_JSON)
    if i < t:
        return [body[:i], body[i + len(_ID_JSON) : t], body[t + len(_TIME_JSON) :], b"it"]
    return [body[:t], body[t + len(_TIME_JSON) : i], body[i + len(_ID_JSON) :], b"ti"]


def _send_in_one_step(
    state: ChatState,
    sender_id: int,
    conversation: ConversationKey,
    message_text: str,
    key: str | None,
    image: str | None,
    group: GroupInfo | None,
    members: list[int],
) -> tuple[Message, list[int], int | None] | None:
    """The whole send as one ``scripts.SEND`` call; None when it cannot be (a body would
    hold a placeholder twice): then the caller takes the steps. Returns the message
    (``replayed`` for a repeated idempotency key), its recipients and the write-behind
    queue's length (None without one)."""
    config = state.config
    keys = state.keys
    draft = Message(id=_ID_MARK, conversation=conversation, sender_id=sender_id,
                    message_text=message_text, image=image, sent_at=_TIME_MARK)
    digest = _digest(conversation, message_text) if key is not None else ""
    bodies = [
        json.dumps({"h": digest, "m": draft.for_sender()}, ensure_ascii=False).encode()
        if key is not None else None,
        json.dumps(draft.cache_entry("sent"), ensure_ascii=False).encode(),
        json.dumps(draft.cache_entry("received"), ensure_ascii=False).encode()
        if group is None else None,
        protocol.message_event(draft),
    ]
    templates: list[bytes] = []
    for body in bodies:
        pieces = [b"", b"", b"", b"it"] if body is None else _pieces(body)
        if pieces is None:
            return None
        templates += pieces
    layout = group_layout(config)
    if group is None:
        kind = "u"
        peer = conversation.id
        back = str(ConversationKey.user(sender_id))
        stores = (keys.conversation_keys(sender_id, str(conversation)) + [keys.published(sender_id)]
                  + keys.conversation_keys(peer, back) + [keys.published(peer)])
        channels = [keys.user_channel(sender_id), keys.user_channel(peer)]
    else:
        peer = group.id
        back = ""
        channels = ["", keys.group_channel(group.id)]
        if layout == "view":
            kind = "v"
            stores = keys.group_view_keys(group.id)
        else:
            kind = "g"
            stores = (keys.conversation_keys(sender_id, str(conversation))
                      + [keys.published(sender_id)] + keys.group_conversation_keys(group.id)
                      + [keys.group_published(group.id)])
    idem = keys.idempotency(sender_id, key) if key is not None else keys.rate(sender_id)
    script_keys = [keys.ids(), keys.rate(sender_id), idem, keys.online(), keys.cached_users(),
                   keys.persist_queue(), keys.views(), *stores]
    args: list[Any] = [
        kind, config.send_rate if config.send_rate else 0, config.send_burst,
        config.idempotency_window if key is not None else 0, *templates[0:4],
        repr(time.time()), config.history_limit, config.catchup_retention,
        *templates[4:8], *templates[8:12], *templates[12:16],
        str(conversation), back, *channels,
        PERSIST_MAX if config.persistence else 0,
        sender_id, peer, len(members), *members,
    ]
    commands: list[tuple[Any, ...]] = [
        ("EVALSHA", state.scripts.send.sha, len(script_keys), *script_keys, *args)
    ]
    wanted = config.wait_replicas
    if wanted:
        # WAIT blocks its connection: not on the one every greenlet shares.
        commands.append(("WAIT", wanted, config.wait_timeout_ms))
    replies = autopipe.execute_reloading(
        state.redis, commands, lambda: state.scripts.load(state.redis), pipelined=not wanted
    )
    reply = replies[0]
    status = int(reply[0])
    if status == 2:
        raise _rate_limited(config.send_rate)
    if status == 0:
        assert key is not None
        return _replay(state, sender_id, group, json.loads(reply[1]), digest), [], None
    if wanted and int(replies[1]) < wanted:
        raise NotReplicated(int(replies[1]), wanted)
    message_id = format_id(int(reply[1]), int(reply[2]))
    message = Message(id=message_id, conversation=conversation, sender_id=sender_id,
                      message_text=message_text, image=image,
                      sent_at=iso_utc(id_time(message_id)))
    recipients = [int(r) for r in reply[4:]]
    return message, recipients, int(reply[3]) if config.persistence else None


#: Records the write-behind queue keeps at most (the caches hold everything anyway).
PERSIST_MAX = 100_000


def _rate_limited(rate: float) -> RateLimited:
    return RateLimited(f"Too many messages: at most {rate:g} a second.", field="message_text")


def _deliver(
    state: ChatState,
    message: Message,
    group: GroupInfo | None,
    recipients: list[int],
    persist: bool = True,
) -> int | None:
    """Store ``message`` in every owner's store and publish it, in one round trip (a
    group adds one, after the publish, for its online members' caches). Re-running it
    for the same message stores and publishes nothing twice. Returns the write-behind
    queue's length after the push (None without one), or, with ``persist`` False, 1 if
    some store did not have the message yet, else 0."""
    config = state.config
    keys = state.keys
    scripts = state.scripts
    conversation = message.conversation
    sender_id = message.sender_id
    message_id = message.id
    score = _score(message_id)
    layout = group_layout(config)
    # Each body is serialised once per side, and one event (the same bytes) goes to
    # every recipient and tab.
    event = protocol.message_event(message)
    received = json.dumps(message.cache_entry("received"), ensure_ascii=False)
    sent = json.dumps(message.cache_entry("sent"), ensure_ascii=False)
    # (store keys, conversation, body, spill, channel, payload): each store is written
    # and published to in one script step, so its readers' catch-up is sound (DELIVER).
    stores: list[tuple[list[str], str, str | bytes, int, str, str | bytes]] = []
    # With views: the group's store, and who holds the message (its sender and the
    # members online now), in one GROUP_DELIVER step.
    holders: list[int] = []
    if group is None:
        peer = conversation.id
        stores.append((
            keys.conversation_keys(sender_id, str(conversation)) + [keys.published(sender_id)],
            str(conversation), sent, 1, keys.user_channel(sender_id), event,
        ))
        back = str(ConversationKey.user(sender_id))
        stores.append((
            keys.conversation_keys(peer, back) + [keys.published(peer)],
            back, received, 1, keys.user_channel(peer), event,
        ))
    elif layout == "view":
        holders = [sender_id, *recipients]
    else:
        stores.append((
            keys.conversation_keys(sender_id, str(conversation)) + [keys.published(sender_id)],
            str(conversation), sent, 1, "", "",
        ))
        # The group's own store serves members who were offline, and catch-up; its body
        # is the event itself, published as it is stored.
        stores.append((
            keys.group_conversation_keys(group.id) + [keys.group_published(group.id)],
            str(conversation), event, 0, keys.group_channel(group.id), "",
        ))
    copies = recipients if group is not None and layout == "copies" else []
    users = [] if holders else [sender_id] if group is not None else [sender_id, conversation.id]
    record = None
    if persist and config.persistence:
        # Write-behind: the message and who holds it go to SQL soon, in batches.
        owners: list[tuple[int, str, str]] = [(sender_id, str(conversation), "sent")]
        if group is None:
            owners.append((conversation.id, str(ConversationKey.user(sender_id)), "received"))
        else:
            owners += [(uid, str(conversation), "received") for uid in recipients]
        record = json.dumps({"m": json.loads(event), "v": owners}).encode()

    sharded = 1 if state.cluster is not None else 0
    steps = len(stores) + (1 if holders else 0)

    def build(pipe: Pipeline) -> None:
        for store_keys, conv, body, spill, channel, payload in stores:
            queue(pipe, scripts.deliver, store_keys, [
                conv, message_id, body, config.history_limit, score,
                config.catchup_retention, spill, channel, payload, config.catchup_retention,
                sharded,
            ])
        if holders:
            assert group is not None
            audience = "," + ",".join(str(h) for h in holders) + ","
            queue(pipe, scripts.group_deliver, keys.group_view_keys(group.id), [
                str(conversation), message_id, event, config.history_limit, score,
                config.catchup_retention, keys.group_channel(group.id),
                config.catchup_retention, sharded, audience, len(holders),
            ])
            # After the store, like the set of cached users below (a clear of a view
            # that found it empty takes its name out, then looks again).
            pipe.zadd(keys.views(), {f"{h}:{group.id}": 0 for h in holders})
        # After the appends, so a concurrent clear() can never leave a user with a
        # cache outside the set (clear removes from the set before it removes data).
        if users:
            pipe.sadd(keys.cached_users(), *users)
        if record is not None:
            pipe.rpush(keys.persist_queue(), record)
            pipe.ltrim(keys.persist_queue(), -PERSIST_MAX, -1)

    # With CHAT_REDIS_WAIT_REPLICAS, on replicas too before the send is acknowledged.
    results = run_acknowledged(state, build)
    if copies:
        state.cache.append_to_many(copies, str(conversation), message_id, received, score)
    if record is not None:
        return int(results[-2])
    if not persist:
        return int(any(int(r) != -1 for r in results[:steps]))
    return None


def _replay(
    state: ChatState,
    sender_id: int,
    group: GroupInfo | None,
    record: dict[str, Any],
    digest: str,
) -> Message:
    """Answer a send whose idempotency key was already claimed: the original message.

    The claim names the message before any of it is stored, so the original attempt
    may have died half way (or still be running): deliver it again — stores that have
    it change nothing and publish nothing — and queue it for SQL if something was
    missing (SQL writes are idempotent by id too)."""
    if record.get("h") != digest:
        raise ChatError(
            "This idempotency key was used for another message.",
            code="idempotency_key_reused",
            status=422,
            field="idempotency_key",
        )
    m = record["m"]
    message = Message(
        id=m["id"],
        conversation=ConversationKey.parse(m["conversation"]),
        sender_id=sender_id,
        message_text=m["message_text"],
        image=m["image"],
        sent_at=m["sent_at"],
        replayed=True,
    )
    if _deliver(state, message, group, [], persist=False) and state.config.persistence:
        if _deliver(state, message, group, []) == 1:
            enqueue_drain(state)
    return message
