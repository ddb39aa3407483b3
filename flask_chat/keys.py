"""Every Redis key and channel name flask-chat uses, built in this one module.

Layout (``chat`` is ``CHAT_KEY_PREFIX``; ``{u:1}`` is a Redis Cluster hash tag, so all
keys of one user live in one slot and per-user Lua scripts and transactions are legal
on a cluster)::

    chat:ids                      HASH   last message id allocated (ms, seq)
    chat:users                    SET    ids of users who may have a cache
    chat:{u:1}:convs              ZSET   user 1's conversation keys, scored by first use
    chat:{u:1}:idx:2_User         ZSET   message ids of that conversation (all score 0,
                                         so they sort lexically, which is time order)
    chat:{u:1}:msg:2_User         HASH   message id -> message JSON, as user 1 sees it
    chat:{u:1}:windows            HASH   conversation key -> window state JSON
"""

from __future__ import annotations


class Keys:
    """Builds key names from one prefix; one instance per app."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _user(self, user_id: int) -> str:
        return f"{self.prefix}:{{u:{user_id}}}"

    def ids(self) -> str:
        return f"{self.prefix}:ids"

    def cached_users(self) -> str:
        return f"{self.prefix}:users"

    def conversations(self, user_id: int) -> str:
        return f"{self._user(user_id)}:convs"

    def message_index(self, user_id: int, conversation: str) -> str:
        return f"{self._user(user_id)}:idx:{conversation}"

    def message_bodies(self, user_id: int, conversation: str) -> str:
        return f"{self._user(user_id)}:msg:{conversation}"

    def windows(self, user_id: int) -> str:
        return f"{self._user(user_id)}:windows"

    def conversation_keys(self, user_id: int, conversation: str) -> list[str]:
        """The KEYS a per-conversation script declares, in the order scripts expect."""
        return [
            self.conversations(user_id),
            self.message_index(user_id, conversation),
            self.message_bodies(user_id, conversation),
        ]

    def user_pattern(self) -> str:
        """A SCAN pattern matching every per-user key of this prefix."""
        return f"{self.prefix}:{{u:*}}:*"
