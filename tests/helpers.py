"""Test helpers shared by the test modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
    sleep: Callable[[float], Any] = time.sleep,
) -> T:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        sleep(interval)


def dump(decoded: redis.Redis) -> dict[bytes | str, object]:
    """Every key of the current database with its type and value, to compare states
    (read as bytes: RQ's job hashes are not text)."""
    pool = decoded.connection_pool
    kwargs = dict(pool.connection_kwargs, decode_responses=False)
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
    try:
        return _dump(client)
    finally:
        client.close()


def _dump(client: redis.Redis) -> dict[bytes | str, object]:
    state: dict[bytes | str, object] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            value: object = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        else:
            value = kind
        state[key] = (kind, value)
    return state


# -- real servers and real websocket clients ---------------------------------------------

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import websocket  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class DemoServer:
    """``examples/serve.py`` (the demo app on gevent) in a child process."""

    def __init__(
        self, redis_url: str, port: int | None = None, *, script: str = "", **settings: Any
    ) -> None:
        import tempfile

        #: The server script: the demo's, or another app's served the same way.
        self.script = script or os.path.join(ROOT, "examples", "serve.py")
        self.port = port or free_port()
        # Its own SQLite database unless told otherwise (CHAT_DATABASE_URL=...).
        self.tmp = tempfile.mkdtemp(prefix="flask-chat-demo-")
        self.env = dict(
            os.environ,
            CHAT_REDIS_URL=redis_url,
            PORT=str(self.port),
            QUIET="1",
            CHAT_SEND_RATE="0",
            CHAT_DATABASE_URL=f"sqlite:///{self.tmp}/chat.db",
        )
        for name, value in settings.items():
            self.env[name] = value if isinstance(value, str) else json.dumps(value)
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self) -> DemoServer:
        self.proc = subprocess.Popen(
            [sys.executable, self.script],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(
            lambda: port_open(self.port) or self.proc.poll() is not None,
            timeout=30,
            what=f"the demo server on port {self.port}",
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.proc.communicate()[0]}")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """kill -9: no cleanup at all, as when a machine dies."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.output += self.proc.communicate(timeout=20)[0]

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.output += self.proc.communicate(timeout=timeout)[0]
        return self.proc.returncode

    def stop(self) -> None:
        import shutil

        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.output += self.proc.communicate(timeout=20)[0]
        shutil.rmtree(self.tmp, ignore_errors=True)


def form_token(page: str) -> str:
    """The CSRF token in a demo page's form (the login form, the logout button)."""
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def form_login(client: Any, name: str) -> Any:
    """Log a Flask test client in through the demo's login form, CSRF token included."""
    token = form_token(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"username": name, "csrf_token": token})


def form_logout(client: Any) -> Any:
    """Log a Flask test client out with the demo's logout button (a POST)."""
    token = form_token(client.get("/about").get_data(as_text=True))
    return client.post("/logout", data={"csrf_token": token})


