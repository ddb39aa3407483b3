"""The host app's answers: who is logged in, who is who, who may write where.

One :class:`HostHooks` per :class:`flask_chat.Chat` (its decorators fill it in), shared by
every app the extension is registered on. The rest of flask-chat asks the host app only
through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import directory
from .conversations import ConversationKey
from .directory import (
    CurrentUserLoader,
    GroupInfo,
    GroupLoader,
    PermissionHandler,
    UserGroupsLoader,
    UserInfo,
    UserLoader,
)


@dataclass
class HostHooks:
    current_user_loader: CurrentUserLoader = directory.flask_login_current_user
    user_loader: UserLoader | None = None
    group_loader: GroupLoader | None = None
    user_groups_loader: UserGroupsLoader | None = None
    permission_handler: PermissionHandler | None = None
    presence_audience_loader: UserGroupsLoader | None = None

    def current_user_id(self) -> int | None:
        """The logged-in user's id, or None."""
        return directory.as_user_id(self.current_user_loader())

    def get_user(self, user_id: int) -> UserInfo | None:
        if self.user_loader is None:
            return directory.flask_login_user(user_id)
        return directory.as_user(user_id, self.user_loader(user_id))

    def get_group(self, group_id: int) -> GroupInfo | None:
        if self.group_loader is None:
            return None
        return directory.as_group(group_id, self.group_loader(group_id))

    def user_group_ids(self, user_id: int) -> list[int]:
        if self.user_groups_loader is None:
            return []
        return [int(g) for g in self.user_groups_loader(user_id)]

    def can_message(
        self, sender_id: int, to: ConversationKey, group: GroupInfo | None = None
    ) -> bool:
        """May ``sender_id`` write to ``to``? ``group``: the group, if already looked up."""
        if self.permission_handler is not None:
            return bool(self.permission_handler(sender_id, to))
        if to.is_group:
            group = group if group is not None else self.get_group(to.id)
            return group is not None and sender_id in group.members
        return True

    def presence_audience(
        self, user_id: int, conversation_ids: Iterable[str], group_ids: list[int] | None
    ) -> tuple[list[int], list[int]]:
        """Who sees ``user_id`` come and go: (user ids, group ids whose members do).
        ``conversation_ids``: the user's cached conversations (the default audience's
        1:1 partners); ``group_ids``: the user's groups, if already asked for."""
        if self.presence_audience_loader is not None:
            return [int(u) for u in self.presence_audience_loader(user_id)], []
        peers = [int(c.split("_", 1)[0]) for c in conversation_ids if c.endswith("_User")]
        return peers, group_ids if group_ids is not None else self.user_group_ids(user_id)
