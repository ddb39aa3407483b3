"""How long after kill -9 of an instance its users are announced offline elsewhere.

    .venv/bin/python benchmarks/presence_offline.py [--rounds 12] [--ttl 3]

Starts a real redis-server and two demo instances (``examples/serve.py`` on gevent)
with ``CHAT_PRESENCE_TTL=<ttl>``. Bob stays connected to the survivor. Each round starts
a fresh doomed instance, connects alice to it, waits a random part of the TTL (so the
kill lands anywhere in the renewal cycle), kills it with SIGKILL and times how long
until bob's websocket gets ``presence`` offline for alice. Prints min, median and max
lag, also as a fraction of the TTL (the documented promise: within the TTL).
Needs ``websocket-client`` (installed with ``flask-chat[test]``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

import websocket

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

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


def start(redis_url: str, ttl: float) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(
        os.environ,
        CHAT_REDIS_URL=redis_url,
        PORT=str(port),
        QUIET="1",
        CHAT_PRESENCE_TTL=str(ttl),
        # One key for both instances: a session cookie made by one must log in on the
        # other (the demo makes a random key per process otherwise).
        SECRET_KEY="presence-offline-benchmark",
        CHAT_DATABASE_URL=f"sqlite:///{tempfile.mkdtemp(prefix='flask-chat-bench-')}/chat.db",
    )
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "serve.py")],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return proc, port


def connect(port: int, name: str) -> websocket.WebSocket:
    # The demo's login form wants its CSRF token: GET it, then POST it back.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/login")
    resp = conn.getresponse()
    match = re.search(r'name="csrf_token" value="([^"]+)"', resp.read().decode())
    assert match, "no CSRF token in the login form"
    cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]
    conn.request(
        "POST", "/login", body=urlencode({"username": name, "csrf_token": match[1]}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    resp = conn.getresponse()
    resp.read()
    cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]
    conn.close()
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/chats/ws", cookie=cookie, timeout=30)
    while json.loads(ws.recv())["type"] != "online":
        pass
    return ws


def wait_presence(ws: websocket.WebSocket, user_id: int, online: bool) -> None:
    while True:
        frame = json.loads(ws.recv())
        if frame.get("type") == "presence" and user_id in frame["online" if online else "offline"]:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--ttl", type=float, default=3.0)
    args = parser.parse_args()
    server = RedisServer(port=free_port())
    url = server.start()
    survivor, survivor_port = start(url, args.ttl)
    lags = []
    try:
        bob = connect(survivor_port, "bob")
        for _ in range(args.rounds):
            doomed, port = start(url, args.ttl)
            alice = connect(port, "alice")
            wait_presence(bob, 1, True)
            # A random point in the renewal cycle; this sleep is the experiment itself.
            time.sleep(random.uniform(0, args.ttl))
            doomed.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            doomed.wait()
            wait_presence(bob, 1, False)
            lags.append(time.monotonic() - killed)
            alice.shutdown()  # type: ignore[no-untyped-call]
        bob.close()
    finally:
        survivor.terminate()
        survivor.wait(timeout=20)
        server.stop()
    print(
        f"offline after kill -9, CHAT_PRESENCE_TTL={args.ttl:g} s, {len(lags)} rounds: "
        f"min={min(lags):.2f} s median={statistics.median(lags):.2f} s max={max(lags):.2f} s "
        f"(max {max(lags) / args.ttl:.2f} x TTL)"
    )


if __name__ == "__main__":
    main()
