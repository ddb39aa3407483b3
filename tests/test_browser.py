"""The demo in a real browser: headless Chromium driven by Playwright (sync API).

Two (or three) people, each in a browser context of their own (own cookies), log in
through the login form of the demo served by ``examples/serve.py`` on gevent, and chat
one to one and in the group "team"; messages appear live, without reloads; windows and
messages are rebuilt from the bootstrap data on every page; presence follows people
coming and going; closing a window hides it; message text is never parsed as HTML.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright``
package (``pip install playwright``; no ``playwright install``: the system Chromium is
used). Without them the module is skipped, unless ``CHAT_TEST_REQUIRE_ALL=1`` (CI), in
which case every test fails with the reason.

Everything waits with Playwright's auto-waiting expectations (generous deadlines);
nothing asserts how fast. On failure a screenshot of every open page is saved in the
test's ``tmp_path`` (the paths are printed in the captured output).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import DemoServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRED = os.environ.get("CHAT_TEST_REQUIRE_ALL") == "1"

#: Deadline (ms) for anything that should happen "soon": a live message, a page load.
SOON_MS = 15_000
#: Deadline (ms) for presence changes: a disconnect is noticed at once, but a dead peer
#: only after 2.5 ping intervals (CHAT_PING_INTERVAL below) or, for a dead server, the
#: presence TTL.
PRESENCE_MS = 20_000

#: Small presence TTL and ping interval, so that someone whose page went away without a
#: clean websocket close still goes offline within PRESENCE_MS.
SERVER_SETTINGS = {"CHAT_PRESENCE_TTL": 2, "CHAT_PING_INTERVAL": 2}

USER_IDS = {"alice": 1, "bob": 2, "carol": 3}


def _missing() -> str:
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is missing (pip install playwright)")
    return "; ".join(problems)


MISSING = _missing()
if MISSING and not REQUIRED:
    pytest.skip(f"browser tests need Chromium and Playwright: {MISSING}", allow_module_level=True)

if not MISSING:
    from playwright.sync_api import expect, sync_playwright

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Dialog,
        Locator,
        Route,
        WebSocketRoute,
    )


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the module; each person gets a context of their own."""
    if MISSING:
        pytest.fail(f"CHAT_TEST_REQUIRE_ALL=1 but {MISSING}", pytrace=False)
    # The sync API runs its own asyncio loop in a greenlet; this process is not
    # gevent-patched, and nothing else here runs an asyncio loop.
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            expect.set_options(timeout=SOON_MS)
            yield browser
        finally:
            expect.set_options(timeout=None)
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def demo(redis_url: str) -> Iterator[DemoServer]:
    server = DemoServer(redis_url, **SERVER_SETTINGS)
    try:
        yield server.start()
    finally:
        server.stop()


class Person:
    """One person at one browser context of the demo, with the page they look at."""

    def __init__(self, name: str, context: BrowserContext, base_url: str) -> None:
        self.name = name
        self.id = USER_IDS[name]
        self.context = context
        self.base_url = base_url
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        self.page = context.new_page()
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    # -- navigation --

    def log_in(self) -> Person:
        """Through the login form, as a person would."""
        self.page.goto(self.base_url + "/")
        expect(self.page).to_have_url(re.compile(r"/login"))
        self.page.locator("input[name=username]").fill(self.name)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(self.base_url + "/", timeout=SOON_MS)
        expect(self.page.locator("#me")).to_have_text(self.name)
        self.wait_connected()
        return self

    def log_out(self) -> None:
        self.page.get_by_role("button", name="Log out").click()
        self.page.wait_for_url(re.compile(r"/login$"), timeout=SOON_MS)

    def follow(self, link: str, path: str) -> None:
        """Click a navigation link and wait for the new page's chat to connect."""
        self.page.get_by_role("link", name=link, exact=True).click()
        self.page.wait_for_url(self.base_url + path, timeout=SOON_MS)
        self.wait_connected()

    def wait_connected(self) -> None:
        self.page.wait_for_function(
            "() => window.FlaskChat !== undefined && window.FlaskChat.connected",
            timeout=SOON_MS,
        )

    def mark_page(self) -> None:
        """Tag the current document, to check later that nothing reloaded it."""
        self.page.evaluate("() => { window.__notReloaded = true; }")

    def assert_not_reloaded(self) -> None:
        assert self.page.evaluate("() => window.__notReloaded === true"), "the page reloaded"

    # -- the chat --

    def open_chat(self, button: str) -> None:
        self.page.get_by_role("button", name=button, exact=True).click()

    def window(self, key: str) -> Locator:
        return self.page.locator(f".fc-dock section.fc-window[data-conversation='{key}']")

    def texts(self, key: str) -> Locator:
        return self.window(key).locator(".fc-body .fc-message[data-id] .fc-text")

    def box(self, key: str) -> Locator:
        return self.window(key).locator("form.fc-form textarea")

    def say(self, key: str, text: str) -> None:
        """Type into the window's textarea and press Enter (callers check that the
        message appears: the box is emptied at once, and refilled if sending fails)."""
        box = self.box(key)
        box.click()
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")
        expect(self.window(key).locator(".fc-error")).to_be_empty()

    def online_entry(self, name: str) -> Locator:
        return self.page.locator(f"aside.fc-online li[data-user-id='{USER_IDS[name]}']")

    def bootstrap_texts(self, key: str) -> list[str]:
        """The message texts of ``key`` in the bootstrap data the page was rendered with."""
        data = json.loads(self.page.locator("#flask-chat-bootstrap").text_content() or "{}")
        return [m["message_text"] for m in data["history"].get(key, {}).get("messages", [])]


