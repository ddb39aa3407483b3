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
    chat:{u:1}:floor              STRING highest message id that left user 1's cache
                                         (trimmed or cleared): catch-up below it is lost
    chat:{u:1}:spill              HASH   "<conversation>|<id>" -> message JSON: messages trimmed
                                         off the window and not yet persisted to SQL
    chat:{u:1}:conns              ZSET   user 1's live connection ids, scored by expiry
    chat:{u:1}:reads              HASH   conversation key -> last message id read
    chat:{u:1}:rate               HASH   send rate limiter state (token bucket)
    chat:{u:1}:gen                STRING websocket token generation: logout bumps it, so
                                         every token issued before is refused
    chat:{u:1}:published          ZSET   "<conversation>|<id>" of messages published to
                                         user 1, scored by when (server ms.µs): catch-up
                                         finds late publishes of lower ids with it
    chat:{u:1}:idem:<key>         STRING a send's idempotency record (the message it
                                         stood for), kept CHAT_IDEMPOTENCY_WINDOW seconds
    chat:{g:5}:convs / :idx:5_Group / :msg:5_Group / :floor / :published
                                         group 5's recent messages, shared by all members
    chat:{g:5}:aud                HASH   message id -> audience snapshot number: who holds
                                         it in their view (CHAT_GROUP_MEMBER_CACHES "view")
    chat:{g:5}:snap               HASH   snapshot number -> ",<user>,<user>,": the sender and
                                         the members online when it was sent; "c<n>" ->
                                         messages on it; "last", "seq"
    chat:{g:5}:refs               HASH   message id -> holders that have not let go of it
    chat:{g:5}:kept / :keptidx    HASH / ZSET  messages trimmed off the group's window
                                         that some member's view still holds
    chat:{g:5}:let                HASH   "<user>|<id>" -> "x" (let go: cleared, or persisted
                                         from the spill) or "s" (in the user's spill)
    chat:{g:5}:first              HASH   user -> score of the view's conversation, kept
                                         when a clear leaves it non-empty
    chat:views                    ZSET   "<user>:<group>" (score 0): users who may hold a
                                         view of a group (lexical ranges find a user's)
    chat:online                   ZSET   online user ids, scored by presence expiry
    chat:persist                  LIST   write-behind queue of sent messages for SQL
    {chat:persist}:proc:<token>   LIST   the batch one drain took off the queue, until its
                                         SQL commit (hash tag: the queue's slot)
    {chat:persist}:leases         ZSET   drain token -> lease expiry (ms) of its batch
    chat:clearing                 ZSET   "<user id>:<token>" -> time: a clear that is
                                         dropping the user from chat:users (intent marker)
    chat:deadletter               HASH   records that could not be persisted (bad data):
                                         "<source>:..." -> the record, its error, when

Pub/sub channels (one subscriber connection per process listens to what it needs;
on Redis Cluster, one per master, with sharded pub/sub)::

    chat:ch:{u:1}                 events for user 1 (all their connections)
    chat:ch:{g:5}                 events for group 5's online members

A channel carries its owner's hash tag, so it lives in the slot of the owner's keys:
the script that stores a message publishes it on the owner's channel in the same step,
which Redis Cluster allows only for a shard channel of the script's own slot.
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
            self.floor(user_id),
            self.spill(user_id),
        ]

    def floor(self, user_id: int) -> str:
        return f"{self._user(user_id)}:floor"

    def spill(self, user_id: int) -> str:
        return f"{self._user(user_id)}:spill"

    def persist_queue(self) -> str:
        return f"{self.prefix}:persist"

    def persist_processing(self, token: str) -> str:
        # The tag is the queue's whole key, so this hashes to the queue's slot.
        return f"{{{self.persist_queue()}}}:proc:{token}"

    def persist_leases(self) -> str:
        return f"{{{self.persist_queue()}}}:leases"

    def clearing(self) -> str:
        return f"{self.prefix}:clearing"

    def dead_letters(self) -> str:
        return f"{self.prefix}:deadletter"

    def sweep_job_id(self) -> str:
        return f"{self.prefix}-sweep"  # RQ job ids allow letters, digits, "_" and "-"

    def rq_queue(self) -> str:
        return f"{self.prefix}-persist"

    def connections(self, user_id: int) -> str:
        return f"{self._user(user_id)}:conns"

    def reads(self, user_id: int) -> str:
        return f"{self._user(user_id)}:reads"

    def rate(self, user_id: int) -> str:
        return f"{self._user(user_id)}:rate"

    def token_generation(self, user_id: int) -> str:
        return f"{self._user(user_id)}:gen"

    def published(self, user_id: int) -> str:
        return f"{self._user(user_id)}:published"

    def idempotency(self, user_id: int, key: str) -> str:
        """A send's idempotency record; ``key`` is the client's, already validated (a
        restricted charset, so it cannot break the hash tag or a SCAN pattern)."""
        return f"{self._user(user_id)}:idem:{key}"

    def _group(self, group_id: int) -> str:
        return f"{self.prefix}:{{g:{group_id}}}"

    def group_index(self, group_id: int) -> str:
        return f"{self._group(group_id)}:idx:{group_id}_Group"

    def group_bodies(self, group_id: int) -> str:
        return f"{self._group(group_id)}:msg:{group_id}_Group"

    def group_conversation_keys(self, group_id: int) -> list[str]:
        """KEYS of a group's shared store, laid out like one user's conversation."""
        return [
            f"{self._group(group_id)}:convs",
            self.group_index(group_id),
            self.group_bodies(group_id),
            self.group_floor(group_id),
            f"{self._group(group_id)}:spill",  # declared for the script; never written
        ]

    def group_view_keys(self, group_id: int) -> list[str]:
        """KEYS of the scripts over a group's store and its members' views: the six of
        :meth:`group_conversation_keys` and the publish log, then the view's."""
        g = self._group(group_id)
        return self.group_conversation_keys(group_id) + [
            self.group_published(group_id),
            f"{g}:aud", f"{g}:refs", f"{g}:kept", f"{g}:keptidx", f"{g}:snap", f"{g}:let",
            f"{g}:first",
        ]

    def views(self) -> str:
        return f"{self.prefix}:views"

    def group_floor(self, group_id: int) -> str:
        return f"{self._group(group_id)}:floor"

    def group_published(self, group_id: int) -> str:
        return f"{self._group(group_id)}:published"

    def online(self) -> str:
        return f"{self.prefix}:online"

    def user_channel(self, user_id: int) -> str:
        return f"{self.prefix}:ch:{{u:{user_id}}}"

    def group_channel(self, group_id: int) -> str:
        return f"{self.prefix}:ch:{{g:{group_id}}}"
