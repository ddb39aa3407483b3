"""Who may write to and read which conversation: the one home of these rules, for the
HTTP routes, the websocket frames and the Python API alike."""

from __future__ import annotations

from .conversations import ConversationKey
from .directory import GroupInfo
from .errors import Forbidden, NotFound, ValidationError
from .hooks import HostHooks


def check_target(hooks: HostHooks, sender_id: int, to: ConversationKey) -> GroupInfo | None:
    """Check that ``sender_id`` may write to ``to``; returns the group for a group key."""
    if not to.is_group:
        if to.id == sender_id:
            raise ValidationError(
                "You cannot send a message to yourself.", code="invalid_recipient", field="to"
            )
        if hooks.get_user(to.id) is None:
            raise NotFound(f"There is no user {to.id}.", code="unknown_recipient", field="to")
        if not hooks.can_message(sender_id, to):
            raise Forbidden(f"You may not message user {to.id}.", field="to")
        return None
    group = hooks.get_group(to.id)
    if group is None:
        raise NotFound(f"There is no group {to.id}.", code="unknown_recipient", field="to")
    if not hooks.can_message(sender_id, to, group):
        if hooks.permission_handler is not None:
            raise Forbidden(f"You may not message group {to.id}.", field="to")
        raise Forbidden(f"You are not a member of group {to.id}.", code="not_a_member", field="to")
    return group


def check_can_open(hooks: HostHooks, user_id: int, conversation: ConversationKey) -> None:
    """May ``user_id`` read (or open a window on) ``conversation``?"""
    if conversation.is_group:
        group = hooks.get_group(conversation.id)
        if group is None:
            raise NotFound(f"There is no group {conversation.id}.", code="unknown_recipient")
        if user_id not in group.members:
            raise Forbidden(
                f"You are not a member of group {conversation.id}.", code="not_a_member"
            )
    elif hooks.get_user(conversation.id) is None:
        raise NotFound(f"There is no user {conversation.id}.", code="unknown_recipient")
