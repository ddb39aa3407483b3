"""The auto-pipelined connection (flask_chat/autopipe.py), against a real redis-server.

The autopipe only runs in a process gevent has patched, so each scenario runs this file
as a script in a patched subprocess (``python test_autopipe.py SCENARIO REDIS_URL``),
which prints a JSON report; the tests check it.
"""

from __future__ import annotations

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run_scenario(name: str, redis_url: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), name, redis_url],
        capture_output=True, text=True, timeout=120, cwd=HERE,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_concurrent_greenlets_share_writes_and_each_gets_its_replies(redis_url: str) -> None:
    report = run_scenario("concurrent", redis_url)
    assert report["wrong"] == 0
    assert report["calls"] == 500
    # Many greenlets' calls went out together: far fewer writes than calls.
    assert report["batches"] < report["calls"] / 5
    assert report["connects"] == 1


def test_replies_and_writes_keep_the_order_of_the_calls(redis_url: str) -> None:
    report = run_scenario("ordering", redis_url)
    assert report["list"] == list(range(200))
    assert report["lengths_in_order"]


def test_an_error_reply_goes_to_its_caller_only(redis_url: str) -> None:
    report = run_scenario("errors", redis_url)
    assert report["bad"] == ["ResponseError", "ResponseError"]
    assert report["good"] == [[1, "x"]] * 20
    assert report["reloaded"] == 1
    assert report["script"] == [42]


def test_a_broken_connection_fails_its_calls_then_reconnects(redis_url: str) -> None:
    report = run_scenario("killed", redis_url)
    assert report["pending"] == ["ConnectionError"] * 10
    assert report["after"] == ["PONG"] * 5
    assert report["connects"] == 2


def test_calls_fail_while_redis_is_down_and_work_once_it_is_back(redis_url: str) -> None:
    if not shutil.which("redis-server"):
        import pytest

        pytest.skip("needs redis-server on PATH")
    report = run_scenario("restart", redis_url)
    assert report["before"] == "1"
    assert report["down"] == "ConnectionError"
    assert report["after"] == "1"  # a fresh server: the key is new again
    assert report["connects"] >= 2


def test_without_gevent_the_pool_runs_the_commands(redis_url: str) -> None:
    import redis

    from flask_chat import autopipe

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert autopipe.for_client(client) is None  # this test process is not patched
        replies = autopipe.execute(client, [("SET", "k", "v"), ("INCR", "k"), ("GET", "k")])
        assert replies[0] is True or replies[0] == "OK"
        assert isinstance(replies[1], redis.ResponseError)
        assert replies[2] == "v"
    finally:
        client.close()


# -- the scenarios, run in a patched subprocess -------------------------------------------


def _scenario_concurrent(url: str) -> dict[str, Any]:
    import gevent
    import redis

    from flask_chat import autopipe

    client = redis.Redis.from_url(url, decode_responses=True)
    pipe = autopipe.for_client(client)
    assert pipe is not None
    wrong = 0

    def worker(n: int) -> None:
        nonlocal wrong
        for i in range(5):
            replies = pipe.execute([("SET", f"k{n}", f"{n}:{i}"), ("GET", f"k{n}"),
                                    ("INCR", f"c{n}")])
            if replies[1] != f"{n}:{i}" or replies[2] != i + 1:
                wrong += 1

    gevent.joinall([gevent.spawn(worker, n) for n in range(100)], raise_error=True)
    return {"wrong": wrong, "calls": pipe.calls, "batches": pipe.batches,
            "connects": pipe.connects}


def _scenario_ordering(url: str) -> dict[str, Any]:
    import gevent
    import redis

    from flask_chat import autopipe

    client = redis.Redis.from_url(url, decode_responses=True)
    pipe = autopipe.for_client(client)
    assert pipe is not None
    lengths: list[int] = []

    def worker(i: int) -> None:
        lengths.append(pipe.execute([("RPUSH", "order", i)])[0])

    # Spawned in order, they run (and queue their calls) in order in one loop turn.
    gevent.joinall([gevent.spawn(worker, i) for i in range(200)], raise_error=True)
    return {"list": [int(x) for x in client.lrange("order", 0, -1)],
            "lengths_in_order": lengths == list(range(1, 201))}


