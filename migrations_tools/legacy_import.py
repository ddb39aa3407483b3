"""Importing the legacy Rails chat cache into SQL (and optionally the live cache).

Streams: key names are discovered lazily and handled in batches of ``batch_size``; per
batch, the values are read in one round trip, decoded (:mod:`.entries`), checked
(:mod:`.history`), paired with the other copies of each conversation (:mod:`.merge`,
reading the peers' keys too), numbered (:mod:`.legacy_ids`) and written in one SQL
transaction with flask-chat's own idempotent :class:`~flask_chat.persistence.HistoryStore`.
A key that cannot be imported is skipped whole, with its reason in the report; only a
failure of SQL or Redis themselves stops the run, and the checkpoint resumes it.
Memory stays bounded: besides the current batch, only LRU caches of decoded histories
and merged conversations are kept.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask_chat.cache import CacheEntry, ChatCache
from flask_chat.ids import id_time, iso_utc
from flask_chat.persistence import Batch, HistoryStore

from . import dry_run
from .checkpoint import Checkpoint
from .entries import unwrap
from .errors import Corrupt, Skip, Vanished
from .history import LegacyConversation, parse_history
from .legacy_ids import ConversationId, LegacyIds
from .merge import PAPERCLIP_ID, Merged, copy_of, merge, sender_from_image
from .report import Report
from .sources import Source

#: A group's members as the host app knows them (``chat.get_group``), or None.
Members = Callable[[int], Iterable[int] | None]
History = dict[str, LegacyConversation]
K = TypeVar("K")
V = TypeVar("V")


@dataclass
class ImportSettings:
    ids: LegacyIds = field(default_factory=LegacyIds)
    batch_size: int = 200
    dry_run: bool = False
    into_cache: bool = False
    #: Stop after this many keys, keeping the checkpoint (a trial run, or a time box).
    max_keys: int | None = None
    #: Reads a group message's sender from its avatar path when no copy says (None: 0).
    sender_image: re.Pattern[str] | None = field(default_factory=lambda: re.compile(PAPERCLIP_ID))
    #: Decoded histories and merged conversations kept for pairing (LRU).
    remember: int = 4096


class _LRU(OrderedDict[K, V]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def _chunks(names: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for name in names:
        chunk.append(name)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class LegacyImporter:
    def __init__(
        self,
        source: Source,
        store: HistoryStore,
        members: Members,
        settings: ImportSettings | None = None,
        checkpoint: Checkpoint | None = None,
        cache: ChatCache | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.source = source
        self.store = store
        self.members = members
        self.settings = settings or ImportSettings()
        self.checkpoint = None if self.settings.dry_run else checkpoint
        self.cache = cache if self.settings.into_cache else None
        self.progress = progress
        size = max(self.settings.remember, 4 * self.settings.batch_size)
        self._histories: _LRU[int, History | None] = _LRU(size)
        self._merges: _LRU[ConversationId, Merged] = _LRU(size)
        self._members: _LRU[int, frozenset[int] | None] = _LRU(size)

    # -- the run -------------------------------------------------------------------------

    def run(self) -> Report:
        """Import every key of the source. Ctrl-C (KeyboardInterrupt) ends the run after
        the batch in hand is either written and marked done, or not written at all."""
        report = Report("import-legacy", dry_run=self.settings.dry_run)
        if self.checkpoint is not None and self.checkpoint.started():
            report.add_counts(self.checkpoint.totals())
        limit = self.settings.max_keys
        names = self.source.names()
        seen = 0
        try:
            for chunk in _chunks(names, self.settings.batch_size):
                if limit is not None and seen + len(chunk) > limit:
                    chunk = chunk[: limit - seen]
                    report.interrupted = True
                if chunk:
                    self._batch(chunk, report)
                    seen += len(chunk)
                    if self.progress is not None:
                        self.progress(len(chunk))
                if report.interrupted:
                    break
        except KeyboardInterrupt:
            report.interrupted = True
        report.n["ignored"] += getattr(self.source, "ignored", 0)
        if not report.interrupted and self.checkpoint is not None:
            self.checkpoint.clear()
        return report

    def _batch(self, names: list[str], report: Report) -> None:
        delta = Report(report.command, dry_run=report.dry_run)
        todo: list[tuple[str, int]] = []
        for name in names:
            uid = self.source.user_id(name)
            if uid is None:
                delta.n["keys"] += 1
                delta.skip("not_a_user_key", name, "the key names no user id")
            else:
                todo.append((name, uid))
        if self.checkpoint is not None:
            flags = self.checkpoint.done([uid for _, uid in todo])
            report.n["resumed"] += sum(flags)
            todo = [item for item, done in zip(todo, flags, strict=True) if not done]

        histories: dict[int, tuple[str, History]] = {}
        for (name, uid), raw in zip(todo, self.source.read_many([n for n, _ in todo]), strict=True):
            delta.n["keys"] += 1
            try:
                history = self._decode(raw, delta)
            except Skip as skip:
                delta.skip(skip.code, name, skip.detail)
                self._histories.put(uid, None)
                continue
            self._histories.put(uid, history)
            histories[uid] = (name, history)

        self._prefetch(histories)
        batch = Batch()
        appends: list[tuple[int, str, list[dict[str, Any]]]] = []
        for uid, (name, history) in histories.items():
            try:
                contribution = self._contribution(uid, history)
            except Skip as skip:
                delta.skip(skip.code, name, skip.detail)
                continue
            delta.n["users"] += 1
            delta.n["conversations"] += len(history)
            copies = sum(len(entries) for _, entries in contribution)
            delta.n["messages_read"] += copies
            if not copies:
                delta.n["empty"] += 1
            for conversation, entries in contribution:
                for entry in entries:
                    batch.add_entry(uid, conversation, entry)
                appends.append((uid, conversation, entries))

        self._write(batch, appends, delta)
        if self.checkpoint is not None:
            self.checkpoint.mark([uid for _, uid in todo], delta.counts())
        report.absorb(delta)

    def _write(self, batch: Batch, appends: list[tuple[int, str, list[dict[str, Any]]]],
               delta: Report) -> None:
        if self.settings.dry_run:
            messages, views = dry_run.present(self.store.engine, batch)
            delta.n["written"] += len(batch.messages) - messages
            delta.n["already"] += messages
            delta.n["views_written"] += len(batch.views) - views
            return
        # Views are counted here, not from WriteResult.views_written: that comes from
        # the INSERT's rowcount, which psycopg reports as -1 for executemany.
        _, views_before = dry_run.present(self.store.engine, batch)
        result = self.store.write(batch)
        delta.n["written"] += result.written
        delta.n["already"] += result.already
        # A message the database refuses (with its views) is reported; the rest of the
        # batch is written all the same (see HistoryStore.write).
        refused_views = sum(1 for _, mid in batch.views if mid in result.rejected)
        delta.n["views_written"] += len(batch.views) - views_before - refused_views
        for mid, reason in sorted(result.rejected.items()):
            holders = sorted(uid for uid, m in batch.views if m == mid)
            delta.refuse(f"message {mid} (users {', '.join(map(str, holders))})", reason)
        if self.cache is not None:
            for uid, conversation, entries in appends:
                kept = [e for e in entries if e["id"] not in result.rejected]
                if kept:
                    delta.n["cached"] += _append(self.cache, uid, conversation, kept)

    # -- decoding ------------------------------------------------------------------------

    def _decode(self, raw: bytes | None | Exception, report: Report | None) -> History:
        if raw is None:
            raise Vanished("the key is gone (deleted or expired since it was listed)")
        if isinstance(raw, Exception):
            raise Corrupt(f"cannot be read as a value: {raw}")
        unwrapped = unwrap(raw)
        conversations = parse_history(unwrapped.value)
        if report is not None:
            report.formats[unwrapped.format] += 1
            report.n["replaced"] += unwrapped.replaced
        return {str(c.key): c for c in conversations}

    def _history(self, uid: int) -> History | None:
        if uid not in self._histories:
            self._read_quietly([uid])
        return self._histories.get(uid)

    def _read_quietly(self, uids: Sequence[int]) -> None:
        """Read other users' keys, only to pair conversations: what cannot be read
        counts as absent here (that key reports it when it is imported itself)."""
        raws = self.source.read_many([self.source.name_for(uid) for uid in uids])
        for uid, raw in zip(uids, raws, strict=True):
            try:
                self._histories.put(uid, self._decode(raw, None))
            except Skip:
                self._histories.put(uid, None)

    # -- pairing -------------------------------------------------------------------------

    def _group_members(self, group_id: int) -> frozenset[int] | None:
        if group_id not in self._members:
            found = self.members(group_id)
            self._members.put(group_id, None if found is None else frozenset(int(m) for m in found))
        return self._members[group_id]

    def _holders(
        self, uid: int, conversation: LegacyConversation
    ) -> tuple[ConversationId, list[int]]:
        key = conversation.key
        if not key.is_group:
            return ConversationId.pair(uid, key.id), sorted({uid, key.id})
        members = self._group_members(key.id)
        if members is None or uid not in members:
            return ConversationId("copy", key.id, uid), [uid]
        return ConversationId("group", key.id), sorted(members)

    def _prefetch(self, histories: dict[int, tuple[str, History]]) -> None:
        needed: set[int] = set()
        for uid, (_, history) in histories.items():
            for conversation in history.values():
                cid, holders = self._holders(uid, conversation)
                if cid not in self._merges:
                    needed.update(h for h in holders if h not in self._histories)
        if needed:
            self._read_quietly(sorted(needed))

    def _merged(self, cid: ConversationId, holders: list[int], key: LegacyConversation) -> Merged:
        merged = self._merges.get(cid)
        if merged is not None:
            return merged
        copies = []
        for holder in holders:
            history = self._history(holder)
            if history is None:
                continue
            if key.key.is_group:
                theirs = history.get(str(key.key))
                peer = None
            else:
                other = cid.b if holder == cid.a else cid.a
                theirs = history.get(f"{other}_User")
                peer = other
            if theirs is not None and theirs.messages:
                copies.append(copy_of(holder, theirs.messages, peer))
        merged = merge(copies)
        self._merges.put(cid, merged)
        return merged

    def _contribution(self, uid: int, history: History) -> list[tuple[str, list[dict[str, Any]]]]:
        """This user's messages as flask-chat cache entries, per conversation."""
        out = []
        for name, conversation in history.items():
            if not conversation.messages:
                continue
            cid, holders = self._holders(uid, conversation)
            merged = self._merged(cid, holders, conversation)
            positions = merged.positions.get(uid)
            if positions is None or len(positions) != len(conversation.messages):
                # The merge was made from another read of this key (it changed
                # meanwhile): merge again from this read.
                self._merges.pop(cid, None)
                self._histories.put(uid, history)
                merged = self._merged(cid, holders, conversation)
                positions = merged.positions[uid]
            ids = self.settings.ids.message_ids(cid, len(merged.messages))
            entries = []
            for message, position in zip(conversation.messages, positions, strict=True):
                item = merged.messages[position]
                sender = item.sender
                if sender is None:
                    sender = sender_from_image(self.settings.sender_image, item.image)
                entries.append({
                    "id": ids[position],
                    "sender_id": sender,
                    "type": message.direction,
                    "message_text": item.text,
                    "image": item.image,
                })
            out.append((name, entries))
        return out


def _append(cache: ChatCache, uid: int, conversation: str, entries: list[dict[str, Any]]) -> int:
    """Put a user's imported conversation into their live flask-chat cache."""
    cache_entries = []
    for entry in entries:
        body = dict(entry, sent_at=iso_utc(id_time(entry["id"])))
        text = json.dumps(body, ensure_ascii=False)
        cache_entries.append(CacheEntry(uid, conversation, entry["id"], text))
    score = int(id_time(entries[0]["id"]).timestamp() * 1000)
    trimmed, _ = cache.append(cache_entries, score=score)
    return sum(1 for t in trimmed if t >= 0)
