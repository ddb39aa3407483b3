"""The bridge's Redis keys and channels, built from flask-chat's key prefix.

Layout (``chat`` is ``CHAT_KEY_PREFIX``; ``{p:<sid>}`` is a Redis Cluster hash tag, so
the keys of one polling session live in one slot and its Lua scripts are legal on a
cluster)::

    chat:jug:sid:<sid>            STRING a socket.io handshake not yet used (60 s)
    chat:jug:{p:<sid>}            HASH   a polling session: user, transport, the wake
                                         channel of the instance holding its
                                         subscriptions, last activity, queued bytes
    chat:jug:{p:<sid>}:q          LIST   packets waiting for the client's next poll
    chat:jug:{p:<sid>}:in         LIST   packets the client POSTed, for the holder
    chat:jug:{p:<sid>}:w          STRING the wake channel of the instance where a poll
                                         of the session waits (expires with the poll)

Pub/sub::

    chat:jug:wake:<instance id>   one per instance: "p:<sid>" wakes a poll waiting
                                  there, "i:<sid>" says a session it holds has input

The roster (``roster.py``) and the translator lock (``extension.py``, ``cli.py``) build
theirs next to their code, under the same ``chat:jug:`` prefix.
"""

from __future__ import annotations


class BridgeKeys:
    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}:jug"

    def handshake(self, sid: str) -> str:
        return f"{self.prefix}:sid:{sid}"

    def poll_session(self, sid: str) -> str:
        return f"{self.prefix}:{{p:{sid}}}"

    def poll_queue(self, sid: str) -> str:
        return f"{self.poll_session(sid)}:q"

    def poll_inbox(self, sid: str) -> str:
        return f"{self.poll_session(sid)}:in"

    def poll_waiter(self, sid: str) -> str:
        return f"{self.poll_session(sid)}:w"

    def poll_keys(self, sid: str) -> list[str]:
        """A session's KEYS, in the order the polling scripts declare them."""
        return [self.poll_session(sid), self.poll_queue(sid), self.poll_inbox(sid),
                self.poll_waiter(sid)]

    def wake_channel(self, instance_id: str) -> str:
        return f"{self.prefix}:wake:{instance_id}"
