"""The real legacy Juggernaut stack for the bridge tests, and clients of it.

The stack lives in a read-only folder, ``../shared/legacy`` beside the repository (or
``LEGACY_DIR``): ``start-legacy.sh`` starts Redis and the Juggernaut 2.1.1 Node server,
``client.js`` is the real browser client (socket.io-client 0.8.7), ``publish.rb`` and
``events.rb`` are the real gem's ``Juggernaut.publish`` and ``Juggernaut.subscribe``.
Its npm modules go to ``LEGACY_HOME`` (default: the script's cache folder, so ``npm ci``
runs once per machine); pid files and logs go to a temp folder of the test session.

Everything here runs real processes, and every one of them is stopped by the object
that started it (by its own pid or process group, never by name).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
import websocket
from helpers import ROOT, DemoServer, free_port, port_open, wait_for

# -- the stack ---------------------------------------------------------------------------


def legacy_dir() -> str | None:
    """The legacy stack's folder: ``LEGACY_DIR``, else ``../shared/legacy`` from the
    repository root; None when it is not there."""
    path = os.environ.get("LEGACY_DIR") or os.path.join(ROOT, "..", "shared", "legacy")
    path = os.path.abspath(path)
    return path if os.path.isfile(os.path.join(path, "start-legacy.sh")) else None


def running_stack() -> Iterator[LegacyStack]:
    """The legacy stack for a test module: started on free ports (retried: a free port
    can be taken in between), stopped after; skipped (or failed under
    CHAT_TEST_REQUIRE_ALL=1) when it is missing or does not start. Use it as a
    module-scoped fixture's body: ``yield from running_stack()``."""
    from conftest import require

    folder = legacy_dir()
    if folder is None:
        require(
            "no legacy Juggernaut stack: expected ../shared/legacy beside the repository "
            "(or set LEGACY_DIR to the folder holding start-legacy.sh)"
        )
    assert folder is not None
    problem: Exception | None = None
    for _ in range(3):
        legacy = LegacyStack(folder, free_port(), free_port())
        try:
            legacy.start()
            break
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            legacy.stop()
            problem = exc
    else:
        require(f"the legacy Juggernaut stack did not start: {problem}")
    try:
        yield legacy
    finally:
        legacy.stop()