def _scenario_errors(url: str) -> dict[str, Any]:
    import gevent
    import redis

    from flask_chat import autopipe

    client = redis.Redis.from_url(url, decode_responses=True)
    pipe = autopipe.for_client(client)
    assert pipe is not None
    client.set("text", "not a number")
    good: list[list[Any]] = []
    bad: list[str] = []

    def fine(n: int) -> None:
        replies = pipe.execute([("INCR", f"n{n}"), ("ECHO", "x")])
        good.append(replies)

    def failing() -> None:
        replies = pipe.execute([("INCR", "text"), ("HGET", "text", "f")])
        bad.extend(type(r).__name__ for r in replies)

    greenlets = [gevent.spawn(fine, n) for n in range(10)] + [gevent.spawn(failing)]
    greenlets += [gevent.spawn(fine, n) for n in range(10, 20)]
    gevent.joinall(greenlets, raise_error=True)

    # EVALSHA of a script Redis does not have: NOSCRIPT, loaded, run again.
    body = "return 42"
    sha = client.script_load(body)
    client.script_flush()
    loads = []

    def load() -> None:
        loads.append(1)
        client.script_load(body)

    script = autopipe.execute_reloading(client, [("EVALSHA", sha, 0)], load)
    return {"good": good, "bad": bad, "reloaded": len(loads), "script": script}


def _scenario_killed(url: str) -> dict[str, Any]:
    import gevent
    import redis

    from flask_chat import autopipe

    client = redis.Redis.from_url(url, decode_responses=True)
    pipe = autopipe.for_client(client)
    assert pipe is not None
    pipe.execute([("CLIENT", "SETNAME", "autopipe")])
    pending: list[str] = []

    def slow() -> None:
        try:
            # Blocks the connection in Redis: everything behind it waits for a reply.
            pipe.execute([("BLPOP", "never", 30)])
        except redis.ConnectionError as exc:
            pending.append(type(exc).__name__)

    def waiting() -> None:
        try:
            pipe.execute([("PING",)])
        except redis.ConnectionError as exc:
            pending.append(type(exc).__name__)

    greenlets = [gevent.spawn(slow)] + [gevent.spawn(waiting) for _ in range(9)]
    gevent.sleep(0.3)
    other = redis.Redis.from_url(url)
    for entry in other.client_list():
        if entry.get("name") == "autopipe":
            other.client_kill_filter(_id=entry["id"])
    gevent.joinall(greenlets, timeout=20)
    after = [str(pipe.execute([("PING",)])[0]) for _ in range(5)]
    return {"pending": pending, "after": after, "connects": pipe.connects}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scenario_restart(url: str) -> dict[str, Any]:
    import gevent
    import redis

    from flask_chat import autopipe
    from flask_chat.embedded import RedisServer

    server = RedisServer(port=_free_port(), binary=shutil.which("redis-server"))
    own = server.start()
    client = redis.Redis.from_url(own, decode_responses=True)
    pipe = autopipe.for_client(client)
    assert pipe is not None
    before = str(pipe.execute([("INCR", "k")])[0])
    server.stop()
    down = ""
    try:
        pipe.execute([("INCR", "k")])
    except redis.ConnectionError as exc:
        down = type(exc).__name__
    restarted = RedisServer(port=server.port, binary=shutil.which("redis-server"))
    restarted.start()
    try:
        after = ""
        for _ in range(100):  # the first call after a restart may still see the old socket
            try:
                after = str(pipe.execute([("INCR", "k")])[0])
                break
            except redis.ConnectionError:
                gevent.sleep(0.05)
    finally:
        restarted.stop()
    return {"before": before, "down": down, "after": after, "connects": pipe.connects}


SCENARIOS: dict[str, Callable[[str], dict[str, Any]]] = {
    "concurrent": _scenario_concurrent,
    "ordering": _scenario_ordering,
    "errors": _scenario_errors,
    "killed": _scenario_killed,
    "restart": _scenario_restart,
}


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    print(json.dumps(SCENARIOS[sys.argv[1]](sys.argv[2])))
