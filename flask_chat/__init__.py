"""flask-chat: real-time one-to-one and group chat for Flask apps."""

from .directory import GroupInfo
from .directory import UserInfo
from .errors import ChatError
from .errors import ConfigurationError
from .errors import Forbidden
from .errors import NotAuthenticated
from .errors import NotFound
from .errors import ValidationError
from .extension import Chat
from .messaging import Message
from .signals import cache_cleared
from .signals import message_sent

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
