"""Real-time benchmark: flask-chat against a minimal Node ``ws`` server and Flask-SocketIO.

    .venv/bin/python benchmarks/realtime.py                 # everything (~8 minutes)
    .venv/bin/python benchmarks/realtime.py --quick         # small sizes, ~2.5 minutes
    .venv/bin/python benchmarks/realtime.py --only flask-chat --scenario fanout

Starts a real redis-server, then for each server under test (flask-chat's benchmark
app on its gevent server, ``node/server.js``, ``socketio_server.py``), each in one
process of its own and started afresh for each scenario, drives it with real websocket
clients from a separate Node process (``node/client.js``) and prints figures:

fan-out
    ``--fanout-members`` (1,000) members of one group connected; messages sent to the
    group (by 8 of its members, over the websocket) at increasing offered rates. Every
    delivery is counted; latency is receive time minus send time (the sender puts its
    clock in the message text). Reported: the highest deliveries/s with p99 <= 100 ms
    and nothing lost, and the server's CPU time per delivery in that step.
1:1
    ``--direct-users`` (2,000) users connected in pairs, each message from one user to
    its partner. Websocket ``send`` frames at increasing offered rates (the highest
    msgs/s with p99 <= 100 ms and nothing lost, with the server's CPU time per
    delivery), and at an offered 1,000/s; then the HTTP send path (flask-chat:
    ``POST /chats/send_message``) with 32 keep-alive connections sending back to back
    (sends/s, p50/p99 of the response), the same requests to a bare JSON route on the
    same flask-chat server (``POST /bare``), and an offered 1,000 sends/s.
group-connect
    All ``--fanout-members`` members of one group connecting, 100 at a time: the time
    until each has its connect-ending frame, and until the presence frames stop
    (flask-chat tells the group about each member who comes online).
churn
    ``--churn-users`` (500) members of the group connected; a fifth of them leave and
    come back at once (a page navigation) at ``--churn-rate`` (20) reconnects/s for
    ``--churn-seconds`` (12), while the others count the presence frames they are told
    and the offline-then-online "flaps". Reconnects/s and reconnect latency.
idle
    ``--idle-connections`` (15,000) connections opened 100 at a time from 16 source
    addresses (127.0.0.2-17, so ephemeral ports do not run out): connects/s, the server's
    RSS (``VmRSS``) per connection, and how many stay open and answer a ping.

Then the ratios (flask-chat / Node ws, flask-chat / Flask-SocketIO) and flask-chat's
targets. Everything is bounded in count and time, and all traffic stays on 127.0.0.0/8.
The Node dependencies are installed with ``npm ci`` into ``benchmarks/node/node_modules``
when missing; Flask-SocketIO comes from ``benchmarks/requirements.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NODE_DIR = os.path.join(HERE, "node")
sys.path.insert(0, HERE)

from flask_chat.embedded import RedisServer  # noqa: E402

IMPLEMENTATIONS = ("flask-chat", "node-ws", "socketio")
LABELS = {"flask-chat": "flask-chat", "node-ws": "Node ws", "socketio": "Flask-SocketIO"}
SCENARIOS = ("fanout", "direct", "group-connect", "churn", "idle")
SOURCES = [f"127.0.0.{i}" for i in range(2, 18)]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# User id ranges (every id exists in the benchmark apps; group 1 is 1..fanout_members).
FANOUT_BASE = 1
DIRECT_BASE = 100_001
IDLE_BASE = 200_001
WARM_BASE = 900_001
FANOUT_SENDERS = 8
P99_LIMIT_MS = 100.0


class BenchError(Exception):
    pass


def log(msg: str = "") -> None:
    print(msg, flush=True)


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"server on port {port} did not start in {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for {pid}")


def raise_fd_limit(want: int = 262_144) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            want = min(want, int(f.read()))
    except OSError:
        pass
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ensure_node_modules() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        raise BenchError("Node.js (node and npm) is needed: it runs the clients and the ws server.")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")) or not os.path.isdir(
        os.path.join(NODE_DIR, "node_modules", "ioredis")
    ):
        log("installing the Node dependencies (npm ci in benchmarks/node) ...")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return node


class Server:
    """One server under test, in a process of its own."""

    def __init__(
        self,
        impl: str,
        redis_url: str,
        group_size: int,
        logdir: str,
        node: str,
        redis_max_connections: int = 0,
        flask_chat_path: str | None = None,
    ):
        self.impl = impl
        self.port = free_port()
        common = ["--port", str(self.port), "--group-size", str(group_size)]
        if impl == "flask-chat":
            if redis_max_connections:
                # redis-py 8's default pool refuses a 101st concurrent connection
                # (MaxConnectionsError) instead of waiting; see the README.
                redis_url += f"?max_connections={redis_max_connections}"
            cmd = [sys.executable, os.path.join(HERE, "chat_server.py"), *common]
        elif impl == "socketio":
            cmd = [sys.executable, os.path.join(HERE, "socketio_server.py"), *common]
        else:
            cmd = [node, os.path.join(NODE_DIR, "server.js"), *common]
        cmd += ["--redis-url", redis_url]
        self.logpath = os.path.join(logdir, f"server-{impl}-{self.port}.log")
        self.logfile = open(self.logpath, "wb")
        env = dict(os.environ)
        if impl == "flask-chat" and flask_chat_path:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (flask_chat_path, env.get("PYTHONPATH")) if p
            )
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            cwd=HERE,
            env=env,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.proc)
        except BenchError:
            self.stop()
            raise BenchError(f"{impl} server did not start:\n{self.log_tail()}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if self.impl == "socketio" else signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.logfile.close()


class Client:
    """The Node load driver; one JSON command a line in, one JSON answer a line out."""

    def __init__(self, node: str, impl: str, port: int, tokens_file: str | None, logdir: str):
        config = {
            "kind": impl,
            "host": "127.0.0.1",
            "port": port,
            "sources": SOURCES,
            "tokensFile": tokens_file,
        }
        self.logpath = os.path.join(logdir, f"client-{impl}-{port}.log")
        self.logfile = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            [
                node,
                *os.environ.get("BENCH_CLIENT_NODE_ARGS", "").split(),
                "--max-old-space-size=4096",
                os.path.join(NODE_DIR, "client.js"),
                json.dumps(config),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.logfile,
            text=True,
            cwd=NODE_DIR,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._answer(30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _answer(self, timeout: float) -> Any:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"the client did not answer in {timeout:.0f} s") from None
        if line is None:
            raise BenchError(f"the client exited:\n{self.log_tail()}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BenchError(f"client error: {answer['error']}")
        return answer["result"]

    def cmd(self, timeout: float, **command: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.cmd(10, cmd="exit")
            except (BenchError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.logfile.close()


def busy_seconds() -> float:
    """CPU time all processes on the machine have used (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


class CpuMeter:
    """CPU used by the server, Redis and the client between start() and stop(), and by
    everything else on the machine ("other": a busy machine skews every figure)."""

    #: Highest "other" load seen in any measurement, in CPUs.
    worst_other = 0.0

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.start()

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.b0 = busy_seconds()

    def stop(self) -> dict[str, float]:
        wall = max(1e-6, time.monotonic() - self.t0)
        #: CPU seconds each process used (``stop`` returns them per second of wall time).
        self.seconds = {name: cpu_seconds(pid) - self.c0[name] for name, pid in self.pids.items()}
        used = {name: v / wall for name, v in self.seconds.items()}
        own = sum(used.values()) + 0.02  # this script and the kernel's share
        used["other"] = max(0.0, (busy_seconds() - self.b0) / wall - own)
        CpuMeter.worst_other = max(CpuMeter.worst_other, used["other"])
        return used


def fmt_cpu(cpu: dict[str, float]) -> str:
    return " ".join(f"{name} {100 * v:.0f}%" for name, v in cpu.items())


class Profiler:
    """py-spy on the flask-chat server while a phase runs (``--profile DIR``)."""

    def __init__(self, outdir: str | None, pid: int, name: str):
        self.proc: subprocess.Popen[bytes] | None = None
        self.path = ""
        pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not outdir or not os.path.exists(pyspy):
            return
        os.makedirs(outdir, exist_ok=True)
        self.path = os.path.join(outdir, f"{name}.txt")
        self.proc = subprocess.Popen(
            [
                pyspy,
                "record",
                "--format",
                "raw",
                "--rate",
                "200",
                "--idle",
                "-o",
                self.path,
                "--pid",
                str(pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        log(f"    profile: {self.path}")
        try:
            for line in summarize_profile(self.path, 12):
                log(f"      {line}")
        except OSError:
            pass


#: Functions whose inclusive share of the server's time the profile summary shows.
PROFILE_PATHS = (
    ("websocket handshake (whole /chats/ws request)", "websocket (flask_chat/websocket.py"),
    ("  simple-websocket Server() handshake", "Server.__init__ (simple_websocket/"),
    ("  presence connect + announce", "Presence.connect (flask_chat/presence.py"),
    ("  online snapshot", "online_snapshot (flask_chat/delivery.py"),
    ("refusal checks before the handshake", "_refusal (flask_chat/websocket.py"),
    ("Flask request context", "Flask.request_context (flask/app.py"),
    ("send (messaging.send)", "send (flask_chat/messaging.py"),
    ("  redis-py SCRIPT EXISTS per pipeline", "Pipeline.load_scripts (redis/client.py"),
    ("  redis-py pipeline packing", "pack_commands (redis/connection.py"),
    ("  ChatCache.append", "ChatCache.append (flask_chat/cache.py"),
    ("hub dispatch (fan-out writes)", "Hub.dispatch (flask_chat/hub.py"),
    ("disconnect cleanup", "_disconnected (flask_chat/websocket.py"),
    ("pywsgi request handling", "WSGIHandler.handle_one_request (gevent/pywsgi.py"),
)


def summarize_profile(path: str, top: int) -> list[str]:
    """Where the server's main thread spent its time, from py-spy's raw (collapsed)
    output: idle (waiting in the event loop), the top functions by self time, and the
    inclusive share of a few paths."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit() or stack.startswith("_WorkerGreenlet.run (gevent/threadpool"):
                continue  # gevent's thread pool, idle: not the server's thread
            n = int(count)
            total += n
            frames = stack.split(";")
            if len(frames) == 1 and frames[0].startswith("Hub.run (gevent/hub.py"):
                idle += n
                continue
            self_time[frames[-1]] += n
            for label, needle in PROFILE_PATHS:
                if needle in stack:
                    inclusive[label] += n
    if not total:
        return ["(no samples)"]
    lines = [
        f"{total} samples of the server thread; idle in the event loop {100 * idle / total:.0f}%"
    ]
    lines.append("inclusive:")
    for label, _ in PROFILE_PATHS:
        if inclusive[label]:
            lines.append(f"  {100 * inclusive[label] / total:5.1f}%  {label}")
    lines.append("self:")
    for leaf, n in self_time.most_common(top):
        lines.append(f"  {100 * n / total:5.1f}%  {leaf}")
    return lines


# -- the scenarios ---------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    fanout_members: int
    direct_users: int
    idle_connections: int
    step_seconds: float
    drain_ms: int
    growth: float
    bisect: int
    max_steps: int
    retries: int
    fanout_start: float
    direct_start: float
    http_concurrency: int
    connect_concurrency: int
    connect_timeout: float
    churn_users: int
    churn_rate: float
    churn_seconds: float
    churn_gap_ms: int
    profile: str | None
    redis_max_connections: int
    flask_chat_path: str | None


@dataclass
class Results:
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, impl: str, key: str, value: Any) -> None:
        self.values.setdefault(impl, {})[key] = value

    def get(self, impl: str, key: str) -> Any:
        return self.values.get(impl, {}).get(key)


def passed(step: dict[str, Any]) -> bool:
    p99 = step["latency"]["p99"]
    return (
        step["lost"] == 0
        and step["received"] > 0
        and p99 is not None
        and p99 <= P99_LIMIT_MS
        and step.get("skipped", 0) == 0
    )


def fms(v: float | None) -> str:
    """Milliseconds (or any figure) to one decimal; "-" for none."""
    return "-" if v is None else f"{v:.1f}"


def step_line(label: str, step: dict[str, Any], cpu: dict[str, float], unit: str) -> str:
    lat = step["latency"]
    extra = ""
    if step.get("errors"):
        extra += f" errors {step['errors']} {step['errorSamples'][:1]}"
    if step.get("closes"):
        extra += f" closed {step['closes']} {step['closeSamples'][:2]}"
    if step.get("skipped"):
        extra += f" skipped {step['skipped']}"
    if step["received"] > step["expected"]:
        extra += f" (+{step['received'] - step['expected']:,} more than expected)"
    if step.get("ack", {}).get("n"):
        extra += f"  (ack p50 {fms(step['ack']['p50'])} p99 {fms(step['ack']['p99'])} ms)"
    return (
        f"    {label}: {step['deliveredPerSec']:>9,.0f} {unit}  p50 {fms(lat['p50'])} ms"
        f"  p99 {fms(lat['p99'])} ms  max {fms(lat['max'])} ms  lost {step['lost']:,}/"
        f"{step['expected']:,}  cpu {fmt_cpu(cpu)}{extra}"
    )


def ladder(
    run_step: Any, start: float, s: Settings, label: str, unit: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Offer increasing rates until a step fails, then bisect; returns the best passing
    step and every step."""
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    rate = start
    low, high = 0.0, 0.0

    def run(rate: float) -> bool:
        for attempt in range(1 + s.retries):
            step = run_step(rate)
            steps.append(step)
            ok = passed(step)
            # Run a failed step again when only its tail was late (the median was fine):
            # that is a stall, maybe from elsewhere on the machine, not the limit.
            p50 = step["latency"]["p50"]
            again = not ok and attempt < s.retries and p50 is not None and p50 <= P99_LIMIT_MS
            verdict = "pass" if ok else ("fail, again" if again else "FAIL")
            log(step_line(f"{label} {rate:8.1f}/s {verdict}", step, step["cpu"], unit))
            if not again:
                break
        nonlocal best
        if ok and (best is None or step["deliveredPerSec"] > best["deliveredPerSec"]):
            best = step
        return ok

    if not run(rate):
        # Even the first rate is too much: go down until one passes.
        high = rate
        for _ in range(3):
            rate /= 4
            if run(rate):
                low = rate
                break
            high = rate
        else:
            return best, steps
    else:
        low = rate
        for _ in range(s.max_steps - 1):
            rate *= s.growth
            if not run(rate):
                high = rate
                break
            low = rate
        else:
            if best is not None:
                best["capped"] = True
                log("    (every offered rate passed: the figure is a lower bound)")
            return best, steps
    for _ in range(s.bisect):
        rate = (low + high) / 2
        if run(rate):
            low = rate
        else:
            high = rate
    return best, steps


def connect(client: Client, s: Settings, set_name: str, base: int, count: int) -> dict[str, Any]:
    r = client.cmd(
        s.connect_timeout + 30,
        cmd="connect",
        set=set_name,
        **{"from": base},
        count=count,
        concurrency=s.connect_concurrency,
        timeoutMs=int(s.connect_timeout * 1000),
    )
    if r["failed"]:
        log(f"    connect failures: {r['failed']} {r['reasons']}")
    return dict(r)


def settle(client: Client, set_name: str, s: Settings) -> None:
    missing = client.cmd(
        s.connect_timeout + 30,
        cmd="reconnect",
        set=set_name,
        concurrency=s.connect_concurrency,
        timeoutMs=int(s.connect_timeout * 1000),
    )
    if missing["requested"]:
        log(f"    reconnected {missing['ready']}/{missing['requested']} dropped connections")
    client.cmd(40, cmd="quiet", quietMs=400, maxMs=15000)


def scenario_fanout(impl: str, env: Env, s: Settings, results: Results) -> None:
    members = s.fanout_members
    log(f"  fan-out: {members:,} members of one group, messages to the group")
    with env.session(impl) as (server, client, meter):
        r = connect(client, s, "group", FANOUT_BASE, members)
        log(f"    connected {r['ready']:,}/{members:,} in {r['seconds']:.1f} s")
        if r["ready"] < members:
            raise BenchError("not every member connected")
        client.cmd(60, cmd="quiet", quietMs=1000, maxMs=45000)
        senders = list(range(FANOUT_BASE, FANOUT_BASE + min(FANOUT_SENDERS, members)))
        profiler = (
            Profiler(s.profile, server.pid, f"{impl}-fanout") if impl == "flask-chat" else None
        )

        def run(rate: float) -> dict[str, Any]:
            settle(client, "group", s)
            meter.start()
            step = client.cmd(
                s.step_seconds + s.drain_ms / 1000 + 30,
                cmd="fanout",
                set="group",
                senders=senders,
                to="1_Group",
                rate=rate,
                seconds=s.step_seconds,
                drainMs=s.drain_ms,
            )
            step["cpu"] = meter.stop()
            step["server_cpu_s"] = meter.seconds["server"]
            step["rate"] = rate
            return dict(step)

        best, steps = ladder(run, s.fanout_start, s, "offered msgs", "deliveries/s")
        if profiler:
            profiler.stop()
        if best:
            log(
                f"    best step: {best['deliveredPerSec']:,.0f} deliveries/s,"
                f" server CPU {cpu_per_delivery(best):.1f} us per delivery"
            )
    results.put(impl, "fanout", best["deliveredPerSec"] if best else 0.0)
    results.put(impl, "fanout_capped", bool(best and best.get("capped")))
    results.put(impl, "fanout_p99", best["latency"]["p99"] if best else None)
    results.put(impl, "fanout_client_cpu", best["clientCpu"] if best else None)
    results.put(impl, "fanout_cpu_us", cpu_per_delivery(best))
    results.put(impl, "fanout_steps", steps)


def scenario_direct(impl: str, env: Env, s: Settings, results: Results) -> None:
    users = s.direct_users
    log(f"  1:1: {users:,} users in pairs")
    with env.session(impl) as (server, client, meter):
        r = connect(client, s, "pairs", DIRECT_BASE, users)
        log(f"    connected {r['ready']:,}/{users:,} in {r['seconds']:.1f} s")
        if r["ready"] < users:
            raise BenchError("not every user connected")
        client.cmd(60, cmd="quiet", quietMs=500, maxMs=30000)
        profiler = (
            Profiler(s.profile, server.pid, f"{impl}-direct-ws") if impl == "flask-chat" else None
        )

        def run(rate: float) -> dict[str, Any]:
            settle(client, "pairs", s)
            meter.start()
            step = client.cmd(
                s.step_seconds + s.drain_ms / 1000 + 30,
                cmd="direct",
                set="pairs",
                base=DIRECT_BASE,
                rate=rate,
                seconds=s.step_seconds,
                drainMs=s.drain_ms,
            )
            step["cpu"] = meter.stop()
            step["server_cpu_s"] = meter.seconds["server"]
            step["rate"] = rate
            return dict(step)

        log("    websocket send frames:")
        best, steps = ladder(run, s.direct_start, s, "offered msgs", "msgs/s      ")
        if profiler:
            profiler.stop()
        results.put(impl, "direct_ws", best["deliveredPerSec"] if best else 0.0)
        results.put(impl, "direct_ws_capped", bool(best and best.get("capped")))
        results.put(impl, "direct_ws_p99", best["latency"]["p99"] if best else None)
        results.put(impl, "direct_ws_client_cpu", best["clientCpu"] if best else None)
        results.put(impl, "direct_ws_cpu_us", cpu_per_delivery(best))
        if best:
            log(
                f"    best step: {best['deliveredPerSec']:,.0f} msgs/s,"
                f" server CPU {cpu_per_delivery(best):.1f} us per delivery"
            )
        at = run(1000.0)
        log(step_line("at an offered 1,000/s      ", at, at["cpu"], "msgs/s      "))
        results.put(impl, "direct_ws_1000_p99", at["latency"]["p99"])
        results.put(impl, "direct_ws_1000_ok", passed(at))

        path = "POST /chats/send_message" if impl == "flask-chat" else "POST /send"
        log(f"    HTTP {path}:")
        settle(client, "pairs", s)
        profiler = (
            Profiler(s.profile, server.pid, f"{impl}-direct-http") if impl == "flask-chat" else None
        )
        meter.start()
        closed = client.cmd(
            s.step_seconds * 2 + s.drain_ms / 1000 + 60,
            cmd="http",
            mode="closed",
            set="pairs",
            base=DIRECT_BASE,
            concurrency=s.http_concurrency,
            seconds=s.step_seconds * 2,
            drainMs=s.drain_ms,
            okStatus=201,
        )
        cpu = meter.stop()
        if profiler:
            profiler.stop()
        log(http_line(f"{s.http_concurrency} connections back to back", closed, cpu))
        resp = closed["response"]
        results.put(impl, "http_rate", closed["answeredPerSec"])
        results.put(impl, "http_p50", resp["p50"])
        results.put(impl, "http_p99", resp["p99"])
        results.put(impl, "http_ok", closed["statuses"].get("201", 0) == closed["answered"])
        if impl == "flask-chat":
            # The yardstick: the same requests to a bare JSON route of the same server.
            meter.start()
            bare = client.cmd(
                s.step_seconds * 2 + 60,
                cmd="http",
                mode="closed",
                set="pairs",
                base=DIRECT_BASE,
                concurrency=s.http_concurrency,
                seconds=s.step_seconds * 2,
                drainMs=0,
                okStatus=200,
                path="/bare",
                deliver=False,
            )
            cpu = meter.stop()
            log(http_line(f"POST /bare, {s.http_concurrency} connections", bare, cpu, False))
            results.put(impl, "http_bare_rate", bare["answeredPerSec"])
            results.put(impl, "http_bare_p99", bare["response"]["p99"])
            results.put(impl, "http_bare_ok", bare["statuses"].get("200", 0) == bare["answered"])
        settle(client, "pairs", s)
        meter.start()
        opened = client.cmd(
            s.step_seconds + s.drain_ms / 1000 * 2 + 60,
            cmd="http",
            mode="open",
            set="pairs",
            base=DIRECT_BASE,
            rate=1000,
            concurrency=64,
            seconds=s.step_seconds,
            drainMs=s.drain_ms,
            okStatus=201,
        )
        cpu = meter.stop()
        log(http_line("at an offered 1,000 sends/s", opened, cpu))
        resp = opened["response"]
        if opened["answered"] < opened["requests"]:
            resp["p99"] = None  # some never answered: no p99 to speak of
        results.put(impl, "http_1000_p50", resp["p50"])
        results.put(impl, "http_1000_p99", resp["p99"])
        results.put(impl, "http_1000_delivery_p99", opened["latency"]["p99"])
        results.put(impl, "direct_steps", steps)


def http_line(label: str, r: dict[str, Any], cpu: dict[str, float], delivered: bool = True) -> str:
    resp = r["response"]
    deliveries = (
        f"  delivered {r['received']:,}/{r['expected']:,} (p99 {fms(r['latency']['p99'])} ms)"
        if delivered
        else ""
    )
    return (
        f"    {label}: {r['answeredPerSec']:,.0f} {'sends' if delivered else 'requests'}/s"
        f" ({r['answered']:,}/{r['requests']:,} answered)  response p50 {fms(resp['p50'])} ms"
        f" p99 {fms(resp['p99'])} ms max {fms(resp['max'])} ms  statuses {r['statuses']}"
        f"{deliveries}  cpu {fmt_cpu(cpu)}"
    )


def cpu_per_delivery(step: dict[str, Any] | None) -> float | None:
    """Server CPU microseconds per counted delivery in a load step."""
    if not step or not step["received"]:
        return None
    return float(step["server_cpu_s"]) * 1e6 / int(step["received"])


def redis_clients(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("clients")["connected_clients"])
    finally:
        client.close()


def scenario_idle(impl: str, env: Env, s: Settings, results: Results) -> None:
    n = s.idle_connections
    log(f"  idle: {n:,} connections, {s.connect_concurrency} opening at a time")
    with env.session(impl) as (server, client, meter):
        warm_up(client, s)
        before = rss_kb(server.pid)
        profiler = (
            Profiler(s.profile, server.pid, f"{impl}-idle-connect")
            if impl == "flask-chat"
            else None
        )
        meter.start()
        r = connect(client, s, "idle", IDLE_BASE, n)
        cpu = meter.stop()
        if profiler:
            profiler.stop()
        timed_out = " (timed out)" if r["timedOut"] else ""
        log(
            f"    connected {r['ready']:,}/{n:,} in {r['seconds']:.1f} s:"
            f" {r['rate']:,.0f} connects/s{timed_out}  cpu {fmt_cpu(cpu)}"
        )
        client.cmd(60, cmd="quiet", quietMs=1000, maxMs=20000)
        time.sleep(2.0)
        after = rss_kb(server.pid)
        per = (after - before) * 1024 / max(1, r["ready"])
        log(
            f"    server RSS {before / 1024:,.1f} MB -> {after / 1024:,.1f} MB:"
            f" {per / 1024:.2f} KB per connection"
            f" (Redis has {redis_clients(env.redis_url)} clients)"
        )
        time.sleep(3.0)
        pr = client.cmd(60, cmd="probe", set="idle", sample=500, timeoutMs=10000)
        log(
            f"    after holding them: {pr['open']:,} open; {pr['answered']}/{pr['probed']}"
            f" sampled connections answered a ping in {pr['seconds']:.2f} s"
        )
        results.put(impl, "idle_rate", r["rate"])
        results.put(impl, "idle_rss_kb", per / 1024)
        results.put(impl, "idle_held", pr["open"] if pr["answered"] == pr["probed"] else 0)
        results.put(impl, "idle_requested", n)
        client.cmd(60, cmd="close", set="idle")


def warm_up(client: Client, s: Settings) -> None:
    """First-use imports, the hub, the Redis subscriber: 20 users in no group connect
    and leave, so that what is measured next is the steady cost."""
    connect(client, s, "warm", WARM_BASE, 20)
    client.cmd(30, cmd="quiet", quietMs=300, maxMs=5000)
    client.cmd(30, cmd="close", set="warm")
    time.sleep(1.0)


def scenario_group_connect(impl: str, env: Env, s: Settings, results: Results) -> None:
    members = s.fanout_members
    log(f"  group connect: {members:,} members of one group, {s.connect_concurrency} at a time")
    with env.session(impl) as (server, client, meter):
        warm_up(client, s)
        client.cmd(30, cmd="presence", reset=True)
        c0 = cpu_seconds(server.pid)
        meter.start()
        r = connect(client, s, "group", FANOUT_BASE, members)
        cpu = meter.stop()
        # Presence frames may still be on their way once every member has its connect-
        # ending frame; the group has settled when no frame came for a second.
        q = client.cmd(120, cmd="quiet", quietMs=1000, maxMs=60000)
        cpu_total = cpu_seconds(server.pid) - c0
        pr = client.cmd(30, cmd="presence")
        settled = r["seconds"] + q["untilLast"]
        log(
            f"    connected {r['ready']:,}/{members:,} in {r['seconds']:.2f} s"
            f" ({r['rate']:,.0f} connects/s)  cpu {fmt_cpu(cpu)}"
        )
        log(
            f"    quiet after {settled:.2f} s{' (still busy: timed out)' if q['timedOut'] else ''};"
            f" {pr['frames']:,} presence frames received; server CPU {cpu_total:.2f} s"
            f" ({cpu_total * 1000 / max(1, r['ready']):.2f} ms per member)"
        )
        if r["ready"] < members:
            raise BenchError("not every member connected")
        results.put(impl, "group_connect_s", r["seconds"])
        results.put(impl, "group_settle_s", None if q["timedOut"] else settled)
        results.put(impl, "group_presence_frames", pr["frames"])
        results.put(impl, "group_cpu_ms", cpu_total * 1000 / members)
        results.put(impl, "group_members", members)


def scenario_churn(impl: str, env: Env, s: Settings, results: Results) -> None:
    users = s.churn_users
    churners = list(range(FANOUT_BASE, FANOUT_BASE + users, 5))
    period = len(churners) / s.churn_rate
    log(
        f"  churn: {users:,} group members connected; {len(churners)} of them reconnect"
        f" every {period:.1f} s ({s.churn_rate:g}/s, gap {s.churn_gap_ms} ms)"
        f" for {s.churn_seconds:g} s while the other {users - len(churners)} watch presence"
    )
    with env.session(impl) as (server, client, meter):
        r = connect(client, s, "churn", FANOUT_BASE, users)
        log(f"    connected {r['ready']:,}/{users:,} in {r['seconds']:.1f} s")
        if r["ready"] < users:
            raise BenchError("not every user connected")
        client.cmd(60, cmd="quiet", quietMs=1000, maxMs=45000)
        meter.start()
        c = client.cmd(
            s.churn_seconds + s.connect_timeout + 60,
            cmd="churn",
            set="churn",
            churners=churners,
            periodMs=period * 1000,
            seconds=s.churn_seconds,
            gapMs=s.churn_gap_ms,
            timeoutMs=int(s.connect_timeout * 1000),
            quietMs=1000,
            maxQuietMs=20000,
        )
        cpu = meter.stop()
    lat = c["latency"]
    extra = ""
    if c["failed"]:
        extra += f"  failed {c['failed']} {c['reasons']}"
    if c["skipped"]:
        extra += f"  skipped {c['skipped']} (previous reconnect not done)"
    if c["pendingAtEnd"]:
        extra += f"  {c['pendingAtEnd']} never finished"
    if c["closes"]:
        extra += f"  observers closed {c['closes']} {c['closeSamples'][:2]}"
    log(
        f"    {c['reconnects']:,} reconnects in {c['sendSeconds']:.1f} s: {c['perSec']:,.1f}/s"
        f"  latency p50 {fms(lat['p50'])} ms p99 {fms(lat['p99'])} ms max {fms(lat['max'])} ms"
        f"  cpu {fmt_cpu(cpu)}{extra}"
    )
    pr = c["presence"]
    n = max(1, c["reconnects"])
    obs = max(1, c["observers"])
    if impl == "flask-chat" or pr["tracked"]:
        log(
            f"    {c['observers']} observers got {pr['tracked']:,} presence frames"
            f" ({pr['tracked'] / n:.1f} per reconnect, {pr['tracked'] / n / obs:.2f} per"
            f" observer), {pr['offline']:,} offline + {pr['online']:,} online;"
            f" flaps {pr['flaps']:,} ({pr['flaps'] / n:.1f} per reconnect,"
            f" {100 * pr['flaps'] / n / obs:.0f}% of observer views)"
        )
        if pr["staleOffline"]:
            log(f"    observers left seeing a connected user offline: {pr['staleOffline']:,}")
        if pr["unparsed"]:
            log(f"    presence frames of an unknown shape: {pr['unparsed']} {pr['samples'][:1]}")
    results.put(impl, "churn_rate", c["perSec"])
    results.put(impl, "churn_p50", lat["p50"])
    results.put(impl, "churn_p99", lat["p99"])
    results.put(impl, "churn_failed", c["failed"] + c["pendingAtEnd"])
    results.put(impl, "churn_reconnects", c["reconnects"])
    results.put(impl, "churn_observers", c["observers"])
    results.put(impl, "churn_presence", pr)
    if impl == "flask-chat" or pr["tracked"]:
        results.put(impl, "churn_presence_per_reconnect", pr["tracked"] / n)
        results.put(impl, "churn_changes_per_reconnect", pr["changes"] / n)
        results.put(impl, "churn_flaps", pr["flaps"])
        results.put(impl, "churn_flaps_per_reconnect", pr["flaps"] / n)
        results.put(impl, "churn_stale_offline", pr["staleOffline"])


class Env:
    """What every scenario needs: Redis, the Node binary, tokens, a log folder."""

    def __init__(self, s: Settings, redis_url: str, node: str, logdir: str):
        self.s = s
        self.redis_url = redis_url
        self.node = node
        self.logdir = logdir
        self.tokens_file = os.path.join(logdir, "tokens.json")
        self._make_tokens()

    def _make_tokens(self) -> None:
        from bench_app import create_app, make_tokens

        app = create_app(self.redis_url, self.s.fanout_members)
        ids = [
            *range(FANOUT_BASE, FANOUT_BASE + self.s.fanout_members),
            *range(DIRECT_BASE, DIRECT_BASE + self.s.direct_users),
            *range(IDLE_BASE, IDLE_BASE + self.s.idle_connections),
            *range(WARM_BASE, WARM_BASE + 20),
        ]
        with open(self.tokens_file, "w") as f:
            json.dump(make_tokens(app, ids), f)

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        client.flushall()
        client.close()

    def session(self, impl: str) -> Any:
        env = self

        class _Session:
            def __enter__(self) -> tuple[Server, Client, CpuMeter]:
                env.flush()
                self.server = Server(
                    impl,
                    env.redis_url,
                    env.s.fanout_members,
                    env.logdir,
                    env.node,
                    env.s.redis_max_connections,
                    env.s.flask_chat_path,
                )
                try:
                    self.client = Client(
                        env.node, impl, self.server.port, env.tokens_file, env.logdir
                    )
                except BaseException:
                    self.server.stop()
                    raise
                pids = {
                    "server": self.server.pid,
                    "redis": env.redis_pid,
                    "client": self.client.proc.pid,
                }
                return self.server, self.client, CpuMeter(pids)

            def __exit__(self, *exc: Any) -> None:
                try:
                    if exc[0] is BenchError:
                        tail = self.server.log_tail(15)
                        if tail.strip():
                            log(f"    server log tail:\n{tail}")
                finally:
                    try:
                        self.client.stop()
                    finally:
                        self.server.stop()

        return _Session()

    redis_pid = 0


RUNNERS = {
    "fanout": scenario_fanout,
    "direct": scenario_direct,
    "group-connect": scenario_group_connect,
    "churn": scenario_churn,
    "idle": scenario_idle,
}


# -- the report ------------------------------------------------------------------------


def fmt(v: Any, spec: str = ",.0f") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return format(v, spec)


def ratio(a: Any, b: Any, lower_is_better: bool = False) -> str:
    if not a or not b:
        return "-"
    return f"{(b / a) if lower_is_better else (a / b):.2f}x"


def report(results: Results, impls: list[str], scenarios: list[str], s: Settings) -> None:
    rows = [
        ("fan-out deliveries/s (p99<=100ms, 0 lost)", "fanout", ",.0f", False),
        ("  p99 at that rate (ms)", "fanout_p99", ".1f", True),
        ("  server CPU us per delivery", "fanout_cpu_us", ".1f", True),
        ("1:1 ws msgs/s (p99<=100ms, 0 lost)", "direct_ws", ",.0f", False),
        ("  server CPU us per delivery", "direct_ws_cpu_us", ".1f", True),
        ("1:1 ws p99 at 1,000 msgs/s (ms)", "direct_ws_1000_p99", ".1f", True),
        (f"1:1 HTTP sends/s ({s.http_concurrency} conns)", "http_rate", ",.0f", False),
        ("  response p50 (ms)", "http_p50", ".1f", True),
        ("  response p99 (ms)", "http_p99", ".1f", True),
        (f"bare JSON route req/s ({s.http_concurrency} conns)", "http_bare_rate", ",.0f", False),
        ("1:1 HTTP p99 at 1,000 sends/s (ms)", "http_1000_p99", ".1f", True),
        (f"group connect: {s.fanout_members:,} members (s)", "group_connect_s", ".2f", True),
        ("  until presence quiet (s)", "group_settle_s", ".2f", True),
        ("  presence frames received", "group_presence_frames", ",.0f", True),
        ("  server CPU ms per member", "group_cpu_ms", ".2f", True),
        ("churn: reconnects/s", "churn_rate", ",.1f", False),
        ("  reconnect p50 (ms)", "churn_p50", ".1f", True),
        ("  reconnect p99 (ms)", "churn_p99", ".1f", True),
        ("  presence frames per reconnect", "churn_presence_per_reconnect", ",.1f", True),
        ("  presence changes per reconnect", "churn_changes_per_reconnect", ",.1f", True),
        ("  offline->online flaps per reconnect", "churn_flaps_per_reconnect", ",.1f", True),
        ("  left seeing a connected user offline", "churn_stale_offline", ",.0f", True),
        ("idle: connects/s", "idle_rate", ",.0f", False),
        ("idle: RSS per connection (KB)", "idle_rss_kb", ".2f", True),
        ("idle: connections held", "idle_held", ",.0f", False),
    ]
    others = [i for i in impls if i != "flask-chat"]
    head = f"{'':44}" + "".join(f"{LABELS[i]:>16}" for i in impls)
    if "flask-chat" in impls:
        head += "".join(f"{'fc vs ' + LABELS[o]:>24}" for o in others)
    log("")
    log("=" * len(head))
    log(head)
    log("-" * len(head))
    for label, key, spec, lower in rows:
        if all(results.get(i, key) is None for i in impls):
            continue
        cells = [
            (">=" if results.get(i, key + "_capped") else "") + fmt(results.get(i, key), spec)
            for i in impls
        ]
        line = f"{label:44}" + "".join(f"{c:>16}" for c in cells)
        if "flask-chat" in impls:
            for o in others:
                line += f"{ratio(results.get('flask-chat', key), results.get(o, key), lower):>24}"
        log(line)
    log("=" * len(head))
    if CpuMeter.worst_other > 0.15:
        log(
            f"WARNING: other processes on this machine used up to {CpuMeter.worst_other:.1f} CPUs"
            " while figures were taken ('other' in the cpu columns): they are skewed."
        )
    log("'>=': every offered rate passed, so that figure is only a lower bound (and so are")
    log("ratios with it).")
    log("Ratios are 'how many times better flask-chat is' (for latency, times, CPU, RSS and")
    log("presence counts: the other's figure divided by flask-chat's). Client CPU near 100%")
    log("means the driver, not the server, set the figure (see the cpu columns of the steps).")
    if "flask-chat" not in impls:
        return
    log("")
    log("flask-chat targets (one process):")

    def fc(key: str) -> Any:
        return results.get("flask-chat", key)

    def target(name: str, value: Any, ok: bool | None) -> None:
        mark = "n/a " if ok is None else ("MET " if ok else "MISS")
        log(f"  [{mark}] {name}: {value}")

    def vs(name: str, key: str, need: float, other: str = "node-ws") -> None:
        a, b = fc(key), results.get(other, key)
        if a is None and b is None:
            return  # that scenario did not run
        if a is None or b is None:
            target(f"{name} >= {need}x {LABELS[other]}", "not measured", None)
        else:
            target(
                f"{name} >= {need}x {LABELS[other]}",
                f"{a:,.0f} vs {b:,.0f}: {a / b:.2f}x" if b else "inf",
                b == 0 or a / b >= need,
            )

    vs("fan-out deliveries/s", "fanout", 1.5)
    vs("1:1 websocket msgs/s", "direct_ws", 1.0)
    sends, bare = fc("http_rate"), fc("http_bare_rate")
    if sends is not None:
        target(
            "HTTP send_message sends/s >= 0.7x a bare JSON route on the same server",
            f"{sends:,.0f} vs {bare:,.0f}/s: {sends / bare:.2f}x" if bare else "not measured",
            sends / bare >= 0.7 if bare else None,
        )
        p99 = fc("http_1000_p99")
        target(
            "HTTP send_message p99 <= 25 ms at 1,000 sends/s",
            f"{p99} ms" if p99 is not None else "not every request was answered",
            p99 is not None and p99 <= 25,
        )
    vs("connects/s", "idle_rate", 0.6)
    a, b = fc("group_connect_s"), results.get("node-ws", "group_connect_s")
    if a is not None or "group-connect" in scenarios:
        name = f"time to connect a group's {s.fanout_members:,} members <= 2x Node ws's"
        note = "" if s.fanout_members >= 1000 else " (fewer than 1,000 members)"
        if a is None or not b:
            target(name, "not measured", None)
        else:
            target(name, f"{a:.2f} s vs {b:.2f} s: {a / b:.1f}x{note}", a / b <= 2)
    flaps = fc("churn_flaps")
    if flaps is not None or "churn" in scenarios:
        if flaps is None or not fc("churn_reconnects"):
            target("churn: 0 offline->online flaps", "not measured", None)
        else:
            target(
                "churn: 0 offline->online flaps",
                f"{flaps:,} in {fc('churn_reconnects'):,} reconnects"
                f" seen by {fc('churn_observers')} observers",
                flaps == 0,
            )
    if fc("idle_rss_kb") is not None:
        target(
            "RSS per idle connection <= 5 KB", f"{fc('idle_rss_kb'):.2f} KB", fc("idle_rss_kb") <= 5
        )
        held = fc("idle_held")
        req = fc("idle_requested")
        note = "" if req >= 15000 else f" (only {req:,} tried: --quick)"
        target(
            "15,000 connections held", f"{held:,}{note}", held >= 15000 if req >= 15000 else None
        )


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; ~2.5 minutes")
    parser.add_argument(
        "--only", action="append", help=f"servers to run ({', '.join(IMPLEMENTATIONS)})"
    )
    parser.add_argument(
        "--scenario", action="append", help=f"scenarios to run ({', '.join(SCENARIOS)})"
    )
    parser.add_argument("--fanout-members", type=int)
    parser.add_argument("--direct-users", type=int)
    parser.add_argument("--idle-connections", type=int)
    parser.add_argument("--step-seconds", type=float, help="length of each load step")
    parser.add_argument(
        "--churn-users", type=int, help="group members connected in the churn scenario (500)"
    )
    parser.add_argument(
        "--churn-rate", type=float, default=20.0, help="reconnects a second in the churn scenario"
    )
    parser.add_argument("--churn-seconds", type=float, help="how long the churn lasts (12)")
    parser.add_argument(
        "--churn-gap-ms",
        type=int,
        default=0,
        help="pause between a churner's close and its new connection (0: at once)",
    )
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument(
        "--redis-max-connections",
        type=int,
        default=1000,
        help="flask-chat's Redis pool size (?max_connections= on its URL); 0: redis-py's default",
    )
    parser.add_argument(
        "--flask-chat",
        metavar="DIR",
        help="serve flask_chat from this checkout (a folder holding flask_chat/) instead",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy the flask-chat server into DIR")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' and clients' logs"
    )
    args = parser.parse_args()

    def pick(values: list[str] | None, allowed: tuple[str, ...]) -> list[str]:
        chosen = [v.strip() for arg in values or [] for v in arg.split(",") if v.strip()]
        for v in chosen:
            if v not in allowed:
                parser.error(f"unknown {v!r}: choose from {', '.join(allowed)}")
        return [a for a in allowed if a in chosen] if chosen else list(allowed)

    impls = pick(args.only, IMPLEMENTATIONS)
    scenarios = pick(args.scenario, SCENARIOS)
    q = args.quick
    fanout_members = args.fanout_members or (200 if q else 1000)
    churn_users = args.churn_users or min(200 if q else 500, fanout_members)
    if churn_users > fanout_members:
        parser.error("--churn-users are members of the group: at most --fanout-members")
    s = Settings(
        quick=q,
        fanout_members=fanout_members,
        direct_users=args.direct_users or (400 if q else 2000),
        idle_connections=args.idle_connections or (1000 if q else 15000),
        step_seconds=args.step_seconds or (1.0 if q else 3.0),
        drain_ms=1500 if q else 3000,
        growth=2.0 if q else 1.5,
        bisect=0 if q else 2,
        max_steps=4 if q else 14,
        retries=0 if q else 1,  # a failed step is run again once: one stall is not a limit
        fanout_start=20.0 if q else 10.0,
        direct_start=500.0,
        http_concurrency=32,
        connect_concurrency=args.connect_concurrency,
        connect_timeout=30.0 if q else 90.0,
        churn_users=churn_users,
        churn_rate=args.churn_rate,
        churn_seconds=args.churn_seconds or (4.0 if q else 12.0),
        churn_gap_ms=args.churn_gap_ms,
        profile=args.profile,
        redis_max_connections=args.redis_max_connections,
        flask_chat_path=os.path.abspath(args.flask_chat) if args.flask_chat else None,
    )
    if "socketio" in impls:
        try:
            import flask_socketio  # noqa: F401
        except ImportError:
            parser.error(
                "Flask-SocketIO is missing: pip install -r benchmarks/requirements.txt "
                "(or --only flask-chat,node-ws)"
            )
    fd_limit = raise_fd_limit()
    node = ensure_node_modules()
    node_version = subprocess.run(
        [node, "--version"], capture_output=True, text=True
    ).stdout.strip()
    commit = (
        subprocess.run(
            ["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True
        ).stdout.strip()
        or "?"
    )
    log(
        f"flask-chat real-time benchmark ({'quick' if q else 'full'}): {platform.python_version()} "
        f"/ node {node_version} / {os.cpu_count()} CPUs / fd limit {fd_limit:,} / commit {commit}"
    )
    log(f"servers: {', '.join(LABELS[i] for i in impls)}; scenarios: {', '.join(scenarios)}")
    if s.flask_chat_path:
        log(f"flask_chat served from {s.flask_chat_path}")
    logdir = tempfile.mkdtemp(prefix="flask-chat-realtime-")
    redis_server = RedisServer(port=free_port())
    started = time.monotonic()
    results = Results()
    try:
        redis_url = redis_server.start()
        assert redis_server.process is not None
        env = Env(s, redis_url, node, logdir)
        env.redis_pid = redis_server.process.pid
        for scenario in scenarios:
            for impl in impls:
                log(f"\n[{LABELS[impl]}]")
                t0 = time.monotonic()
                try:
                    RUNNERS[scenario](impl, env, s, results)
                except BenchError as exc:
                    log(f"    FAILED: {exc}")
                    results.put(impl, f"{scenario}_failed", str(exc))
                log(f"    ({time.monotonic() - t0:.0f} s)")
        report(results, impls, scenarios, s)
        log(f"\ntotal time {time.monotonic() - started:.0f} s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {"settings": s.__dict__, "results": results.values}, f, indent=1, default=str
                )
    finally:
        redis_server.stop()
        if args.keep_logs:
            log(f"logs: {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    main()
