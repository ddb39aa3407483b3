"""Who is who: the host app's users and groups, as flask-chat sees them.

The host app answers through the hooks on :class:`flask_chat.Chat`; this module holds
the value types and turns what a hook returns into them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .conversations import ConversationKey, valid_user_id
from .errors import ConfigurationError


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "image": self.image}


@dataclass(frozen=True)
class GroupInfo:
    id: int
    name: str
    members: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "members": list(self.members)}


UserLike = UserInfo | Mapping[str, Any] | None
GroupLike = GroupInfo | Mapping[str, Any] | None

CurrentUserLoader = Callable[[], Any]
UserLoader = Callable[[int], UserLike]
GroupLoader = Callable[[int], GroupLike]
UserGroupsLoader = Callable[[int], Iterable[int]]
PermissionHandler = Callable[[int, ConversationKey], bool]


def as_user(user_id: int, value: UserLike) -> UserInfo | None:
    if value is None or isinstance(value, UserInfo):
        return value
    if isinstance(value, Mapping):
        return UserInfo(
            id=user_id,
            name=str(value.get("name") or user_id),
            image=value.get("image"),
        )
    raise ConfigurationError(
        "A user_loader must return a UserInfo, a mapping with 'name' and 'image', or "
        f"None; it returned {type(value).__name__}."
    )


def as_group(group_id: int, value: GroupLike) -> GroupInfo | None:
    if value is None or isinstance(value, GroupInfo):
        return value
    if isinstance(value, Mapping):
        return GroupInfo(
            id=group_id,
            name=str(value.get("name") or group_id),
            members=tuple(int(m) for m in value.get("members", ())),
        )
    raise ConfigurationError(
        "A group_loader must return a GroupInfo, a mapping with 'name' and 'members', "
        f"or None; it returned {type(value).__name__}."
    )


def as_user_id(value: Any) -> int | None:
    """Turn what a current-user hook returned (an id, a string id, a user) into an id."""
    if value is None:
        return None
    if hasattr(value, "get_id") and not isinstance(value, (int, str)):
        if not getattr(value, "is_authenticated", True):
            return None
        value = value.get_id()
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if valid_user_id(value) else None


def flask_login_current_user() -> Any:
    """Flask-Login's ``current_user`` if Flask-Login is installed and set up, else None."""
    try:
        from flask_login import current_user
    except ImportError:
        return None
    from flask import current_app

    if getattr(current_app, "login_manager", None) is None:
        return None
    return current_user._get_current_object()


def flask_login_user(user_id: int) -> UserInfo | None:
    """Look a user up through Flask-Login's ``user_loader``, when the app has one."""
    from flask import current_app

    manager = getattr(current_app, "login_manager", None)
    callback = getattr(manager, "_user_callback", None)
    if callback is None:
        raise ConfigurationError(
            "flask-chat cannot tell whether a user exists: register one with "
            "@chat.user_loader (returning {'name': ..., 'image': ...} or None)."
        )
    user = callback(str(user_id))
    if user is None:
        return None
    name = getattr(user, "name", None) or getattr(user, "username", None) or str(user_id)
    image = getattr(user, "image_url", None) or getattr(user, "avatar_url", None)
    return UserInfo(id=user_id, name=str(name), image=image)
