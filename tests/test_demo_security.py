"""The demo's own forms and keys, against the real demo server (``examples/serve.py``):
login and logout need the CSRF token, logout is POST only, and there is no fixed
fallback secret key that would let anyone sign sessions and websocket tokens.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import websocket
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from helpers import (
    ROOT,
    Client,
    DemoServer,
    bootstrap,
    form_token,
    free_port,
    http_json,
    login_cookie,
    port_open,
    wait_for,
)
from itsdangerous import URLSafeTimedSerializer
from rq import Worker

#: Where the demo may read its secret key from: the servers here start without them.
SECRET_KEY_VARIABLES = ("SECRET_KEY", "FLASK_SECRET_KEY")
#: What the demo logs when it made a random key (the launcher says it its own way).
RANDOM_KEY_WARNING = "SECRET_KEY not set: a random key was generated;"
#: The fallback the demo used to sign everything with when no SECRET_KEY was set.
OLD_FIXED_KEY = "demo-only-not-secret"
#: How flask-chat signs websocket tokens (flask_chat/websocket.py).
WS_TOKEN_SALT = "flask-chat-websocket"
#: Where rq-scheduler keeps scheduled jobs (the sweep, once the scheduler registered it).
SCHEDULED = "rq:scheduler:scheduled_jobs"


@pytest.fixture
def start(redis_url: str) -> Iterator[Callable[..., DemoServer]]:
    """Start demo servers with no secret key configured, unless a test gives one."""
    servers: list[DemoServer] = []

    def make(**settings: Any) -> DemoServer:
        server = DemoServer(redis_url, **settings)
        for name in SECRET_KEY_VARIABLES:
            if name not in settings:
                server.env.pop(name, None)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


def request(
    port: int, method: str, path: str, cookie: str = "", form: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """One HTTP request; returns the status, the body and the session cookie after it."""
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        new_cookie = resp.getheader("Set-Cookie")
    finally:
        conn.close()
    return resp.status, text, new_cookie.split(";", 1)[0] if new_cookie else cookie


def login_form(port: int) -> tuple[str, str]:
    """GET /login: the anonymous session cookie and the form's CSRF token."""
    status, page, cookie = request(port, "GET", "/login")
    assert status == 200 and cookie
    return cookie, form_token(page)


def logged_in_as(port: int, cookie: str) -> int | None:
    status, page = http_json(port, "GET", "/chats/history", cookie=cookie)
    if status == 401:
        return None
    assert status == 200, page
    return int(bootstrap(port, cookie)["user"]["id"])


def test_a_login_without_the_right_csrf_token_is_refused(start: Callable[..., DemoServer]) -> None:
    port = start(SECRET_KEY="configured").port
    # A cross-site form: no token, no session of this site.
    status, _, after = request(port, "POST", "/login", form={"username": "alice"})
    assert status == 403
    assert logged_in_as(port, after) is None
    cookie, token = login_form(port)
    _, other_token = login_form(port)  # another browser's (an attacker's own) token
    attempts = {
        "no token, no session": ("", {"username": "alice"}),
        "no token": (cookie, {"username": "alice"}),
        "empty token": (cookie, {"username": "alice", "csrf_token": ""}),
        "wrong token": (cookie, {"username": "alice", "csrf_token": token[:-2] + "xx"}),
        "another session's token": (cookie, {"username": "alice", "csrf_token": other_token}),
        "a token but no session": ("", {"username": "alice", "csrf_token": token}),
    }
    for what, (sent_cookie, form) in attempts.items():
        status, page, after = request(port, "POST", "/login", sent_cookie, form)
        assert status == 403, (what, status)
        assert "This form has expired" in page, what
        assert logged_in_as(port, after) is None, what
        # The page that refused it carries a working form: trying again logs in.
        status, _, again = request(
            port, "POST", "/login", after, {"username": "alice", "csrf_token": form_token(page)}
        )
        assert status == 302, what
        assert logged_in_as(port, again) == 1, what
    # The form as the page gives it works, and the token changes with the login.
    status, _, session = request(
        port, "POST", "/login", cookie, {"username": "bob", "csrf_token": token}
    )
    assert status == 302
    assert logged_in_as(port, session) == 2
    assert bootstrap(port, session)["csrf_token"] != token


