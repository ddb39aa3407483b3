"""Legacy import throughput: keys and messages per second, and the memory it takes.

    .venv/bin/python benchmarks/legacy_import.py [--users 10000] [--postgres URL] [--batch 200]

Generates a legacy Rails cache of USERS users in a private redis-server, laid out as
the legacy app left it: one Rails 3.2 ``ActiveSupport::Cache::Entry`` per user (symbol
keys, UTF-8 strings, the history marshalled inside the entry), each user chatting with
both neighbours (both sides cached, the older side's cache cleared once so the copies
overlap only partly) and sitting in a group of ten whose messages every member holds.
Then imports it with the real importer (pairing, ids, one SQL transaction per batch)
into SQLite, and PostgreSQL when --postgres URL (or CHAT_BENCH_POSTGRES_URL) is given
(its flask-chat tables are dropped and recreated). Prints keys/s, message copies/s,
messages stored/s and how much the process grew while importing (it streams: that
growth does not depend on USERS).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

import redis
from sqlalchemy import text

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from flask_chat_migrations.legacy_import import ImportSettings, LegacyImporter  # noqa: E402
from flask_chat_migrations.sources import KeyTemplate, RedisSource  # noqa: E402

from flask_chat import database  # noqa: E402
from flask_chat.embedded import RedisServer  # noqa: E402
from flask_chat.persistence import HistoryStore  # noqa: E402

GROUP_SIZE = 10
PER_CHAT = 10


class Sym(str):
    pass


class MarshalWriter:
    """Just enough of Ruby's Marshal.dump for a legacy history (with symbol links)."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x04\x08")
        self.symbols: dict[str, int] = {}

    def long(self, n: int) -> None:
        if n == 0:
            self.out += b"\x00"
        elif 0 < n < 123:
            self.out += bytes([n + 5])
        else:
            raw = n.to_bytes((n.bit_length() + 7) // 8, "little")
            self.out += bytes([len(raw)]) + raw

    def symbol(self, name: str) -> None:
        if name in self.symbols:
            self.out += b";"
            self.long(self.symbols[name])
            return
        self.symbols[name] = len(self.symbols)
        raw = name.encode()
        self.out += b":"
        self.long(len(raw))
        self.out += raw

    def value(self, v: Any) -> None:
        if v is None:
            self.out += b"0"
        elif isinstance(v, Sym):
            self.symbol(v)
        elif isinstance(v, bytes):
            self.out += b'"'
            self.long(len(v))
            self.out += v
        elif isinstance(v, str):
            raw = v.encode()
            self.out += b'I"'
            self.long(len(raw))
            self.out += raw
            self.out += b"\x06"
            self.symbol("E")
            self.out += b"T"
        elif isinstance(v, float):
            raw = repr(v).encode()
            self.out += b"f"
            self.long(len(raw))
            self.out += raw
        elif isinstance(v, list):
            self.out += b"["
            self.long(len(v))
            for item in v:
                self.value(item)
        elif isinstance(v, dict):
            self.out += b"{"
            self.long(len(v))
            for key, item in v.items():
                self.value(key)
                self.value(item)
        else:
            raise TypeError(type(v))


def dump(value: Any) -> bytes:
    w = MarshalWriter()
    w.value(value)
    return bytes(w.out)


def rails32_entry(history: dict[str, Any]) -> bytes:
    w = MarshalWriter()
    w.out += b"o"
    w.symbol("ActiveSupport::Cache::Entry")
    w.long(4)
    for name, value in (("@compressed", False), ("@expires_in", None),
                        ("@created_at", 1357000000.123456), ("@value", dump(history))):
        w.symbol(name)
        if value is False:
            w.out += b"F"
        else:
            w.value(value)
    return bytes(w.out)


def avatar(uid: int) -> str:
    digits = f"{uid:09d}"
    return f"/system/users/avatars/{digits[:3]}/{digits[3:6]}/{digits[6:]}/thumb/u.png"


def chat_between(a: int, b: int) -> list[tuple[int, str]]:
    return [((a, b)[i % 2], f"message {i} between {a} and {b} " + "x" * (i * 7 % 60))
            for i in range(PER_CHAT)]


def history_of(uid: int, users: int) -> dict[str, Any]:
    def side(chat: list[tuple[int, str]]) -> list[dict[str, Any]]:
        return [{Sym("message_text"): t, Sym("type"): "sent" if s == uid else "received",
                 Sym("image"): avatar(s)} for s, t in chat]

    history: dict[str, Any] = {}
    for peer in (uid - 1, uid + 1):
        if 1 <= peer <= users:
            chat = chat_between(min(uid, peer), max(uid, peer))
            # The lower id's cache was cleared once: it holds only the last 7.
            history[f"{peer}_User"] = {Sym("type"): "User",
                                       Sym("messages"): side(chat[3:] if uid < peer else chat)}
    group = (uid - 1) // GROUP_SIZE + 1
    first = (group - 1) * GROUP_SIZE + 1
    chat = [(first + i % GROUP_SIZE, f"group {group} note {i}") for i in range(PER_CHAT)]
    history[f"{group}_Group"] = {Sym("type"): "Group", Sym("messages"): side(chat)}
    return history


def members(group: int) -> range:
    return range((group - 1) * GROUP_SIZE + 1, group * GROUP_SIZE + 1)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(url: str, client: redis.Redis, users: int, batch: int) -> None:
    engine = database.make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS chat_message_views, chat_sessions, "
                              "chat_messages, flask_chat_alembic_version CASCADE"))
    database.upgrade(engine)
    before = rss_mb()
    source = RedisSource(client, KeyTemplate(), user_ids=range(1, users + 1))
    importer = LegacyImporter(source, HistoryStore(engine), members,
                              ImportSettings(batch_size=batch))
    started = time.perf_counter()
    report = importer.run()
    took = time.perf_counter() - started
    n = report.n
    print(f"{engine.dialect.name}: {report.summary()}")
    print(f"{engine.dialect.name}: {took:.1f} s: {n['keys'] / took:,.0f} keys/s, "
          f"{n['messages_read'] / took:,.0f} message copies/s, "
          f"{n['written'] / took:,.0f} messages stored/s; "
          f"peak RSS {before:.0f} -> {rss_mb():.0f} MB")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--postgres", default=os.environ.get("CHAT_BENCH_POSTGRES_URL"))
    args = parser.parse_args()

    with RedisServer(binary=shutil.which("redis-server")) as server:
        client = redis.Redis.from_url(server.url)
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        size = 0
        for uid in range(1, args.users + 1):
            value = rails32_entry(history_of(uid, args.users))
            size += len(value)
            pipe.set(str(uid), value)
            if uid % 1000 == 0:
                pipe.execute()
        pipe.execute()
        print(f"legacy cache: {args.users} users, {size / 1e6:.1f} MB of Rails 3.2 entries "
              f"(made in {time.perf_counter() - started:.1f} s)")
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{tmp}/bench.db", client, args.users, args.batch)
        if args.postgres:
            run(args.postgres, client, args.users, args.batch)
        client.close()


if __name__ == "__main__":
    main()
