"""Reads that concurrent callers share (on gevent), without ever seeing an older state.

A thousand members of one group connecting at once each need the group's online
members. Reading them once per connect is a thousand reads of a thousand members;
:class:`SharedReads` makes the callers who ask while a read is in flight share the next
one instead. Each caller still gets a read that *started after it asked*, so it sees
everything that happened before it asked, exactly as its own read would have.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar, cast

from gevent.event import Event

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Read:
    __slots__ = ("started", "done", "value", "error", "ok")

    def __init__(self, started: int) -> None:
        self.started = started
        self.done = Event()
        self.value: object = None
        self.error: Exception | None = None
        self.ok = False


class SharedReads(Generic[K, V]):
    """One read per key at a time, shared by everyone who asked before it started."""

    def __init__(self) -> None:
        self._clock = itertools.count()
        self._reads: dict[K, _Read] = {}

    def get(self, key: K, read: Callable[[], V]) -> V:
        asked = next(self._clock)
        while True:
            current = self._reads.get(key)
            if current is None:
                break
            current.done.wait()
            if current.started > asked:
                if current.ok:
                    return cast(V, current.value)
                if current.error is not None:
                    raise current.error
            # Started before we asked (or its reader was killed): a fresh read is needed.
        mine = self._reads[key] = _Read(next(self._clock))
        try:
            value = read()
            mine.value, mine.ok = value, True
            return value
        except Exception as exc:
            mine.error = exc
            raise
        finally:
            del self._reads[key]
            mine.done.set()