def test_logout_is_a_post_with_the_csrf_token(start: Callable[..., DemoServer]) -> None:
    port = start(SECRET_KEY="configured").port
    cookie = login_cookie(port, "carol")
    data = bootstrap(port, cookie)
    cookie, token = data["_cookie"], data["csrf_token"]

    # A link or an image elsewhere (GET) logs nobody out.
    status, _, after = request(port, "GET", "/logout", cookie)
    assert status == 405
    assert logged_in_as(port, after) == 3
    # Nor does a cross-site form post: it has no token, or not this session's.
    _, other = login_form(port)
    for form in ({}, {"csrf_token": ""}, {"csrf_token": other}):
        status, page, after = request(port, "POST", "/logout", cookie, form)
        assert status == 403, form
        assert "Not logged out" in page
        assert logged_in_as(port, after) == 3, form
    # The page's button: a form with the token.
    status, page, _ = request(port, "GET", "/about", cookie)
    assert '<form method="post" action="/logout">' in page
    assert form_token(page) == token
    status, _, after = request(port, "POST", "/logout", cookie, {"csrf_token": token})
    assert status == 302
    assert logged_in_as(port, after) is None
    # The next login form has a new token.
    status, page, _ = request(port, "GET", "/login", after)
    assert form_token(page) != token


def test_tokens_signed_with_the_old_fixed_key_are_refused(
    start: Callable[..., DemoServer],
) -> None:
    server = start()
    forged_ws = URLSafeTimedSerializer(OLD_FIXED_KEY, salt=WS_TOKEN_SALT).dumps(1)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        Client(server.port, query=f"?token={forged_ws}")
    assert refused.value.status_code == 401
    # The session cookie, signed the way Flask signs it, with that key.
    old = Flask("forger")
    old.secret_key = OLD_FIXED_KEY
    signer = SecureCookieSessionInterface().get_signing_serializer(old)
    assert signer is not None
    forged_cookie = "session=" + signer.dumps({"_user_id": "1", "_fresh": True})
    assert logged_in_as(server.port, forged_cookie) is None
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        Client(server.port, cookie=forged_cookie)
    assert refused.value.status_code == 401

    # What the server hands out does work (so the refusals above are about the key).
    token = bootstrap(server.port, login_cookie(server.port, "alice"))["ws_token"]
    client = Client(server.port, query=f"?token={token}")
    try:
        assert client.wait_type("hello")["user_id"] == 1
    finally:
        client.close()

    # The key is random per start: the next start does not take this one's tokens.
    again = start()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        Client(again.port, query=f"?token={token}")
    assert refused.value.status_code == 401
    for one in (server, again):
        assert one.terminate() == 0
        assert one.output.count(RANDOM_KEY_WARNING) == 1, one.output


def test_the_launcher_gives_all_its_processes_one_random_key(redis_url: str, tmp_path: Any) -> None:
    """examples/launch.py (what run-demo.sh runs): the web server, the RQ worker and the
    scheduler get one key made for the run, said once, so none of them makes its own."""
    port = free_port()
    env = dict(
        os.environ,
        CHAT_REDIS_URL=redis_url,
        CHAT_DATABASE_URL=f"sqlite:///{tmp_path}/chat.db",
        PORT=str(port),
        QUIET="1",
    )
    for name in SECRET_KEY_VARIABLES:
        env.pop(name, None)
    log_path = tmp_path / "launch.log"
    rq_redis = redis.Redis.from_url(redis_url)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", "launch.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=60, what="the demo")
        assert proc.poll() is None, log_path.read_text()
        # The worker and the scheduler made their apps (where a missing key would be
        # warned about) before these: the worker registers, the scheduler the sweep.
        wait_for(
            lambda: Worker.all(connection=rq_redis) and rq_redis.zcard(SCHEDULED) == 1,
            timeout=60,
            what="the worker and the scheduler to start",
        )
        cookie = login_cookie(port, "bob")
        client = Client(port, cookie)
        try:
            assert client.wait_type("hello")["user_id"] == 2
        finally:
            client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        rq_redis.close()
    output = log_path.read_text()
    assert output.count("SECRET_KEY not set") == 1, output
    assert "shared by the web server, the RQ worker and the scheduler" in output
    assert RANDOM_KEY_WARNING not in output