@pytest.fixture
def people(
    chromium: Browser, demo: DemoServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Person]]:
    """``people("alice")``: a fresh browser context for alice, logged in on the demo."""
    made: list[Person] = []
    # The call phase's report is logged before teardown: a higher count means it failed.
    failed_before = request.session.testsfailed

    def make(name: str) -> Person:
        context = chromium.new_context(viewport={"width": 1100, "height": 700})
        context.set_default_timeout(SOON_MS)
        person = Person(name, context, demo.url)
        made.append(person)
        return person.log_in()

    yield make
    try:
        if request.session.testsfailed > failed_before:
            for person in made:
                if not person.page.is_closed():
                    path = tmp_path / f"{person.name}.png"
                    try:
                        person.page.screenshot(path=str(path), full_page=True)
                        print(f"screenshot of {person.name}'s page: {path}")
                    except Exception as exc:  # a broken page must not hide the failure
                        print(f"no screenshot of {person.name}'s page: {exc}")
    finally:
        for person in made:
            person.context.close()


def check_no_surprises(*persons: Person) -> None:
    for person in persons:
        assert person.dialogs == [], f"{person.name} got dialogs: {person.dialogs}"
        assert person.page_errors == [], f"{person.name}'s page raised: {person.page_errors}"


# -- tests -----------------------------------------------------------------------------


def test_one_to_one_and_group_messages_appear_live(people: Callable[[str], Person]) -> None:
    alice = people("alice")
    bob = people("bob")
    for person in (alice, bob):
        person.mark_page()

    alice.open_chat("Chat with bob")
    expect(alice.window("2_User")).to_be_visible()
    expect(alice.window("2_User").locator(".fc-title")).to_have_text("bob")
    alice.say("2_User", "Hello bob!")
    expect(alice.texts("2_User")).to_have_text(["Hello bob!"])

    # Bob's window opens by itself, with the message, on the page he already has open.
    expect(bob.window("1_User")).to_be_visible()
    expect(bob.window("1_User").locator(".fc-title")).to_have_text("alice")
    expect(bob.texts("1_User")).to_have_text(["Hello bob!"])
    bob.say("1_User", "Hi alice, bob here")
    expect(bob.texts("1_User")).to_have_text(["Hello bob!", "Hi alice, bob here"])
    expect(alice.texts("2_User")).to_have_text(["Hello bob!", "Hi alice, bob here"])

    # Enter pressed twice before the server answers still sends once. (Two key presses
    # in one task, so that no answer can come in between; the next message is a
    # barrier: messages from one sender arrive in order.)
    alice.box("2_User").fill("only once")
    alice.box("2_User").evaluate(
        """box => { for (let i = 0; i < 2; i++) {
            box.dispatchEvent(new KeyboardEvent("keydown",
                {key: "Enter", bubbles: true, cancelable: true}));
        } }"""
    )
    alice.say("2_User", "after that")
    sent = ["Hello bob!", "Hi alice, bob here", "only once", "after that"]
    expect(bob.texts("1_User")).to_have_text(sent)
    expect(alice.texts("2_User")).to_have_text(sent)

    # Who said what: sent on the right, received on the left, on both sides.
    rows = alice.window("2_User").locator(".fc-message")
    expect(rows.nth(0)).to_have_class(re.compile(r"\bfc-sent\b"))
    expect(rows.nth(1)).to_have_class(re.compile(r"\bfc-received\b"))
    rows = bob.window("1_User").locator(".fc-message")
    expect(rows.nth(0)).to_have_class(re.compile(r"\bfc-received\b"))
    expect(rows.nth(1)).to_have_class(re.compile(r"\bfc-sent\b"))

    # The group: alice, bob and carol all see each message live.
    carol = people("carol")
    carol.mark_page()
    alice.open_chat("Group: team")
    expect(alice.window("5_Group").locator(".fc-title")).to_have_text("team")
    alice.say("5_Group", "Hi team")
    for person in (alice, bob, carol):
        expect(person.window("5_Group")).to_be_visible()
        expect(person.texts("5_Group")).to_have_text(["Hi team"])
    carol.say("5_Group", "Hello from carol")
    bob.say("5_Group", "And from bob")
    for person in (alice, bob, carol):
        expect(person.texts("5_Group")).to_have_text(
            ["Hi team", "Hello from carol", "And from bob"]
        )
    # Carol was never part of the 1:1 chat.
    expect(carol.page.locator("section.fc-window[data-conversation$='_User']")).to_have_count(0)

    for person in (alice, bob, carol):
        person.assert_not_reloaded()
    check_no_surprises(alice, bob, carol)


