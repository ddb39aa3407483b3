"""socket.io 0.8 xhr-polling through the bridge: deliveries a second and latency.

    .venv/bin/python benchmarks/polling.py                     # 50 clients, 2,000 messages
    .venv/bin/python benchmarks/polling.py --clients 20 --messages 500

Starts a redis-server and two demo instances (``examples/serve.py``, the bridge on),
then ``--clients`` raw xhr-polling clients (threads), each alternating its polls
between the two instances, subscribed to one legacy channel. Publishes ``--messages``
messages on ``juggernaut`` (as Rails does), ``--rate`` a second (0: as fast as
possible), and reports the deliveries a second while the run lasted and the latency of
each delivery (publish to poll answer). Everything runs on this machine: the clients'
threads compete with the servers for the cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import sys
import threading
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from helpers import DemoServer  # noqa: E402
from legacy import sio_decode_payload, sio_handshake  # noqa: E402

from flask_chat.embedded import RedisServer  # noqa: E402

CHANNEL = "channel_bench"


def request(port: int, method: str, path: str, body: str | None = None) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        text = resp.read().decode()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {text}")
        return text
    finally:
        conn.close()


class Poller(threading.Thread):
    def __init__(self, ports: list[int], expected: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.expected = expected
        self.deadline = deadline
        self.sid = sio_handshake(ports[0])
        self.path = f"/socket.io/1/xhr-polling/{self.sid}"
        self.latencies: list[float] = []
        self.polls = 0
        assert request(ports[1], "GET", self.path) == "1::"
        subscribe = "3:::" + json.dumps({"type": "subscribe", "channel": CHANNEL})
        request(ports[0], "POST", self.path, subscribe)

    def run(self) -> None:
        while len(self.latencies) < self.expected and time.monotonic() < self.deadline:
            text = request(self.ports[self.polls % 2], "GET", f"{self.path}?t={self.polls}")
            self.polls += 1
            now = time.time()
            for packet in sio_decode_payload(text):
                if packet.startswith("3:::"):
                    self.latencies.append(now - json.loads(packet[4:])["data"]["at"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0, help="messages a second (0: max)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    with RedisServer(binary=shutil.which("redis-server")) as server:
        key = secrets.token_hex(16)
        instances = [DemoServer(server.url, SECRET_KEY=key) for _ in range(2)]
        try:
            for instance in instances:
                instance.start()
            ports = [i.port for i in instances]
            for port in ports:  # a first poll starts each instance's hub
                request(port, "GET", f"/socket.io/1/xhr-polling/{sio_handshake(port)}")
            deadline = time.monotonic() + args.timeout
            pollers = [Poller(ports, args.messages, deadline) for _ in range(args.clients)]
            client = redis.Redis.from_url(server.url)
            while int(client.pubsub_numsub("juggernaut")[0][1]) < 2:
                time.sleep(0.05)
            time.sleep(1)  # the subscribes above were POSTed: let the holders take them
            for poller in pollers:
                poller.start()
            started = time.monotonic()
            for n in range(args.messages):
                doc = {"channels": [CHANNEL], "data": {"n": n, "at": time.time()}}
                client.publish("juggernaut", json.dumps(doc))
                if args.rate:
                    time.sleep(max(0.0, started + (n + 1) / args.rate - time.monotonic()))
            for poller in pollers:
                poller.join(max(0.0, deadline - time.monotonic()))
            elapsed = time.monotonic() - started
            latencies = sorted(x for p in pollers for x in p.latencies)
            delivered = len(latencies)
            polls = sum(p.polls for p in pollers)
            print(f"clients {args.clients}, messages {args.messages}, "
                  f"rate {args.rate or 'max'}/s, two instances")
            print(f"delivered {delivered} of {args.clients * args.messages} in {elapsed:.1f} s: "
                  f"{delivered / elapsed:,.0f} deliveries/s over {polls} polls "
                  f"({delivered / max(polls, 1):.1f} messages a poll)")
            if latencies:
                p99 = latencies[int(0.99 * (len(latencies) - 1))]
                print(f"latency: median {statistics.median(latencies) * 1000:.1f} ms, "
                      f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
            client.close()
        finally:
            for instance in instances:
                if instance.proc is not None and instance.proc.poll() is None:
                    instance.proc.kill()
                    instance.proc.wait(20)
                shutil.rmtree(instance.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
