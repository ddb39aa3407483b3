"""CSRF protection for flask-chat's state-changing routes.

A random token lives in the host app's session; the template helper puts it into the
bootstrap data as ``csrf_token`` and clients send it back in an ``X-CSRF-Token``
header (HTML form posts may carry it as a ``csrf_token`` field instead). A cross-site
page cannot read the token, so it cannot forge a send.
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

from .errors import Forbidden

SESSION_KEY = "_flask_chat_csrf"
HEADER = "X-CSRF-Token"
FORM_FIELD = "csrf_token"


def get_token() -> str:
    """The session's token, created on first use."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def check_request() -> None:
    expected = session.get(SESSION_KEY)
    given = request.headers.get(HEADER)
    if given is None and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        given = request.form.get(FORM_FIELD)
    if (
        not isinstance(expected, str)
        or not given
        or not hmac.compare_digest(expected.encode(), given.encode())
    ):
        raise Forbidden(
            f"Missing or wrong CSRF token: send the bootstrap data's csrf_token in the "
            f"{HEADER} header.",
            code="csrf_failed",
        )
