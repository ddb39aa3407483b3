"""chat.js's fallback in a real browser: websockets refused by the proxy, chat over
long polling.

Headless Chromium (as in ``test_browser.py``) talks to two demo instances through a
real HAProxy — the example config, round robin — that refuses every websocket upgrade
(``http-request deny`` on ``Upgrade: websocket``, as some corporate proxies do). Two
people chat one to one: after two refused upgrades each page long-polls
``/chats/poll`` from its catch-up position, sends over ``POST /chats/send_message``,
and every message appears live on the other page, whichever instance each request
lands on.

Needs Chromium, Playwright and ``haproxy`` (see ``test_browser.py`` and
``test_haproxy.py``).
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import DemoServer, free_port, http_json, port_open, wait_for
from test_browser import (
    SERVER_SETTINGS,
    SOON_MS,
    Person,
    check_no_surprises,
    chromium,  # noqa: F401  (the module's browser, a fixture)
)
from test_haproxy import haproxy_binary, make_config

if TYPE_CHECKING:
    from playwright.sync_api import Browser

from playwright.sync_api import expect

#: Refuse what a websocket upgrade sends, as a proxy that does not do websockets.
REFUSE_UPGRADES = (
    "    http-request deny deny_status 403 if { req.hdr(upgrade) -m str -i websocket }"
)


class Blocked:
    """Two demo instances behind HAProxy (the example config) refusing websockets."""

    def __init__(self, redis_url: str, workdir: Path) -> None:
        key = secrets.token_hex(16)
        self.servers = [DemoServer(redis_url, SECRET_KEY=key, **SERVER_SETTINGS)
                        for _ in range(2)]
        self.port = free_port()
        self.stats_port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "haproxy.log"
        self.proxy: subprocess.Popen[bytes] | None = None

    def start(self) -> Blocked:
        for server in self.servers:
            server.start()
        config = make_config(self.port, self.stats_port,
                             [(f"chat{i + 1}", s.port) for i, s in enumerate(self.servers)])
        config, count = re.subn(rf"^([ \t]*bind 127\.0\.0\.1:{self.port}\b.*)$",
                                lambda m: m.group(1) + "\n" + REFUSE_UPGRADES, config,
                                count=1, flags=re.M)
        assert count == 1
        path = self.workdir / "haproxy.cfg"
        path.write_text(config)
        with open(self.log_path, "wb") as log:
            self.proxy = subprocess.Popen([haproxy_binary(), "-f", str(path), "-db"],
                                          stdout=log, stderr=subprocess.STDOUT)
        proxy = self.proxy
        wait_for(lambda: proxy.poll() is not None or port_open(self.port), timeout=30,
                 what="HAProxy to listen")
        assert proxy.poll() is None, self.log()
        # Both instances up (HAProxy's checks), so that requests go round robin.
        wait_for(lambda: self.up() == {"chat1", "chat2"}, timeout=30, what="both instances up")
        return self

    def up(self) -> set[str]:
        status, text = http_json(self.stats_port, "GET", "/stats;csv")
        assert status == 200, text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"] for row in rows
                if row["pxname"] == "flask_chat" and row["status"] == "UP"
                and row["svname"] not in ("FRONTEND", "BACKEND")}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        try:
            if self.proxy is not None and self.proxy.poll() is None:
                self.proxy.terminate()
                self.proxy.wait(20)
        finally:
            for server in self.servers:
                server.stop()
            print(f"--- HAProxy log\n{self.log()}")


class PollingPerson(Person):
    """A person whose page may not open websockets: connected means long-polling."""

    def wait_connected(self) -> None:
        self.page.wait_for_function(
            "() => window.FlaskChat !== undefined && window.FlaskChat.transport === 'longpoll'",
            timeout=SOON_MS,
        )


@pytest.fixture
def blocked(redis_url: str, tmp_path: Path) -> Iterator[Blocked]:
    cluster = Blocked(redis_url, tmp_path)
    try:
        yield cluster.start()
    finally:
        cluster.close()


def test_two_people_chat_live_over_long_polling_when_websockets_are_refused(
    chromium: Browser,  # noqa: F811
    blocked: Blocked,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    made: list[PollingPerson] = []

    def person(name: str) -> PollingPerson:
        context = chromium.new_context(viewport={"width": 1100, "height": 700})
        context.set_default_timeout(SOON_MS)
        made.append(PollingPerson(name, context, blocked.url))
        made[-1].log_in()
        return made[-1]

    failed_before = request.session.testsfailed
    try:
        alice, bob = person("alice"), person("bob")
        for someone in (alice, bob):
            someone.mark_page()
            assert someone.page.evaluate("() => window.FlaskChat.connected") is False

        alice.open_chat("Chat with bob")
        alice.say("2_User", "Hello bob, no websockets here")
        expect(alice.texts("2_User")).to_have_text(["Hello bob, no websockets here"])
        expect(bob.window("1_User")).to_be_visible()
        expect(bob.texts("1_User")).to_have_text(["Hello bob, no websockets here"])
        bob.say("1_User", "Polling works")
        bob.say("1_User", "\u00e9t\u00e9 \U0001f600 <b>not bold</b>")
        expected = ["Hello bob, no websockets here", "Polling works",
                    "\u00e9t\u00e9 \U0001f600 <b>not bold</b>"]
        expect(alice.texts("2_User")).to_have_text(expected)
        expect(bob.texts("1_User")).to_have_text(expected)
        for someone in (alice, bob):
            someone.assert_not_reloaded()
        check_no_surprises(alice, bob)

        # The proxy refused every upgrade; the chat went over polls and HTTP sends
        # (round robin: on both instances, as far as the order of requests allows).
        log = blocked.log()
        assert re.search(r" 403 .*\"GET /chats/ws\?", log), log
        assert not re.search(r" 101 ", log), log
        assert re.findall(r"(chat\d) \S+ 200 .*\"GET /chats/poll\?", log), log
        sent = re.findall(r"(chat\d) \S+ 201 .*\"POST /chats/send_message ", log)
        assert len(sent) == 3, log
    finally:
        if request.session.testsfailed > failed_before:
            for someone in made:
                path = tmp_path / f"{someone.name}.png"
                someone.page.screenshot(path=str(path), full_page=True)
                print(f"screenshot of {someone.name}'s page: {path}")
        for someone in made:
            someone.context.close()
