"""Persistence throughput and write-behind lag, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/persist.py [--postgres URL] [--users 1000] [--messages 10000]

1. Sweep: fills real Redis caches with MESSAGES messages spread over USERS users, runs
   the sweep (persist, then clear) in this process, and prints messages persisted per
   second and the number of SQL statements it took.
2. Write-behind lag: a real `flask chat worker` drains the write-behind queue while
   messages are sent at a steady rate; prints how long after its send each message was
   in SQL (median, p99, max).

PostgreSQL: --postgres URL, or CHAT_BENCH_POSTGRES_URL (its flask-chat tables are
dropped and recreated). Without one, only SQLite is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from sqlalchemy import create_engine, event, func, select, text

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import jobs_app  # noqa: E402  (a host app where users 1..100,000 exist)

from flask_chat.cache import CacheEntry  # noqa: E402
from flask_chat.embedded import RedisServer  # noqa: E402
from flask_chat.jobs import sweep  # noqa: E402
from flask_chat.models import messages  # noqa: E402


def reset(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "DROP TABLE IF EXISTS chat_message_views, chat_sessions, "
                "chat_messages, flask_chat_alembic_version CASCADE"
            )
        )
    engine.dispose()


def sql_count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(messages)) or 0)
    finally:
        engine.dispose()


def bench_sweep(redis_url: str, db_url: str, users: int, total: int) -> None:
    app = jobs_app.create_app(
        {
            "CHAT_REDIS_URL": redis_url,
            "CHAT_DATABASE_URL": db_url,
            "CHAT_DATABASE_AUTO_UPGRADE": True,
            "CHAT_PERSISTENCE": False,
        }
    )
    chat = app.extensions["chat"]
    with app.app_context():
        state = chat.state
        state.redis.flushdb()
        entries = []
        for n in range(total):
            owner = 1 + n % users
            mid = f"{1700000000000 + n:013d}-0000"
            peer = owner + users
            entries.append(
                CacheEntry(
                    owner,
                    f"{peer}_User",
                    mid,
                    json.dumps(
                        {
                            "message_text": f"message {n}",
                            "type": "sent",
                            "image": None,
                            "id": mid,
                            "sender_id": owner,
                            "sent_at": "2023-11-14T22:13:20.000Z",
                        }
                    ),
                )
            )
            if len(entries) == 5000:
                state.cache.append(entries, score=1)
                entries = []
        state.cache.append(entries, score=1)
        statements = []
        engine = state.history.engine
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        start = time.perf_counter()
        result = sweep()
        elapsed = time.perf_counter() - start
    kind = db_url.split(":", 1)[0]
    print(
        f"sweep on {kind}: {result['written']} messages of {result['users']} users persisted "
        f"and cleared in {elapsed:.2f} s = {result['written'] / elapsed:,.0f} messages/s, "
        f"{len(statements)} SQL statements"
    )


def bench_lag(redis_url: str, db_url: str, rate: int, seconds: float) -> None:
    app = jobs_app.create_app(
        {
            "CHAT_REDIS_URL": redis_url,
            "CHAT_DATABASE_URL": db_url,
            "CHAT_DATABASE_AUTO_UPGRADE": True,
        }
    )
    chat = app.extensions["chat"]
    with app.app_context():
        chat.state.redis.flushdb()
    env = dict(os.environ, CHAT_REDIS_URL=redis_url, CHAT_DATABASE_URL=db_url)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            os.path.join(ROOT, "tests", "jobs_app.py"),
            "chat",
            "worker",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sent_at: list[float] = []
    seen_at: list[float] = []
    done = threading.Event()

    def watch() -> None:
        engine = create_engine(db_url)
        try:
            deadline = time.monotonic() + seconds + 120
            while (not done.is_set() or len(seen_at) < len(sent_at)) and (
                time.monotonic() < deadline
            ):
                with engine.connect() as conn:
                    n = int(conn.scalar(select(func.count()).select_from(messages)) or 0)
                now = time.perf_counter()
                seen_at.extend([now] * (n - len(seen_at)))
                time.sleep(0.005)
        finally:
            engine.dispose()

    watcher = threading.Thread(target=watch)
    try:
        time.sleep(2)  # the worker starts
        watcher.start()
        with app.app_context():
            interval = 1 / rate
            start = time.perf_counter()
            n = 0
            while time.perf_counter() - start < seconds:
                target = start + n * interval
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                chat.send_message(1 + n % 50, f"{51 + n % 50}_User", f"lag {n}")
                sent_at.append(time.perf_counter())
                n += 1
        done.set()
        watcher.join(timeout=seconds + 180)
    finally:
        done.set()
        worker.terminate()
        worker.wait(timeout=30)
    # Messages are persisted in id (= send) order batch by batch, so the k-th row seen
    # is the k-th message sent, to within one batch.
    lags = sorted((b - a) * 1000 for a, b in zip(sent_at, seen_at, strict=False))
    kind = db_url.split(":", 1)[0]
    print(
        f"write-behind lag on {kind} at {rate} msgs/s for {seconds:.0f} s: "
        f"median {statistics.median(lags):.0f} ms, p99 {lags[int(len(lags) * 0.99) - 1]:.0f} ms, "
        f"max {lags[-1]:.0f} ms ({len(seen_at)} of {len(sent_at)} messages in SQL)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("CHAT_BENCH_POSTGRES_URL"))
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=500, help="sends/s for the lag test")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="flask-chat-bench-")
    databases = [f"sqlite:///{tmp}/bench.db"]
    if args.postgres:
        databases.append(args.postgres)
    with RedisServer() as redis_server:
        for url in databases:
            if url.startswith("postgresql"):
                reset(url)
            bench_sweep(redis_server.url, url, args.users, args.messages)
            if url.startswith("postgresql"):
                reset(url)
            else:
                os.remove(f"{tmp}/bench.db")
            bench_lag(redis_server.url, url, args.rate, args.seconds)


if __name__ == "__main__":
    main()
