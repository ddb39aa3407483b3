"""Delivery guarantees under injected latency: two real app instances on one real Redis,
one of them behind a proxy that delays everything Redis says to it, and real websocket
clients that disconnect and reconnect with the highest message id they have seen.

A slow instance allocates an id, then (a round trip later) stores and publishes it;
meanwhile the fast instance allocates a higher id and publishes it first. A client that
saw the higher id and reconnects with it as its position must still get the lower one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from helpers import Client, DemoServer, csrf_session, free_port, http_json, login_cookie, wait_for
from latency import DelayProxy

from flask_chat.embedded import RedisServer


class Pair:
    """A fast instance straight on Redis and a slow one behind a :class:`DelayProxy`."""

    def __init__(self, **settings: Any) -> None:
        self.redis_server = RedisServer(port=free_port())
        self.redis_url = self.redis_server.start()
        self.redis = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.proxy = DelayProxy("127.0.0.1", int(self.redis_server.port or 0))
        self.fast = DemoServer(self.redis_url, **settings).start()
        self.slow = DemoServer(self.proxy.url, **settings).start()
        self.clients: list[Client] = []

    def connect(self, server: DemoServer, name: str, query: str = "") -> Client:
        client = Client(server.port, login_cookie(server.port, name), query)
        self.clients.append(client)
        client.wait_type("hello")
        client.wait_type("online")
        return client

    def last_id(self) -> tuple[str | None, str | None]:
        """The id allocator's state, read straight from Redis."""
        ms, seq = self.redis.hmget("chat:ids", ["ms", "seq"])
        return ms, seq

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for server in (self.fast, self.slow):
            server.stop()
        self.proxy.close()
        self.redis.close()
        self.redis_server.stop()


@pytest.fixture
def pair() -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def make(**settings: Any) -> Pair:
        one = Pair(**settings)
        made.append(one)
        return one

    yield make
    for one in made:
        one.close()


def message_ids(client: Client) -> list[str]:
    return [f["id"] for f in client.of_type("message")]


@pytest.mark.parametrize("to", ["2_User", "5_Group"])
def test_a_lower_id_published_after_the_position_is_replayed(
    pair: Callable[..., Pair], to: str
) -> None:
    """alice's send through the slow instance gets its id first and is published last;
    bob, who saw carol's later message and reconnects with it, still gets alice's."""
    p = pair()
    bob = p.connect(p.fast, "bob")
    carol = p.connect(p.fast, "carol")
    cookie, csrf = csrf_session(p.slow.port, "alice")
    before = p.last_id()
    p.proxy.down = 1.0  # every reply from Redis to the slow instance comes a second late

    result: dict[str, Any] = {}

    def alice_sends() -> None:
        result["answer"] = http_json(
            p.slow.port, "POST", "/chats/send_message",
            {"to": to, "message_text": "slow and low"}, cookie, csrf,
        )

    sender = threading.Thread(target=alice_sends)
    sender.start()
    # Alice's id is allocated (the allocator moved) but her instance has not heard yet.
    wait_for(lambda: p.last_id() != before, what="alice's id to be allocated")
    carol.send({"type": "send", "to": to, "message_text": "fast and high", "ref": "c"})
    high = carol.wait_type("ack", ref="c")["message"]["id"]
    bob.wait_type("message", id=high)
    bob.close()
    p.proxy.down = 0.0  # the reply already held still comes late; the rest need not
    sender.join(timeout=30)
    status, low = result["answer"]
    assert status == 201, low
    assert low["id"] < high, "the scenario: alice's id is the lower one"
    assert low["id"] not in message_ids(bob), "the scenario: bob left before it came"

    again = p.connect(p.fast, "bob", f"?after={high}")
    done = again.wait_type("catchup")
    assert done["recovered"] is True
    assert low["id"] in message_ids(again), "catch-up missed a message below the position"
    # Anything else it replays is a duplicate of what bob had (a client drops those).
    assert set(message_ids(again)) <= {low["id"], high}