def test_windows_and_messages_follow_from_page_to_page(people: Callable[[str], Person]) -> None:
    alice = people("alice")
    bob = people("bob")
    alice.open_chat("Chat with bob")
    alice.say("2_User", "one")
    expect(bob.texts("1_User")).to_have_text(["one"])
    bob.say("1_User", "two")
    alice.open_chat("Group: team")
    alice.say("5_Group", "team one")
    expect(alice.texts("2_User")).to_have_text(["one", "two"])
    expect(bob.texts("5_Group")).to_have_text(["team one"])

    # / -> /about: the windows are rebuilt from the bootstrap data.
    alice.follow("About", "/about")
    expect(alice.page.get_by_role("heading", name="About")).to_be_visible()
    expect(alice.window("2_User")).to_be_visible()
    expect(alice.texts("2_User")).to_have_text(["one", "two"])
    expect(alice.window("5_Group")).to_be_visible()
    expect(alice.texts("5_Group")).to_have_text(["team one"])
    assert alice.bootstrap_texts("2_User") == ["one", "two"]
    assert alice.bootstrap_texts("5_Group") == ["team one"]

    # Live delivery works on the second page too.
    alice.mark_page()
    bob.say("1_User", "three")
    expect(alice.texts("2_User")).to_have_text(["one", "two", "three"])
    alice.assert_not_reloaded()

    # /about -> /: everything is back, the live message included.
    alice.follow("Home", "/")
    expect(alice.texts("2_User")).to_have_text(["one", "two", "three"])
    expect(alice.texts("5_Group")).to_have_text(["team one"])
    assert alice.bootstrap_texts("2_User") == ["one", "two", "three"]

    # The same for bob, who never clicked a chat button.
    bob.follow("About", "/about")
    expect(bob.texts("1_User")).to_have_text(["one", "two", "three"])
    expect(bob.texts("5_Group")).to_have_text(["team one"])
    bob.follow("Home", "/")
    expect(bob.window("1_User")).to_be_visible()
    expect(bob.texts("1_User")).to_have_text(["one", "two", "three"])

    # Closing a window hides it; it stays in the page, and reopening shows the messages.
    with alice.page.expect_response(
        lambda r: r.url.endswith("/chats/windows") and r.request.method == "POST"
    ) as saved:
        alice.window("2_User").locator("button.fc-close").click()
    assert saved.value.ok
    expect(alice.window("2_User")).to_be_hidden()
    expect(alice.window("2_User")).to_have_count(1)
    expect(alice.texts("2_User")).to_have_count(3)
    expect(alice.window("5_Group")).to_be_visible()
    alice.open_chat("Chat with bob")
    expect(alice.window("2_User")).to_be_visible()
    expect(alice.texts("2_User")).to_have_text(["one", "two", "three"])

    # Closed, then to another page and back: still closed there, reopens with history.
    with alice.page.expect_response(
        lambda r: r.url.endswith("/chats/windows") and r.request.method == "POST"
    ) as saved:
        alice.window("2_User").locator("button.fc-close").click()
    assert saved.value.ok
    expect(alice.window("2_User")).to_be_hidden()
    alice.follow("About", "/about")
    expect(alice.window("2_User")).to_have_count(1)
    expect(alice.window("2_User")).to_be_hidden()
    expect(alice.window("5_Group")).to_be_visible()
    alice.follow("Home", "/")
    expect(alice.window("2_User")).to_be_hidden()
    alice.open_chat("Chat with bob")
    expect(alice.window("2_User")).to_be_visible()
    expect(alice.texts("2_User")).to_have_text(["one", "two", "three"])
    check_no_surprises(alice, bob)


