"""The ``CHAT_*`` settings: one table of names, defaults and checks, and the validated
:class:`ChatConfig` that the rest of flask-chat reads (never ``app.config`` itself).

What each setting means is documented in :meth:`flask_chat.Chat.init_app` and
``docs/config.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .embedded import embedded_redis_url
from .errors import ConfigurationError

Check = Callable[[str, Any], Any]


def positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, not {value!r}.")
    return value


def natural(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"{name} must be an integer of at least 0, not {value!r}.")
    return value


def number(minimum: float = 0.0) -> Check:
    def check(name: str, value: Any) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
            raise ConfigurationError(
                f"{name} must be a number of at least {minimum}, not {value!r}."
            )
        return float(value)

    return check


def flag(name: str, value: Any) -> bool:
    return bool(value)


def strict_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {value!r}.")
    return value


def optional(name: str, value: Any) -> Any:
    return value or None


def origins(name: str, value: Any) -> tuple[str, ...]:
    return tuple(value or ())


def url_prefix(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value.endswith("/"):
        raise ConfigurationError(f"{name} must start with '/' and not end with one, not {value!r}.")
    return value


def key_prefix(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(ch in value for ch in "{}* \t\r\n"):
        raise ConfigurationError(
            f"{name} must be a non-empty string without braces, '*' or spaces, not {value!r}."
        )
    return value


def optional_url(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"{name} must be a Redis URL (or None), not {value!r}.")
    return value


def raw(name: str, value: Any) -> Any:
    return value


def group_caches(name: str, value: Any) -> bool | str:
    """``"view"``, else a flag (True: a copy per member; False: the shared store)."""
    if isinstance(value, str) and value.strip().lower() == "view":
        return "view"
    return bool(value)


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    check: Check
    #: The :class:`ChatConfig` field it fills; None for settings read at setup only.
    field: str | None


#: Every setting: its name, its default, how it is checked, where it goes.
SETTINGS: tuple[Setting, ...] = (
    Setting("CHAT_REDIS_URL", None, raw, None),
    Setting("CHAT_REDIS_MAX_CONNECTIONS", 64, positive_int, "redis_max_connections"),
    Setting("CHAT_REDIS_CLUSTER", False, strict_flag, "redis_cluster"),
    Setting("CHAT_REDIS_WAIT_REPLICAS", 0, natural, "wait_replicas"),
    Setting("CHAT_REDIS_WAIT_TIMEOUT_MS", 1000, positive_int, "wait_timeout_ms"),
    Setting("CHAT_RQ_REDIS_URL", None, optional_url, None),
    Setting("CHAT_EMBEDDED_REDIS", None, raw, None),
    Setting("CHAT_URL_PREFIX", "/chats", url_prefix, "url_prefix"),
    Setting("CHAT_KEY_PREFIX", "chat", key_prefix, "key_prefix"),
    Setting("CHAT_MAX_MESSAGE_LENGTH", 2000, positive_int, "max_message_length"),
    Setting("CHAT_HISTORY_LIMIT", 200, positive_int, "history_limit"),
    Setting("CHAT_PAGE_SIZE", 50, positive_int, "page_size"),
    Setting("CHAT_MAX_REQUEST_BYTES", 64 * 1024, positive_int, "max_request_bytes"),
    Setting("CHAT_CSRF_ENABLED", True, flag, "csrf_enabled"),
    Setting("CHAT_SEND_RATE", 10.0, number(), "send_rate"),
    Setting("CHAT_SEND_BURST", 30, positive_int, "send_burst"),
    Setting("CHAT_PING_INTERVAL", 25.0, number(0.1), "ping_interval"),
    Setting("CHAT_PRESENCE_TTL", 30.0, number(0.3), "presence_ttl"),
    Setting("CHAT_PRESENCE_GRACE", 3.0, number(), "presence_grace"),
    Setting("CHAT_WS_ALLOWED_ORIGINS", (), origins, "allowed_origins"),
    Setting("CHAT_WS_TOKEN_MAX_AGE", 3600, positive_int, "token_max_age"),
    Setting("CHAT_WS_MAX_MESSAGE_BYTES", 64 * 1024, positive_int, "max_ws_message"),
    Setting("CHAT_WS_MAX_QUEUE_BYTES", 1024 * 1024, positive_int, "max_ws_queue"),
    Setting("CHAT_WS_MAX_FRAGMENTS", 64, positive_int, "max_ws_fragments"),
    Setting("CHAT_WS_FRAME_RATE", 20.0, number(), "frame_rate"),
    Setting("CHAT_WS_FRAME_BURST", 60, positive_int, "frame_burst"),
    Setting("CHAT_WS_MAX_CONNECTIONS_PER_USER", 32, positive_int, "max_user_connections"),
    Setting("CHAT_CATCHUP_RETENTION", 3600, positive_int, "catchup_retention"),
    Setting("CHAT_CATCHUP_LIMIT", 1000, positive_int, "catchup_limit"),
    Setting("CHAT_METRICS_PATH", "/metrics", optional, "metrics_path"),
    Setting("CHAT_DATABASE_URL", None, raw, None),
    Setting("CHAT_DATABASE_AUTO_UPGRADE", False, flag, "database_auto_upgrade"),
    Setting("CHAT_PERSISTENCE", True, flag, "persistence"),
    Setting("CHAT_SWEEP_INTERVAL", 300, positive_int, "sweep_interval"),
    Setting("CHAT_PERSIST_BATCH", 500, positive_int, "persist_batch"),
    Setting("CHAT_PERSIST_BATCH_USERS", 200, positive_int, "persist_batch_users"),
    Setting("CHAT_API_TOKEN", None, optional, "api_token"),
    Setting("CHAT_GROUP_MEMBER_CACHES", "view", group_caches, "group_member_caches"),
    Setting("CHAT_IDEMPOTENCY_WINDOW", 86400, positive_int, "idempotency_window"),
    Setting("CHAT_SEND_IN_ONE_STEP", True, strict_flag, "send_in_one_step"),
)

#: Every setting's default, by name.
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}


@dataclass(frozen=True)
class ChatConfig:
    """The validated ``CHAT_*`` settings of one app."""

    redis_url: str
    redis_max_connections: int
    redis_cluster: bool
    #: Replicas that must hold a send's writes before it is acknowledged (0: off).
    wait_replicas: int
    wait_timeout_ms: int
    #: RQ's and rq-scheduler's Redis (a plain server: RQ does not run on a cluster).
    rq_redis_url: str
    url_prefix: str
    key_prefix: str
    max_message_length: int
    history_limit: int
    page_size: int
    max_request_bytes: int
    csrf_enabled: bool
    send_rate: float
    send_burst: int
    ping_interval: float
    presence_ttl: float
    #: Seconds a user whose last connection closed stays online (at most 3/4 of the TTL).
    presence_grace: float
    allowed_origins: tuple[str, ...]
    token_max_age: int
    max_ws_message: int
    max_ws_queue: int
    max_ws_fragments: int
    frame_rate: float
    frame_burst: int
    max_user_connections: int
    catchup_retention: int
    catchup_limit: int
    metrics_path: str | None
    #: The history's database; "" means the host's Flask-SQLAlchemy ``db``.
    database_url: str
    database_auto_upgrade: bool
    persistence: bool
    sweep_interval: int
    persist_batch: int
    persist_batch_users: int
    api_token: str | None
    #: "view": each member's cache shows a group's messages from the group's store as a
    #: copy would (the default); True: a copy in each member's cache (the legacy
    #: layout); False: members read the group's shared store (every recent message).
    group_member_caches: bool | str
    idempotency_window: int
    #: On one Redis server, a send is one script call (False: the steps a cluster takes).
    send_in_one_step: bool


def read_config(
    config: Mapping[str, Any],
    *,
    debug: bool,
    default_database_url: str,
    logger: logging.Logger,
) -> ChatConfig:
    """Check every setting of ``config`` (which holds them all, defaults included).

    ``default_database_url``: where history goes without ``CHAT_DATABASE_URL`` ("" for
    the host's Flask-SQLAlchemy ``db``)."""
    values = {s.field: s.check(s.name, config[s.name]) for s in SETTINGS if s.field}
    # Checked first: a misspelt cluster flag should not start an embedded server.
    for s in SETTINGS:
        if s.field is None:
            s.check(s.name, config[s.name])
    clustered = values["redis_cluster"]
    url = config["CHAT_REDIS_URL"]
    if clustered and not url:
        raise ConfigurationError(
            "CHAT_REDIS_CLUSTER needs CHAT_REDIS_URL: the URL of any node of the "
            "cluster (e.g. 'redis://10.0.0.1:6379/0')."
        )
    if not url:
        embedded = config["CHAT_EMBEDDED_REDIS"]
        if not (embedded or (embedded is None and debug)):
            raise ConfigurationError(
                "flask-chat needs Redis: set CHAT_REDIS_URL (e.g. "
                "'redis://localhost:6379/0'), or set CHAT_EMBEDDED_REDIS = True to "
                "start a bundled server for development."
            )
        url, started = embedded_redis_url()
        if started:
            logger.warning(
                "flask-chat: CHAT_REDIS_URL is not set, so an embedded Redis server was "
                "started at %s. Set CHAT_REDIS_URL in production.",
                url,
            )
    rq_url = config["CHAT_RQ_REDIS_URL"]
    if clustered:
        if not rq_url:
            raise ConfigurationError(
                "CHAT_REDIS_CLUSTER needs CHAT_RQ_REDIS_URL: RQ does not run on Redis "
                "Cluster, so its queues need a plain Redis server of their own."
            )
        if rq_url == url:
            raise ConfigurationError(
                "CHAT_RQ_REDIS_URL must name a plain Redis server, not the cluster "
                "of CHAT_REDIS_URL."
            )
    return ChatConfig(
        redis_url=url,
        rq_redis_url=rq_url or url,
        database_url=config["CHAT_DATABASE_URL"] or default_database_url,
        **values,
    )
