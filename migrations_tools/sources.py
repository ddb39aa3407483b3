"""Where legacy values come from: a Redis (redis-store / RedisCacheStore keys) or a
Rails FileStore directory. Both stream: names are discovered lazily and read in batches.

A user's cache key is ``Rails.cache.write(user_id, ...)``'s: ``"1"``, behind the
store's namespace (``NS:1``); ``--key-template`` covers apps that wrote another key
(``chat_history_{id}``).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol
from urllib.parse import quote_plus, unquote_plus

import redis

#: Rails FileStore: two levels of 3-hex-digit folders from the key's adler32.
_FILESTORE_DIR = re.compile(r"^[0-9A-F]{3}$")


class Source(Protocol):
    #: For the report and the checkpoint name.
    description: str

    def names(self) -> Iterator[str]:
        """Every candidate key, lazily."""

    def total(self) -> int | None:
        """How many names :meth:`names` will give, if known (for the progress bar)."""

    def read_many(self, names: Sequence[str]) -> list[bytes | None | Exception]:
        """The stored bytes of each name: None when it is gone, an exception when it
        cannot be read as a value (a Redis key of another type)."""

    def user_id(self, name: str) -> int | None:
        """The user whose cache a name holds, or None when it is no user's key."""

    def name_for(self, user_id: int) -> str:
        """The name of a user's key (to read the other side of a conversation)."""


class KeyTemplate:
    """``[NS:]<template>`` where the template holds ``{id}`` once."""

    def __init__(self, template: str = "{id}", namespace: str | None = None) -> None:
        if template.count("{id}") != 1:
            raise ValueError("the key template must hold {id} exactly once")
        self.full = f"{namespace}:{template}" if namespace else template
        before, after = self.full.split("{id}")
        self._before, self._after = before, after
        self._regex = re.compile(re.escape(before) + r"([1-9][0-9]{0,15})" + re.escape(after))

    def key(self, user_id: int) -> str:
        return f"{self._before}{user_id}{self._after}"

    def user_id(self, key: str) -> int | None:
        match = self._regex.fullmatch(key)
        return int(match.group(1)) if match else None

    def pattern(self) -> str:
        """A Redis SCAN pattern for every key the template can make."""
        escape = re.compile(r"([*?\[\]\\])")
        return escape.sub(r"\\\1", self._before) + "*" + escape.sub(r"\\\1", self._after)


def _name(raw: bytes) -> str:
    # Redis keys are bytes; keep any that are not UTF-8 round-trippable.
    return raw.decode("utf-8", "surrogateescape")


def _raw(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class RedisSource:
    def __init__(
        self,
        client: redis.Redis,
        template: KeyTemplate,
        pattern: str | None = None,
        user_ids: Iterable[int] | None = None,
        description: str = "redis",
        scan_count: int = 1000,
    ) -> None:
        self.client = client  # returns bytes
        self.template = template
        #: Keys found by the template's own pattern that are no user's key are not
        #: read, only counted here; with an explicit --keys pattern each is reported.
        self.explicit = pattern is not None
        self.ignored = 0
        self.pattern = pattern or template.pattern()
        self.user_ids = list(user_ids) if user_ids is not None else None
        self.description = description
        self.scan_count = scan_count

    def names(self) -> Iterator[str]:
        if self.user_ids is not None:
            for uid in self.user_ids:
                yield self.template.key(uid)
            return
        for raw in self.client.scan_iter(match=self.pattern, count=self.scan_count):
            name = _name(raw)
            if not self.explicit and self.template.user_id(name) is None:
                self.ignored += 1
                continue
            yield name

    def total(self) -> int | None:
        if self.user_ids is not None:
            return len(self.user_ids)
        return int(self.client.dbsize())  # an upper bound when the pattern is narrower

    def read_many(self, names: Sequence[str]) -> list[bytes | None | Exception]:
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(_raw(name))
        return list(pipe.execute(raise_on_error=False))

    def user_id(self, name: str) -> int | None:
        return self.template.user_id(name)

    def name_for(self, user_id: int) -> str:
        return self.template.key(user_id)


def filestore_path(key: str) -> str:
    """Where Rails' FileStore keeps ``key`` (3.x-7.x ``normalize_key``/``key_file_path``)."""
    fname = quote_plus(key, safe="*-._")  # URI.encode_www_form_component
    hashed = zlib.adler32(fname.encode("ascii"))
    hashed, dir_1 = divmod(hashed, 0x1000)
    dir_2 = hashed % 0x1000
    parts = [fname[i : i + 228] for i in range(0, len(fname), 228)]
    return os.path.join(f"{dir_1:03X}", f"{dir_2:03X}", *parts)


class FileStoreSource:
    """A Rails FileStore directory (``tmp/cache``); names are paths relative to it."""

    def __init__(self, root: str, template: KeyTemplate) -> None:
        self.root = os.path.abspath(root)
        self.template = template
        self.description = f"filestore {self.root}"

    def names(self) -> Iterator[str]:
        for top in sorted(os.listdir(self.root)):
            if not _FILESTORE_DIR.match(top) or not os.path.isdir(os.path.join(self.root, top)):
                continue  # Rails' own tmp files and anything else left in the folder
            for folder, dirs, files in os.walk(os.path.join(self.root, top)):
                dirs.sort()
                rel = os.path.relpath(folder, self.root)
                if rel.count(os.sep) < 1:
                    continue
                for name in sorted(files):
                    yield os.path.join(rel, name)

    def total(self) -> int | None:
        return sum(1 for _ in self.names())

    def read_many(self, names: Sequence[str]) -> list[bytes | None | Exception]:
        out: list[bytes | None | Exception] = []
        for name in names:
            try:
                with open(os.path.join(self.root, name), "rb") as f:
                    out.append(f.read())
            except FileNotFoundError:
                out.append(None)
            except OSError as exc:
                out.append(exc)
        return out

    def user_id(self, name: str) -> int | None:
        parts = name.split(os.sep)
        if len(parts) < 3:
            return None
        return self.template.user_id(unquote_plus("".join(parts[2:])))

    def name_for(self, user_id: int) -> str:
        return filestore_path(self.template.key(user_id))