def test_people_come_online_and_go_offline(people: Callable[[str], Person]) -> None:
    alice = people("alice")
    expect(alice.online_entry("bob")).to_have_count(0)

    bob = people("bob")
    expect(alice.online_entry("bob")).to_have_text("bob", timeout=PRESENCE_MS)
    expect(bob.online_entry("alice")).to_have_text("alice", timeout=PRESENCE_MS)

    # A clean goodbye: bob logs out (his page, and its websocket, go away).
    bob.log_out()
    expect(alice.online_entry("bob")).to_have_count(0, timeout=PRESENCE_MS)

    # Back again, then bob just closes his page.
    bob.log_in()
    expect(alice.online_entry("bob")).to_have_text("bob", timeout=PRESENCE_MS)
    bob.page.close()
    expect(alice.online_entry("bob")).to_have_count(0, timeout=PRESENCE_MS)

    # The online list is a way to open a chat.
    carol = people("carol")
    alice.online_entry("carol").click(timeout=PRESENCE_MS)
    expect(alice.window("3_User")).to_be_visible()
    expect(alice.window("3_User").locator(".fc-title")).to_have_text("carol")
    check_no_surprises(alice, carol)


def test_message_text_is_rendered_as_text(people: Callable[[str], Person]) -> None:
    payload = "<b>bold</b><img src=x onerror=alert(1)>"
    breakout = "</script><script>alert(2)</script><!--"
    alice = people("alice")
    bob = people("bob")

    alice.open_chat("Chat with bob")
    alice.say("2_User", payload)
    alice.say("2_User", breakout)

    def check(person: Person, key: str) -> None:
        expect(person.texts(key)).to_have_text([payload, breakout])
        expect(person.window(key).locator(".fc-text *")).to_have_count(0)
        expect(person.page.locator("b")).to_have_count(0)
        expect(person.page.locator("img[src='x']")).to_have_count(0)
        expect(
            person.page.locator("script:not([src]):not([type='application/json'])")
        ).to_have_count(0)
        check_no_surprises(person)

    check(alice, "2_User")
    check(bob, "1_User")  # delivered live
    # Rebuilt from the bootstrap data (JSON inside a script element) on another page.
    for person, key in ((alice, "2_User"), (bob, "1_User")):
        person.follow("About", "/about")
        assert person.bootstrap_texts(key) == [payload, breakout]
        check(person, key)


# -- sends in doubt, out-of-order frames ------------------------------------------------------


WS_URL = re.compile(r".*/chats/ws(\?.*)?$")