class LegacyStack:
    """``start-legacy.sh [--no-redis] REDIS_PORT JUG_PORT``, stopped by :meth:`stop`."""

    def __init__(self, folder: str, redis_port: int, jug_port: int, no_redis: bool = False):
        self.folder = folder
        self.redis_port = redis_port
        self.jug_port = jug_port
        self.no_redis = no_redis
        self.run_dir = tempfile.mkdtemp(prefix="flask-chat-legacy-run-")
        self.env = dict(os.environ, LEGACY_RUN_DIR=self.run_dir)
        self.info: dict[str, str] = {}
        self.started = False

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def _args(self) -> list[str]:
        return (["--no-redis"] if self.no_redis else []) + [
            str(self.redis_port),
            str(self.jug_port),
        ]

    def start(self, timeout: float = 900) -> LegacyStack:
        """Start (or check) the stack; raises RuntimeError with the script's output."""
        self.started = True
        done = subprocess.run(
            ["bash", self.path("start-legacy.sh"), *self._args()],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"start-legacy.sh failed ({done.returncode}):\n{done.stderr[-3000:]}"
            )
        for line in done.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                if len(value) >= 2 and value[0] == value[-1] == "'":
                    value = value[1:-1].replace("'\\''", "'")
                self.info[key] = value
        # client.js, publish.rb and events.rb look for the npm modules in LEGACY_HOME.
        self.env["LEGACY_HOME"] = self.info["LEGACY_HOME"]
        return self

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def juggernaut_log(self) -> str:
        try:
            with open(self.info.get("JUGGERNAUT_LOG", ""), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                ["bash", self.path("stop-legacy.sh"), *self._args()],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.started = False
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- the gem ---------------------------------------------------------------------

    def publish(
        self,
        channels: str | list[str],
        data: Any = None,
        except_: str | list[str] | None = None,
        raw_data: str | None = None,
        port: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``Juggernaut.publish(channels, data, {:except => ...}.merge(options))`` by the
        real gem (``publish.rb``); ``raw_data`` is passed as is (text that is not JSON is
        sent as a string). Returns its report: the exact payload and PUBLISH's receivers."""
        args = ["ruby", self.path("publish.rb"), "--port", str(port or self.redis_port)]
        for key, value in (options or {}).items():
            args += ["--opt", f"{key}={json.dumps(value, ensure_ascii=False)}"]
        args.append(channels if isinstance(channels, str) else json.dumps(channels))
        args.append(raw_data if raw_data is not None else json.dumps(data, ensure_ascii=False))
        if except_ is not None:
            args.append(except_ if isinstance(except_, str) else json.dumps(except_))
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"publish.rb failed: {done.stderr}")
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["impl"] == "gem", done.stderr  # the real gem, not the replica
        return report


# -- processes that print JSON lines -----------------------------------------------------


class LineProcess:
    """A child process whose stdout lines (JSON when they parse) are collected by a
    reader thread; :meth:`wait` polls them with a deadline."""

    def __init__(self, args: list[str], env: dict[str, str], stdin: bool = False) -> None:
        self.args = args
        self.lines: list[dict[str, Any]] = []
        self.text: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            args,
            env=env,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it ran
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            try:
                parsed = json.loads(line)
            except (ValueError, RecursionError):
                parsed = None
            with self._cond:
                self.text.append(line)
                if isinstance(parsed, dict):
                    self.lines.append(parsed)
                self._cond.notify_all()

    def wait(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 15,
        start: int = 0,
        what: str = "a line",
    ) -> dict[str, Any]:
        """The first line from index ``start`` on that matches (already there or coming)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = start
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what} from "
                        f"{os.path.basename(self.args[1])}; output:\n" + "\n".join(self.text[-40:])
                    )
                self._cond.wait(min(left, 0.2))

    def wait_new(self, seen: int, timeout: float) -> bool:
        """Wait up to ``timeout`` for more than ``seen`` lines; whether they came."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.lines) > seen, timeout)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.lines)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group we created for this child
        except (ProcessLookupError, PermissionError):
            pass

    def close(self, grace: float = 3.0) -> None:
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(10)
        self._signal_group(signal.SIGKILL)  # anything it left behind in its group
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass  # the child is gone: the pipe is broken, nothing to flush
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# Preloaded into client.js (NODE_OPTIONS) to make it send what a browser sends and
# Node does not: the page's Origin and the app's cookie, on the handshake (node's http,
# under socket.io-client's XMLHttpRequest) and on the websocket (Node's WebSocket).
_BROWSER_HEADERS_JS = r"""
"use strict";
const extra = JSON.parse(process.env.FLASK_CHAT_TEST_HEADERS || "{}");
const http = require("http");
const request = http.request;
http.request = function (options) {
  if (options && typeof options === "object" && !(options instanceof URL)) {
    options.headers = Object.assign({}, options.headers || {}, extra);
  }
  return request.apply(this, arguments);
};
if (typeof globalThis.WebSocket !== "undefined") {
  const Base = globalThis.WebSocket;
  globalThis.WebSocket = class extends Base {
    constructor(url, protocols) {
      super(url, { protocols: protocols === undefined ? [] : protocols, headers: extra });
    }
  };
}
"""


def _browser_env(stack: LegacyStack, headers: dict[str, str]) -> dict[str, str]:
    preload = os.path.join(stack.run_dir, "browser-headers.js")
    if not os.path.exists(preload):
        with open(preload, "w") as f:
            f.write(_BROWSER_HEADERS_JS)
    options = (stack.env.get("NODE_OPTIONS", "") + f" --require {preload}").strip()
    return dict(stack.env, NODE_OPTIONS=options, FLASK_CHAT_TEST_HEADERS=json.dumps(headers))


class JugClient(LineProcess):
    """The real Juggernaut browser client (``client.js``, socket.io-client 0.8.7) on
    ``port``, driven through ``--stdin``: every line it prints is kept. ``headers``
    (``Origin``, ``Cookie``) are sent with the handshake and the websocket (or every
    poll), as a browser sends them. ``transport``: the one the client may use
    (``websocket``, or ``xhr-polling`` as when websockets are blocked)."""

    def __init__(
        self,
        stack: LegacyStack,
        port: int,
        channels: Iterable[str] = (),
        meta: Any = None,
        raw: bool = False,
        headers: dict[str, str] | None = None,
        transport: str = "websocket",
    ) -> None:
        args = ["node", stack.path("client.js"), "--port", str(port), "--stdin"]
        args += ["--transport", transport]
        if meta is not None:
            args += ["--meta", json.dumps(meta)]
        if raw:
            args.append("--raw")
        env = _browser_env(stack, headers) if headers else stack.env
        super().__init__(args + list(channels), env, stdin=True)
        self.port = port
        self.session_id = ""

    def connected(self, timeout: float = 20, after: int = 0) -> str:
        """Wait for a ``connect`` (the first one from line ``after`` on); its session id."""
        line = self.wait(
            lambda m: m.get("event") == "connect", timeout, start=after, what="connect"
        )
        self.session_id = line["session_id"]
        return self.session_id

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        mark = len(self.snapshot())
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        self.wait(
            lambda m: m.get("event") in ("ack", "error"),
            10,
            start=mark,
            what=f"the ack of {text!r}",
        )

    def messages(self) -> list[dict[str, Any]]:
        """The ``message`` of every ``data`` line: all the fields the page's code sees."""
        return [m["message"] for m in self.snapshot() if m.get("event") == "data"]

    def wait_data(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 15,
        what: str = "a message",
    ) -> dict[str, Any]:
        line = self.wait(
            lambda m: m.get("event") == "data" and predicate(m["message"]), timeout, what=what
        )
        message: dict[str, Any] = line["message"]
        return message

    def exit(self) -> None:
        """Leave as a browser tab does: the socket.io disconnect packet, then exit."""
        if self.alive:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
            except OSError:
                pass  # already gone
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass  # close() below ends it
        self.close()


class GemListener(LineProcess):
    """``events.rb``: the real gem's ``Juggernaut.subscribe`` printing every event."""

    def __init__(self, stack: LegacyStack, port: int | None = None) -> None:
        port = port or stack.redis_port
        super().__init__(["ruby", stack.path("events.rb"), "--port", str(port)], stack.env)
        # Subscribed once a probe on juggernaut:custom comes through (nothing else reads
        # that channel: Juggernaut servers and flask-chat only publish to it).
        probe = uuid.uuid4().hex
        client = redis.Redis(port=port)
        try:
            deadline = time.monotonic() + 30
            while True:
                client.publish("juggernaut:custom", json.dumps({"probe": probe}))
                try:
                    self.wait(
                        lambda m: m.get("data", {}).get("probe") == probe,
                        0.3,
                        what="the listener's probe",
                    )
                    break
                except AssertionError:
                    if not self.alive or time.monotonic() > deadline:
                        raise
        finally:
            client.close()

    def events(self, session_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Events about these sessions, in order (probes and others left out)."""
        sids = set(session_ids)
        return [
            e
            for e in self.snapshot()
            if isinstance(e.get("data"), dict) and e["data"].get("session_id") in sids
        ]


# -- flask-chat instances ---------------------------------------------------------------


class Instance(DemoServer):
    """A DemoServer whose output goes to a file, not a pipe: a server that logs a lot
    (tens of thousands of hostile publishes) can never block on a full pipe."""

    def start(self) -> Instance:
        self.log_path = os.path.join(self.tmp, "server.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.join(ROOT, "examples", "serve.py")],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        wait_for(
            lambda: port_open(self.port) or proc.poll() is not None,
            timeout=30,
            what=f"the demo server on port {self.port}",
        )
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {self.read_log()}")
        return self

    def read_log(self) -> str:
        try:
            with open(getattr(self, "log_path", ""), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)
        self.output = self.read_log()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self.output = self.read_log()
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)
        self.output = self.read_log()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Gunicorn:
    """The demo under gunicorn's gevent worker (``examples/gunicorn.conf.py``, which
    starts each worker's hub as soon as it has loaded the app), output to a file."""

    def __init__(self, redis_url: str, **settings: Any) -> None:
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="flask-chat-gunicorn-")
        self.env = dict(
            os.environ,
            CHAT_REDIS_URL=redis_url,
            CHAT_SEND_RATE="0",
            CHAT_DATABASE_URL=f"sqlite:///{self.tmp}/chat.db",
            SECRET_KEY=uuid.uuid4().hex,
        )
        for name, value in settings.items():
            self.env[name] = value if isinstance(value, str) else json.dumps(value)
        self.log_path = os.path.join(self.tmp, "gunicorn.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gunicorn:
        examples = os.path.join(ROOT, "examples")
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [gunicorn, "-c", os.path.join(examples, "gunicorn.conf.py"), "-w", "1",
                 "-b", f"127.0.0.1:{self.port}", "--chdir", examples, "wsgi:app"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its group: the master and its worker
            )
        proc = self.proc
        wait_for(
            lambda: port_open(self.port) or proc.poll() is not None,
            timeout=30,
            what=f"gunicorn on port {self.port}",
        )
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {self.read_log()}")
        return self

    def read_log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- a raw socket.io 0.8 client ----------------------------------------------------------


def sio_get_handshake(
    port: int, cookie: str = "", headers: dict[str, str] | None = None, query: str = ""
) -> tuple[int, http.client.HTTPMessage, str]:
    """``GET /socket.io/1/``: status, headers and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "GET",
            f"/socket.io/1/?t={int(time.time() * 1000)}{query}",
            headers={**({"Cookie": cookie} if cookie else {}), **(headers or {})},
        )
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    return resp.status, resp.headers, body


def sio_handshake(port: int, cookie: str = "", headers: dict[str, str] | None = None) -> str:
    """``GET /socket.io/1/``: the session id (the rest is timeouts and transports)."""
    status, _, body = sio_get_handshake(port, cookie, headers)
    assert status == 200, (status, body)
    return body.split(":", 1)[0]


class RawSio:
    """socket.io 0.8 over websocket by hand, for what the stock client cannot send (meta
    null, a subscribe without a channel) or do (handshake on one instance, connect to
    another; a cookie on the handshake only: ``upgrade_cookie``; the ``session_id`` of a
    handshake made elsewhere)."""

    def __init__(
        self,
        port: int,
        cookie: str = "",
        handshake_port: int | None = None,
        upgrade_cookie: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.session_id = session_id or sio_handshake(handshake_port or port, cookie)
        cookie = cookie if upgrade_cookie is None else upgrade_cookie
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/socket.io/1/websocket/{self.session_id}",
            cookie=cookie or None,
            timeout=10,
        )
        self.frames: list[str] = []
        assert self._recv(10) == "1::"

    def _recv(self, timeout: float) -> str | None:
        self.ws.settimeout(timeout)
        try:
            text = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        if text == "2::":
            self.ws.send("2::")  # socket.io 0.8 heartbeat: echo it
        self.frames.append(text)
        return text

    def send(self, message: Any) -> None:
        self.ws.send("3:::" + (message if isinstance(message, str) else json.dumps(message)))

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(f[4:]) for f in self.frames if f.startswith("3:::")]

    def wait_message(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.messages()[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages())
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {self.frames}")
            self._recv(min(left, 0.5))

    def abort(self) -> None:
        """A TCP close with no socket.io disconnect packet: a tab that crashed."""
        sock = self.ws.sock
        if sock is not None:
            sock.close()
        self.ws.shutdown()

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass  # already closed by the server or by abort()
        finally:
            self.ws.shutdown()


# -- a Redis event watcher ---------------------------------------------------------------


class EventWatch:
    """The three ``juggernaut:*`` event channels read with redis-py, in the test's
    thread: to know that a subscription is in place before publishing."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe("juggernaut:subscribe", "juggernaut:unsubscribe", "juggernaut:custom")
        self.events: list[tuple[str, dict[str, Any]]] = []
        #: The exact payload of each event, beside its parsed form in ``events``.
        self.payloads: list[str] = []

    def poll(self, timeout: float) -> None:
        message = self.pubsub.get_message(timeout=timeout)
        while message is not None:
            self.events.append((message["channel"].split(":", 1)[1], json.loads(message["data"])))
            self.payloads.append(message["data"])
            message = self.pubsub.get_message(timeout=0)

    def payload_of(self, kind: str, **fields: Any) -> str:
        """The exact payload of the first such event (waiting for it)."""
        self.wait(kind, **fields)
        for (event_kind, data), payload in zip(self.events, self.payloads, strict=True):
            if event_kind == kind and all(data.get(k) == v for k, v in fields.items()):
                return payload
        raise AssertionError("unreachable")

    def count(self, kind: str, **fields: Any) -> int:
        """How many such events came so far (reads what is waiting, without blocking)."""
        self.poll(0)
        return sum(
            1
            for event_kind, data in self.events
            if event_kind == kind and all(data.get(k) == v for k, v in fields.items())
        )

    def wait(self, kind: str, timeout: float = 15, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event_kind, data in self.events:
                if event_kind == kind and all(data.get(k) == v for k, v in fields.items()):
                    return data
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} event {fields}; got {self.events}")
            self.poll(min(left, 0.2))

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


# -- the exact bytes ---------------------------------------------------------------------

NATIVE_PREFIX = '{"type":"juggernaut","message":'


def raw_messages(client: Any) -> list[str]:
    """The exact text of every legacy message a client got so far: what follows
    ``3:::`` in the frames of a ``JugClient`` (``raw=True``) or a ``RawSio``, the
    ``message`` inside a native client's ``juggernaut`` frames."""
    if isinstance(client, JugClient):
        frames = [
            m["frame"] for m in client.snapshot() if m.get("event") == "frame" and m["dir"] == "in"
        ]
    elif isinstance(client, RawSio):
        frames = client.frames
    else:
        return [t[len(NATIVE_PREFIX) : -1] for t in client.raw if t.startswith(NATIVE_PREFIX)]
    return [f[4:] for f in frames if f.startswith("3:::")]


def with_roles(texts: Iterable[str], names: dict[str, str]) -> list[str]:
    """``texts`` with each name (a session id, a channel) replaced by its role, the
    longest names first (so that no name is replaced inside a longer one)."""
    order = sorted(names, key=len, reverse=True)
    out = []
    for text in texts:
        for name in order:
            text = text.replace(name, names[name])
        out.append(text)
    return out


# -- what a JavaScript page sees -------------------------------------------------------

_MAX_SAFE = 2**53


def _array_index(key: str) -> bool:
    return key.isdigit() and (key == "0" or key[0] != "0") and int(key) < 2**32 - 1


def js_view(value: Any, names: dict[Any, str] | None = None) -> Any:
    """A parsed JSON value as a JavaScript page holds it, in a comparable form: numbers
    are doubles (an integer past 2**53 is rounded), an object's integer-like keys come
    first in ascending order, ``true`` is not ``1``; strings and numbers found in
    ``names`` (session ids, channel names) are replaced by their role."""
    names = names or {}
    if isinstance(value, bool):
        return ("bool", value)
    if value is None:
        return ("null",)
    if isinstance(value, str):
        return ("str", names.get(value, value))
    if isinstance(value, (int, float)):
        number = float(value) if isinstance(value, int) and abs(value) > _MAX_SAFE else value
        if isinstance(number, float) and not math.isfinite(number):
            raise AssertionError(f"not a JSON number: {value!r}")
        role = names.get(("number", float(number)))  # type: ignore[call-overload]
        return ("str", role) if role else ("num", number)
    if isinstance(value, list):
        return ("array", tuple(js_view(v, names) for v in value))
    if isinstance(value, dict):
        keys = sorted((k for k in value if _array_index(k)), key=int)
        keys += [k for k in value if not _array_index(k)]
        return ("object", tuple((k, js_view(value[k], names)) for k in keys))
    raise AssertionError(f"not JSON: {value!r}")


def js_integer(number: int) -> str:
    """How JavaScript writes an integer below 1e21 once read as a double: the shortest
    digits that read back as that double, then zeros (12345678901234567890 is
    12345678901234567000)."""
    from decimal import Decimal

    return str(int(Decimal(repr(float(number)))))


def role_names(sessions: dict[str, str], others: dict[str, str] | None = None) -> dict[Any, str]:
    """``{session id: role}`` and ``{other string (a channel): role}`` for :func:`js_view`.
    A session id also names its number (decimal ids, else hexadecimal): a numeric
    ``except`` as a JavaScript page reads it."""
    names: dict[Any, str] = dict(others or {})
    for sid, role in sessions.items():
        names[sid] = role
        number = int(sid) if sid.isdigit() else int(sid, 16)
        names[("number", float(number))] = "#" + role
    return names


def close_all(things: Iterable[Any]) -> None:
    """Close everything, even if one close fails (reported after the rest are closed)."""
    errors = []
    for thing in things:
        try:
            thing.close() if hasattr(thing, "close") else thing.stop()
        except Exception as exc:  # noqa: BLE001 - re-raised below, once all are closed
            errors.append(exc)
    if errors:
        raise errors[0]


# -- a raw socket.io 0.8 polling client --------------------------------------------------


def sio_decode_payload(data: str) -> list[str]:
    """socket.io 0.8's ``parser.decodePayload`` as the browser runs it: lengths count
    UTF-16 code units (JavaScript's ``string.length``)."""
    if not data.startswith("\ufffd"):
        return [data] if data else []
    units = data.encode("utf-16-le", "surrogatepass")
    packets, i, length = [], 1, ""
    while i < len(units) // 2:
        char = units[2 * i : 2 * i + 2].decode("utf-16-le", "surrogatepass")
        if char == "\ufffd":
            start = 2 * (i + 1)
            packets.append(units[start : start + 2 * int(length)].decode("utf-16-le"))
            i += int(length) + 1
            length = ""
        else:
            length += char
        i += 1
    return packets


class PollSio:
    """socket.io 0.8 over ``xhr-polling`` or ``jsonp-polling`` by hand: each request may
    go to another port (instance), with the headers a browser would send."""

    def __init__(
        self,
        port: int,
        cookie: str = "",
        transport: str = "xhr-polling",
        headers: dict[str, str] | None = None,
        session_id: str | None = None,
    ) -> None:
        self.port = port
        self.transport = transport
        self.headers = {**({"Cookie": cookie} if cookie else {}), **(headers or {})}
        self.session_id = session_id or sio_handshake(port, cookie, headers)
        self.index = 3  # the io.j[] slot of a JSONP transport

    def request(
        self,
        method: str,
        port: int | None = None,
        body: str | bytes | None = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        timeout: float = 40,
    ) -> tuple[int, http.client.HTTPMessage, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            conn.request(
                method,
                f"/socket.io/1/{self.transport}/{self.session_id}"
                f"?t={int(time.time() * 1000)}&i={self.index}{query}",
                body=body.encode() if isinstance(body, str) else body,
                headers={**self.headers, **(headers or {})},
            )
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        return resp.status, resp.headers, text

    def unwrap(self, text: str) -> str:
        """A JSONP answer's payload (``io.j[i]("...");``); an XHR answer as it is."""
        if self.transport != "jsonp-polling":
            return text
        head = f"io.j[{self.index}]("
        assert text.startswith(head) and text.endswith(");"), text
        payload: str = json.loads(text[len(head) : -2])
        return payload

    def get(self, port: int | None = None, timeout: float = 40) -> list[str]:
        """One poll: the packets it answered (status 200 asserted)."""
        status, _, text = self.request("GET", port, timeout=timeout)
        assert status == 200, (status, text)
        return sio_decode_payload(self.unwrap(text))

    def post(self, packets: list[str], port: int | None = None) -> tuple[int, str]:
        """POST packets, framed as the client frames several; JSONP as its form does."""
        if len(packets) == 1:
            payload = packets[0]
        else:
            payload = "".join(
                f"\ufffd{len(p.encode('utf-16-le')) // 2}\ufffd{p}" for p in packets
            )
        if self.transport == "jsonp-polling":
            from urllib.parse import urlencode

            body = urlencode({"d": json.dumps(payload)})
            kind = "application/x-www-form-urlencoded"
        else:
            body, kind = payload, "text/plain;charset=UTF-8"
        status, _, text = self.request("POST", port, body, headers={"Content-Type": kind})
        return status, text

    def send(self, message: Any, port: int | None = None) -> None:
        status, text = self.post(["3:::" + json.dumps(message)], port)
        assert (status, text) == (200, "1"), (status, text)
