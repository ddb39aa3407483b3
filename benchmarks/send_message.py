"""Time ``POST /chats/send_message``: N sequential requests against a real server.

    .venv/bin/python benchmarks/send_message.py [--requests 1000] [--to 2_User] [--keyed]

Starts a real redis-server and the demo app on gevent (``examples/serve.py``) in a
separate process, logs in as alice over HTTP, then sends one message at a time on one
keep-alive connection and prints the median, p99 and throughput. Also times the same
send through the Python API in this process (no HTTP) for comparison. ``--keyed`` gives
every send its own idempotency key (``Idempotency-Key`` header, ``idempotency_key=``), as
``chat.js`` does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples"))

from flask_chat.embedded import RedisServer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * len(ordered))) - 1)]


def report(label: str, samples: list[float], wall: float) -> None:
    ms = [s * 1000 for s in samples]
    print(
        f"{label}: n={len(ms)} median={statistics.median(ms):.2f} ms "
        f"p99={percentile(ms, 99):.2f} ms max={max(ms):.2f} ms "
        f"throughput={len(ms) / wall:.0f}/s"
    )


def bench_http(redis_url: str, requests: int, to: str, keyed: bool) -> None:
    port = free_port()
    env = dict(
        os.environ,
        CHAT_REDIS_URL=redis_url,
        PORT=str(port),
        QUIET="1",
        CHAT_HISTORY_LIMIT="100000",
        CHAT_SEND_RATE="0",  # the per-user rate limit would refuse a benchmark's sends
        CHAT_DATABASE_URL=f"sqlite:///{tempfile.mkdtemp(prefix='flask-chat-bench-')}/chat.db",
    )
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "serve.py")],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The login form carries the session's CSRF token.
        conn.request("GET", "/login")
        resp = conn.getresponse()
        form = resp.read().decode()
        cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]
        found = re.search(r'name="csrf_token" value="([^"]*)"', form)
        login_token = found.group(1) if found else ""
        conn.request(
            "POST",
            "/login",
            body=urlencode({"username": "alice", "csrf_token": login_token}),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
        )
        resp = conn.getresponse()
        resp.read()
        cookie = (resp.getheader("Set-Cookie") or cookie).split(";", 1)[0]
        conn.request("GET", "/", headers={"Cookie": cookie})
        resp = conn.getresponse()
        page = resp.read().decode()
        cookie = (resp.getheader("Set-Cookie") or cookie).split(";", 1)[0]
        token = json.loads(re.search(r'id="flask-chat-bootstrap">(.*?)</script>', page).group(1))[
            "csrf_token"
        ]
        headers = {"Cookie": cookie, "Content-Type": "application/json", "X-CSRF-Token": token}
        for i in range(50):  # warm up
            conn.request(
                "POST",
                "/chats/send_message",
                body=json.dumps({"to": to, "message_text": f"warm {i}"}),
                headers=headers,
            )
            conn.getresponse().read()
        samples = []
        start = time.perf_counter()
        for i in range(requests):
            body = json.dumps({"to": to, "message_text": f"message {i}"})
            t0 = time.perf_counter()
            sent = {**headers, "Idempotency-Key": f"bench-{to}-{i}"} if keyed else headers
            conn.request("POST", "/chats/send_message", body=body, headers=sent)
            resp = conn.getresponse()
            resp.read()
            samples.append(time.perf_counter() - t0)
            if resp.status != 201:
                raise SystemExit(f"unexpected status {resp.status}")
        label = f"HTTP POST /chats/send_message to {to}{' (keyed)' if keyed else ''}"
        report(label, samples, time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(timeout=10)


def bench_api(redis_url: str, requests: int, to: str, keyed: bool) -> None:
    from chat_app import create_app

    app = create_app(
        {
            "CHAT_REDIS_URL": redis_url,
            "CHAT_HISTORY_LIMIT": 100000,
            "CHAT_SEND_RATE": 0,
            "CHAT_DATABASE_URL": f"sqlite:///{tempfile.mkdtemp(prefix='flask-chat-bench-')}/chat.db",
        }
    )
    chat = app.extensions["chat"]
    with app.app_context():
        samples = []
        start = time.perf_counter()
        for i in range(requests):
            t0 = time.perf_counter()
            if keyed:
                chat.send_message(1, to, f"api {i}", idempotency_key=f"api-{to}-{i}")
            else:
                chat.send_message(1, to, f"api {i}")
            samples.append(time.perf_counter() - t0)
        label = f"Python chat.send_message to {to}{' (keyed)' if keyed else ''}"
        report(label, samples, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--to", action="append", help="conversation keys (default 2_User and 5_Group)"
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--keyed", action="store_true", help="an idempotency key per send")
    args = parser.parse_args()
    targets = args.to or ["2_User", "5_Group"]
    server = None
    url = args.redis_url
    if not url:
        server = RedisServer(port=free_port())
        url = server.start()
    try:
        for to in targets:
            bench_http(url, args.requests, to, args.keyed)
            bench_api(url, args.requests, to, args.keyed)
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