def _frame(message: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(message)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def routed_person(
    chromium: Browser,
    demo: DemoServer,
    name: str,
    route: Callable[[WebSocketRoute], None],
) -> Person:
    """A person whose websockets go through ``route`` (Playwright's websocket routing:
    the real server behind it, or not, as ``route`` decides)."""
    context = chromium.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(SOON_MS)
    context.route_web_socket(WS_URL, route)
    return Person(name, context, demo.url).log_in()


def test_a_send_answered_502_is_retried_with_its_key_and_stored_once(
    chromium: Browser, demo: DemoServer, people: Callable[[str], Person]
) -> None:
    bob = people("bob")
    online = {"yes": True}
    routes: list[WebSocketRoute] = []

    def websockets(ws: WebSocketRoute) -> None:
        routes.append(ws)
        if online["yes"]:
            ws.connect_to_server()
        # else: a websocket that never says hello, so the page sends over HTTP

    alice = routed_person(chromium, demo, "alice", websockets)
    try:
        keys: list[str | None] = []

        def send_message(route: Route) -> None:
            keys.append(route.request.headers.get("idempotency-key"))
            if len(keys) == 1:
                route.fetch()  # the server stores it...
                route.fulfill(status=502, content_type="text/html", body="<h1>502</h1>")
            else:
                route.continue_()

        alice.context.route("**/chats/send_message", send_message)
        online["yes"] = False
        routes[-1].close()  # the live websocket goes; the next ones are dead ends
        alice.page.wait_for_function("() => !window.FlaskChat.connected", timeout=SOON_MS)

        alice.open_chat("Chat with bob")
        alice.say("2_User", "sent once, answered twice")
        expect(alice.texts("2_User")).to_have_text(["sent once, answered twice"])
        expect(bob.texts("1_User")).to_have_text(["sent once, answered twice"])
        assert len(keys) == 2 and keys[0] == keys[1], keys
        assert keys[0] and re.fullmatch(r"[0-9a-f]{32}", keys[0]), keys
        # Stored once: a page load rebuilds from the cache, which has it once.
        bob.follow("About", "/about")
        expect(bob.texts("1_User")).to_have_text(["sent once, answered twice"])
        check_no_surprises(alice, bob)
    finally:
        alice.context.close()


def test_a_send_whose_socket_is_cut_before_the_ack_is_retried_with_its_key(
    chromium: Browser, demo: DemoServer, people: Callable[[str], Person]
) -> None:
    bob = people("bob")
    sends: list[dict[str, Any]] = []
    state = {"cut": True}

    def websockets(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            if _frame(message).get("type") == "send":
                sends.append(_frame(message))
            server.send(message)

        def from_server(message: str | bytes) -> None:
            if state["cut"] and len(sends) == 1:
                # The send reached the server; nothing it says comes back: once it has
                # answered, the connection is cut.
                if _frame(message).get("type") == "ack":
                    state["cut"] = False
                    ws.close()
                    server.close()
                return
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)

    alice = routed_person(chromium, demo, "alice", websockets)
    try:
        http_keys: list[str | None] = []
        alice.page.on(
            "request",
            lambda r: http_keys.append(r.headers.get("idempotency-key"))
            if r.url.endswith("/chats/send_message")
            else None,
        )
        alice.open_chat("Chat with bob")
        alice.say("2_User", "cut before the ack")
        expect(alice.texts("2_User")).to_have_text(["cut before the ack"])
        expect(bob.texts("1_User")).to_have_text(["cut before the ack"])
        # Bob may see the message before the server's ack reaches the cut: wait (events
        # flow while the page waits) for the cut and for the retry it causes.
        deadline = time.monotonic() + 30
        while (state["cut"] or not (sends[1:] or http_keys)) and time.monotonic() < deadline:
            alice.page.wait_for_timeout(50)
        # The retry (over HTTP while the socket is down, or the websocket once it is
        # back) carried the first attempt's key.
        alice.wait_connected()
        first = sends[0]["key"]
        assert re.fullmatch(r"[0-9a-f]{32}", first), sends
        retries = [s["key"] for s in sends[1:]] + http_keys
        assert retries and set(retries) == {first}, (sends, http_keys)
        bob.follow("About", "/about")
        expect(bob.texts("1_User")).to_have_text(["cut before the ack"])
        check_no_surprises(alice, bob)
    finally:
        alice.context.close()


def test_live_frames_out_of_id_order_are_shown_in_id_order(
    chromium: Browser, demo: DemoServer, people: Callable[[str], Person]
) -> None:
    """Across instances a lower id can arrive after a higher one (docs/protocol.md):
    bob's websocket here holds alice's first message back until her second has come."""
    alice = people("alice")
    held: list[str | bytes] = []

    def websockets(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            frame = _frame(message)
            if frame.get("type") == "message" and frame.get("message_text") == "first":
                held.append(message)
                return
            ws.send(message)
            if frame.get("type") == "message" and frame.get("message_text") == "second":
                for late in held:
                    ws.send(late)

        server.on_message(from_server)

    bob = routed_person(chromium, demo, "bob", websockets)
    try:
        alice.open_chat("Chat with bob")
        alice.say("2_User", "first")
        expect(alice.texts("2_User")).to_have_text(["first"])
        alice.say("2_User", "second")
        expect(bob.texts("1_User")).to_have_text(["first", "second"])
        ids = bob.window("1_User").locator(".fc-message").evaluate_all(
            "rows => rows.map(r => r.getAttribute('data-id'))"
        )
        assert ids == sorted(ids) and len(held) == 1
        check_no_surprises(alice, bob)
    finally:
        bob.context.close()
