"""The exceptions flask-chat raises.

Every error is a :class:`ChatError` carrying a stable machine-readable ``code``, the HTTP
``status`` it maps to at the HTTP edge, and optionally the offending ``field``. Codes are
part of the public contract (see ``docs/api.md``); messages are for people and may change.
"""

from __future__ import annotations

from typing import Any


class ChatError(Exception):
    """Base class of every flask-chat error."""

    code: str = "chat_error"
    status: int = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class ValidationError(ChatError):
    """The input is malformed: a missing or mistyped field, a bad key, a bad value."""

    code = "invalid_input"
    status = 400


class NotAuthenticated(ChatError):
    """No user is logged in."""

    code = "not_authenticated"
    status = 401


class Forbidden(ChatError):
    """The user is known but may not do this (not a member, refused by the host app)."""

    code = "forbidden"
    status = 403


class NotFound(ChatError):
    """The user, group or conversation does not exist."""

    code = "not_found"
    status = 404


class ConfigurationError(ChatError, RuntimeError):
    """The app's ``CHAT_*`` settings are wrong or incomplete; raised by ``init_app``."""

    code = "configuration_error"
    status = 500


class Unavailable(ChatError):
    """A service flask-chat needs (Redis, the database) cannot be reached right now.
    Nothing was stored; the client may retry (sends: with the same idempotency key)."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str = "The chat service is unavailable; try again soon.",
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