def login_cookie(port: int, name: str, host: str = "127.0.0.1") -> str:
    """Log in through the demo's login form (GET it for its CSRF token, then POST it);
    returns the logged-in session cookie."""
    from urllib.parse import urlencode

    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/login")
    resp = conn.getresponse()
    token = form_token(resp.read().decode())
    cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]
    conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(
        "POST",
        "/login",
        body=urlencode({"username": name, "csrf_token": token}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 302, resp.status
    return resp.getheader("Set-Cookie", "").split(";", 1)[0]


def logout_over_http(port: int, cookie: str) -> int:
    """Press the demo's logout button (a POST with the page's CSRF token)."""
    from urllib.parse import urlencode

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/about", headers={"Cookie": cookie})
    resp = conn.getresponse()
    token = form_token(resp.read().decode())
    # Rendering the page may have stored the form's token in the session: use its cookie.
    cookie = (resp.getheader("Set-Cookie") or cookie).split(";", 1)[0]
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST",
        "/logout",
        body=urlencode({"csrf_token": token}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    status = conn.getresponse().status
    conn.close()
    return status


def http_json(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    cookie: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    all_headers = {"Cookie": cookie, **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body)
        all_headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=all_headers)
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def bootstrap(port: int, cookie: str) -> dict[str, Any]:
    """The page's bootstrap data; ``_cookie`` is the session cookie after the page
    (rendering it stores the CSRF token in the session)."""
    import re

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/", headers={"Cookie": cookie})
    resp = conn.getresponse()
    page = resp.read().decode()
    new_cookie = resp.getheader("Set-Cookie")
    conn.close()
    match = re.search(r'id="flask-chat-bootstrap">(.*?)</script>', page, re.S)
    assert match, page
    data: dict[str, Any] = json.loads(match.group(1))
    data["_cookie"] = new_cookie.split(";", 1)[0] if new_cookie else cookie
    return data


def csrf_session(port: int, name: str) -> tuple[str, dict[str, str]]:
    """Log in; returns the session cookie and the CSRF header for POSTs."""
    data = bootstrap(port, login_cookie(port, name))
    return data["_cookie"], {"X-CSRF-Token": data["csrf_token"]}


def presence(user_id: int, online: bool) -> Callable[[dict[str, Any]], bool]:
    """Matches a presence frame (a batch) announcing ``user_id`` online, or offline."""
    side = "online" if online else "offline"
    return lambda f: f.get("type") == "presence" and user_id in f[side]


def knows_online(user_id: int) -> Callable[[dict[str, Any]], bool]:
    """Matches the frame that tells a client ``user_id`` is online: the snapshot or a
    presence frame."""
    came = presence(user_id, True)
    return lambda f: (f.get("type") == "online" and user_id in f["users"]) or came(f)


class Client:
    """A real websocket client that keeps every frame it received."""

    def __init__(
        self,
        port: int,
        cookie: str = "",
        query: str = "",
        headers: list[str] | None = None,
        host: str = "127.0.0.1",
        sockopt: tuple[tuple[int, int, int], ...] = (),
    ) -> None:
        self.ws = websocket.create_connection(
            f"ws://{host}:{port}/chats/ws{query}",
            cookie=cookie or None,
            timeout=10,
            header=headers or [],
            sockopt=sockopt,
        )
        self.frames: list[dict[str, Any]] = []
        self.raw: list[str] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def _recv_one(self, timeout: float) -> bool:
        self.ws.settimeout(timeout)
        try:
            text = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return False
        if not text:
            raise ConnectionError("closed")
        self.raw.append(text)
        self.frames.append(json.loads(text))
        return True

    def wait(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10,
        what: str = "a frame",
    ) -> dict[str, Any]:
        """The first frame (already received or arriving) that matches."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.frames}")
            self._recv_one(min(left, 0.5))

    def wait_type(self, kind: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        return self.wait(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            timeout,
            what=f"{kind} {fields}",
        )

    def wait_presence(self, user_id: int, online: bool, timeout: float = 10) -> dict[str, Any]:
        """The first presence frame announcing ``user_id`` online (or offline)."""
        return self.wait(
            presence(user_id, online), timeout, what=f"presence {user_id} online={online}"
        )

    def drain(self, quiet: float = 0.3) -> None:
        while self._recv_one(quiet):
            pass

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:  # the server may have closed first; shutdown() below frees it
            pass
        finally:
            self.ws.shutdown()


class TcpProxy:
    """A TCP forwarder we can take down and bring back: a real outage of whatever is
    behind it, as the application sees one (refused and reset connections)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass  # the other direction or down() closed it: the pipe just ends
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def down(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed
            s.close()


def connect(make: Callable[..., Client], server: DemoServer, name: str, **kw: Any) -> Client:
    client = make(server.port, login_cookie(server.port, name), **kw)
    client.wait_type("hello")
    client.wait_type("online")
    return client


def close_code(ws: websocket.WebSocket, timeout: float = 10) -> int:
    """Read until the server's close frame; return its code."""
    ws.settimeout(timeout)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")
