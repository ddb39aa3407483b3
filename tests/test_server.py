"""Serving on gevent: the patch check, and the demo served by a real gevent process."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import form_token, wait_for

from flask_chat import ConfigurationError
from flask_chat.server import check_gevent_patched

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unpatched_gevent_fails_with_a_clear_error() -> None:
    # The test process itself is not monkey-patched.
    with pytest.raises(ConfigurationError, match="monkey.patch_all"):
        check_gevent_patched()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def demo_server(redis_url: str) -> Iterator[int]:
    port = free_port()
    env = dict(os.environ, CHAT_REDIS_URL=redis_url, PORT=str(port), QUIET="1")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "serve.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: port_open(port) or proc.poll() is not None,
            timeout=30,
            what="the demo server to listen",
        )
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield port
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "flask-chat demo: http://127.0.0.1:" in out


class Browser:
    """A tiny cookie-keeping HTTP client on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.cookie = ""

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        all_headers = dict(headers or {})
        if self.cookie:
            all_headers["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=all_headers)
        resp = self.conn.getresponse()
        text = resp.read().decode()
        if resp.getheader("Set-Cookie"):
            self.cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]
        return resp.status, text

    def close(self) -> None:
        self.conn.close()


def test_two_people_chat_through_the_served_demo(demo_server: int) -> None:
    alice, bob = Browser(demo_server), Browser(demo_server)
    try:
        for who, name in ((alice, "alice"), (bob, "bob")):
            _, form = who.request("GET", "/login")
            status, _ = who.request(
                "POST",
                "/login",
                f"username={name}&csrf_token={form_token(form)}",
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert status == 302
        _, page = alice.request("GET", "/")
        token = json.loads(re.search(r'id="flask-chat-bootstrap">(.*?)</script>', page).group(1))[
            "csrf_token"
        ]
        status, body = alice.request(
            "POST",
            "/chats/send_message",
            json.dumps({"to": "2_User", "message_text": "hello"}),
            {"Content-Type": "application/json", "X-CSRF-Token": token},
        )
        assert status == 201, body
        status, body = bob.request("GET", "/chats/history")
        assert json.loads(body)["1_User"]["messages"][0]["message_text"] == "hello"
    finally:
        alice.close()
        bob.close()


def test_gunicorn_gevent_worker_serves_websockets(redis_url: str) -> None:
    """The other documented way to serve: gunicorn's gevent worker."""
    from helpers import Client, login_cookie

    port = free_port()
    env = dict(os.environ, CHAT_REDIS_URL=redis_url, CHAT_SEND_RATE="0")
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    proc = subprocess.Popen(
        [
            gunicorn,
            "-k",
            "gevent",
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            os.path.join(ROOT, "examples"),
            "wsgi:app",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    clients: list[Client] = []
    try:
        wait_for(
            lambda: port_open(port) or proc.poll() is not None,
            timeout=30,
            what="gunicorn to listen",
        )
        assert proc.poll() is None
        for name in ("alice", "bob"):
            client = Client(port, login_cookie(port, name))
            client.wait_type("hello")
            clients.append(client)
        alice, bob = clients
        alice.send({"type": "send", "to": "2_User", "message_text": "via gunicorn", "ref": 1})
        assert alice.wait_type("ack", ref=1)
        assert bob.wait_type("message")["message_text"] == "via gunicorn"
    finally:
        for client in clients:
            client.close()
        proc.terminate()
        proc.communicate(timeout=30)
