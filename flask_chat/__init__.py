"""flask-chat: real-time one-to-one and group chat for Flask apps."""

from .directory import GroupInfo, UserInfo
from .errors import (
    ChatError,
    ConfigurationError,
    Forbidden,
    NotAuthenticated,
    NotFound,
    ValidationError,
)
from .extension import Chat
from .messaging import Message
from .signals import cache_cleared, message_sent

__version__ = "0.1.0.dev0"

__all__ = [
    "Chat",
    "ChatError",
    "ConfigurationError",
    "Forbidden",
    "GroupInfo",
    "Message",
    "NotAuthenticated",
    "NotFound",
    "UserInfo",
    "ValidationError",
    "cache_cleared",
    "message_sent",
]
