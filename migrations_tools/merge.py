"""Pairing the copies of one conversation that sit in several users' caches.

The legacy controller wrote every message into the sender's cache and the recipient's
(for a group, every online member's), and each cache was cleared on its own (logout,
the 5-minute sweep). So each copy of a conversation is the tail of it since that
user's last clear, and the copies overlap. :func:`merge` lines the copies up — in
owner id order, matching equal (sender, text) with :class:`difflib.SequenceMatcher`
(equal texts whose senders do not disagree, where a group copy does not say who sent
a message) — into one sequence, each message once, and says for every copy which
position each of its messages holds. Positions become the message ids
(:mod:`.legacy_ids`), so the same copies always give the same ids whichever owner's
key is imported first.

Senders: in a 1:1 copy ``sent`` is the owner, ``received`` the peer. In a group copy a
``received`` message does not say who sent it: the sender's own copy (``sent``) does,
when it is merged in; otherwise :func:`sender_from_image` may read it from the avatar
path (the legacy app's Paperclip ``/users/avatars/000/000/003/`` holds the id);
otherwise it is 0 (unknown).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from .history import LegacyMessage

#: Paperclip's ``:id_partition`` in an avatar URL: ``.../000/000/003/...`` is user 3.
PAPERCLIP_ID = r"/(\d{3})/(\d{3})/(\d{3})/"


@dataclass(frozen=True)
class Copy:
    """One owner's copy of a conversation, with the sender of each message if known."""

    owner: int
    messages: Sequence[LegacyMessage]
    senders: Sequence[int | None]


@dataclass
class MergedMessage:
    text: str
    image: str | None
    sender: int | None
    #: Whether ``image`` comes from the sender's own copy.
    image_from_sender: bool = False


@dataclass
class Merged:
    messages: list[MergedMessage] = field(default_factory=list)
    #: owner -> position in :attr:`messages` of each message of their copy.
    positions: dict[int, list[int]] = field(default_factory=dict)


def copy_of(owner: int, messages: Sequence[LegacyMessage], peer: int | None) -> Copy:
    """``peer`` is the other user of a 1:1 conversation, None for a group."""
    return Copy(owner, messages, [owner if m.direction == "sent" else peer for m in messages])


def merge(copies: Sequence[Copy]) -> Merged:
    """Merge copies (in owner order, so the result never depends on who asked)."""
    merged = Merged()
    for copy in sorted(copies, key=lambda c: c.owner):
        _merge_one(merged, copy)
    return merged


def _compatible(a: int | None, b: int | None) -> bool:
    return a is None or b is None or a == b


def _merge_one(merged: Merged, copy: Copy) -> None:
    old = merged.messages
    new: list[MergedMessage] = []
    moved = [0] * len(old)  # old position -> new position
    mine = [0] * len(copy.messages)

    def keep(i: int) -> None:
        moved[i] = len(new)
        new.append(old[i])

    def add(j: int) -> None:
        m = copy.messages[j]
        sender = copy.senders[j]
        mine[j] = len(new)
        new.append(MergedMessage(m.text, m.image, sender, sender == copy.owner))

    if all(x.sender is not None for x in old) and None not in copy.senders:
        # Every sender known (a 1:1 chat): line up on (sender, text).
        a: list[object] = [(x.sender, x.text) for x in old]
        b: list[object] = [(s, x.text) for s, x in zip(copy.senders, copy.messages, strict=True)]
    else:
        # A group copy's received messages do not say who sent them: line up on the
        # text, and pair only messages whose senders agree (below).
        a, b = [x.text for x in old], [x.text for x in copy.messages]
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            for i in range(i1, i2):
                keep(i)
            for j in range(j1, j2):
                add(j)
            continue
        for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
            sender = copy.senders[j]
            if not _compatible(old[i].sender, sender):
                keep(i)
                add(j)
                continue
            keep(i)
            mine[j] = moved[i]
            item = old[i]
            if item.sender is None:
                item.sender = sender
            if sender == copy.owner and not item.image_from_sender:
                item.image, item.image_from_sender = copy.messages[j].image, True
    merged.messages = new
    merged.positions = {owner: [moved[p] for p in ps] for owner, ps in merged.positions.items()}
    merged.positions[copy.owner] = mine


def sender_from_image(pattern: re.Pattern[str] | None, image: str | None) -> int:
    """The sender id an avatar path names (the groups of ``pattern`` joined), or 0."""
    if pattern is None or not image:
        return 0
    match = pattern.search(image)
    if match is None:
        return 0
    digits = "".join(g for g in match.groups() if g) if match.groups() else match.group(0)
    return int(digits) if digits.isdigit() and 0 < int(digits) < 2**53 else 0
