"""Jobs with real RQ worker processes and real rq-scheduler processes: logout, the
offline sweep, races with sends, a killed worker, one sweep per interval, a DB outage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import jobs_app
import pytest
import redis
from conftest import close_chat, make_online
from flask import Flask
from helpers import ROOT, TcpProxy, form_login, form_logout, wait_for
from sqlalchemy import create_engine, func, select, text

from flask_chat.cache import CacheEntry
from flask_chat.jobs import abandoned_retry_bound, queue, schedule_sweep
from flask_chat.models import messages, views

HERE = os.path.dirname(os.path.abspath(__file__))
JOBS_APP = os.path.join(HERE, "jobs_app.py")


@pytest.fixture
def env(redis_url: str, database_url: str) -> dict[str, str]:
    return dict(
        os.environ,
        CHAT_REDIS_URL=redis_url,
        CHAT_DATABASE_URL=database_url,
        CHAT_DATABASE_AUTO_UPGRADE="true",
    )


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Flask]:
    application = jobs_app.create_app(
        {
            "CHAT_REDIS_URL": env["CHAT_REDIS_URL"],
            "CHAT_DATABASE_URL": env["CHAT_DATABASE_URL"],
            "CHAT_DATABASE_AUTO_UPGRADE": True,
        }
    )
    yield application
    close_chat(application)


def flask_chat_cli(
    env: dict[str, str], *args: str, app: str = JOBS_APP, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", app, "chat", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def spawn(env: dict[str, str], *args: str, app: str = JOBS_APP) -> subprocess.Popen[str]:
    # Its own process group: a worker's forked work horse is killed with it.
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", app, "chat", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended meanwhile
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def kill_9(proc: subprocess.Popen[str]) -> str:
    """kill -9 the process and its work horse (RQ forks one per job, in a session of
    its own), as when a machine dies."""
    for pid in [*children(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone
    return proc.communicate(timeout=30)[0]


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        return kill_9(proc)


def sql_count(url: str, table: Any = messages) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)
    finally:
        engine.dispose()


def run_worker(env: dict[str, str], app: str = JOBS_APP) -> str:
    result = flask_chat_cli(env, "worker", "--burst", app=app)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_logout_runs_persist_then_clear_on_a_real_worker(
    env: dict[str, str], database_url: str
) -> None:
    """The demo's own logout (Flask-Login) enqueues the job; `flask chat worker` runs it."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import chat_app

    demo = chat_app.create_app(
        {
            "TESTING": True,
            "CHAT_REDIS_URL": env["CHAT_REDIS_URL"],
            "CHAT_DATABASE_URL": database_url,
        }
    )
    try:
        alice = demo.test_client()
        form_login(alice, "alice")
        with demo.app_context():
            chat = demo.extensions["chat"]
            for i in range(3):
                chat.send_message(1, "2_User", f"before logout {i}")
        form_logout(alice)
        with demo.app_context():
            assert chat.history(1) != {}  # nothing happens until a worker runs the job
        run_worker(env, app=os.path.join(ROOT, "examples", "chat_app.py"))
        with demo.app_context():
            assert chat.history(1) == {}  # alice logged out: persisted, then cleared
            assert chat.history(2) != {}  # bob did not log out
        assert sql_count(database_url) == 3
    finally:
        close_chat(demo)


def test_a_user_still_online_elsewhere_is_persisted_not_cleared(
    app: Flask, env: dict[str, str], database_url: str
) -> None:
    chat = app.extensions["chat"]
    make_online(app, 1)
    with app.app_context():
        chat.send_message(1, "2_User", "kept")
        chat.logout(1)
    run_worker(env)
    with app.app_context():
        assert chat.history(1) != {}
    assert sql_count(database_url) == 1


def test_the_sweep_clears_only_offline_users(
    app: Flask, env: dict[str, str], database_url: str
) -> None:
    chat = app.extensions["chat"]
    make_online(app, 1)
    with app.app_context():
        chat.send_message(1, "2_User", "a to b")
        chat.send_message(3, "4_User", "c to d")
        from flask_chat.jobs import sweep

        queue(chat.state).enqueue(sweep)
    run_worker(env)
    with app.app_context():
        assert chat.history(1) != {}
        assert chat.history(2) == chat.history(3) == chat.history(4) == {}
        assert sorted(chat.cached_user_ids()) == [1]
    assert sql_count(database_url) == 2
    # The CLI does the same now, with a progress bar and a summary line.
    result = flask_chat_cli(env, "sweep")
    assert result.returncode == 0, result.stderr
    assert (
        "swept 1 users: 1 messages read, 0 written, 1 already stored; 0 caches cleared, "
        "1 kept (online)" in result.stdout
    )


def test_sends_racing_with_sweeps_lose_nothing(
    app: Flask, env: dict[str, str], database_url: str
) -> None:
    chat = app.extensions["chat"]
    sent: list[str] = []
    errors: list[BaseException] = []
    stop_sending = threading.Event()

    def hammer() -> None:
        try:
            with app.app_context():
                while not stop_sending.is_set() and len(sent) < 3000:
                    sent.append(chat.send_message(7, "8_User", f"m{len(sent)}").id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    from flask_chat.jobs import sweep

    sender = threading.Thread(target=hammer)
    sender.start()
    try:
        for _ in range(2):  # sweeps by a real worker while the sends go on
            with app.app_context():
                queue(chat.state).enqueue(sweep)
            run_worker(env)
    finally:
        stop_sending.set()
        sender.join(timeout=60)
    assert not errors
    with app.app_context():
        queue(chat.state).enqueue(sweep)
    run_worker(env)  # a last sweep after the sends stopped
    assert len(sent) > 0
    assert sql_count(database_url) == len(sent) == len(set(sent))
    with app.app_context():
        assert chat.history(7) == {} and chat.history(8) == {}


def fill(app: Flask, users: int, per_user: int) -> int:
    """Many cached messages, fast: appended straight into real caches."""
    chat = app.extensions["chat"]
    with app.app_context():
        entries = []
        n = 0
        for owner in range(10, 10 + users):
            for _ in range(per_user):
                mid = f"{1700000000000 + n:013d}-0000"
                n += 1
                entries.append(
                    CacheEntry(
                        owner,
                        f"{owner + 100000 - 10}_User",
                        mid,
                        '{"message_text": "x", "type": "sent", "image": null,'
                        f' "id": "{mid}", "sender_id": {owner},'
                        ' "sent_at": "2023-11-14T22:13:20.000Z"}',
                    )
                )
                if len(entries) >= 5000:
                    chat.state.cache.append(entries, score=1)
                    entries = []
        chat.state.cache.append(entries, score=1)
        return n


def test_kill_9_a_worker_mid_job_then_rerun(
    app: Flask, env: dict[str, str], database_url: str
) -> None:
    total = fill(app, users=1500, per_user=20)
    chat = app.extensions["chat"]
    from rq.registry import StartedJobRegistry

    from flask_chat.jobs import sweep

    env = dict(env, CHAT_PERSIST_BATCH_USERS="50")
    with app.app_context():
        q = queue(chat.state)
        q.enqueue(sweep, job_timeout=600)
        started = StartedJobRegistry(queue=q)
    worker = spawn(env, "worker")
    try:
        wait_for(
            lambda: sql_count(database_url) > 0,
            timeout=120,
            interval=0.01,
            what="the sweep to start writing",
        )
    finally:
        kill_9(worker)  # mid-job: the sweep is 30 batches long
    partial = sql_count(database_url)
    assert 0 < partial < total
    with app.app_context():
        started.cleanup()  # what RQ does for an abandoned job: it goes to failed
        queue(chat.state).enqueue(sweep, job_timeout=600)
    run_worker(env)
    assert sql_count(database_url) == total
    with app.app_context():
        assert list(chat.cached_user_ids()) == []


def test_the_sweep_registered_from_three_processes_runs_once_per_interval(
    app: Flask, env: dict[str, str]
) -> None:
    env = dict(env, CHAT_SWEEP_INTERVAL="2")
    chat = app.extensions["chat"]
    with app.app_context():
        schedule_sweep(chat.state, 2)  # a web process registering it too
        job_id = chat.state.keys.sweep_job_id()
    procs = [spawn(env, "scheduler", "--interval", "0.2") for _ in range(3)]
    procs.append(spawn(env, "worker"))
    start = time.monotonic()
    try:
        from rq.job import Job

        conn = redis.Redis.from_url(env["CHAT_REDIS_URL"])
        try:

            def runs() -> int:
                try:
                    return len(Job.fetch(job_id, connection=conn).results())
                except Exception:  # not created yet
                    return 0

            wait_for(lambda: runs() >= 3, timeout=60, interval=0.2, what="three sweeps")
            elapsed = time.monotonic() - start
            assert runs() <= elapsed / 2 + 2, (runs(), elapsed)
            assert conn.zcard("rq:scheduler:scheduled_jobs") == 1
        finally:
            conn.close()
    finally:
        outputs = [stop(p) for p in procs]
    assert all("Traceback" not in out for out in outputs), outputs


def test_a_database_outage_fails_the_job_and_it_retries_without_clearing(
    redis_url: str, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the outage is of a database server; SQLite has none")
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.up()
    via_proxy = database_url.replace(
        parts.netloc, f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    )
    env = dict(os.environ, CHAT_REDIS_URL=redis_url, CHAT_DATABASE_URL=via_proxy)
    app = jobs_app.create_app(
        {
            "CHAT_REDIS_URL": redis_url,
            "CHAT_DATABASE_URL": via_proxy,
            "CHAT_DATABASE_AUTO_UPGRADE": True,
        }
    )
    chat = app.extensions["chat"]
    worker = None
    try:
        with app.app_context():
            for i in range(5):
                chat.send_message(1, "2_User", f"during outage {i}")
            chat.state.history.engine.dispose()
            proxy.down()
            job = chat.logout(1)
        worker = spawn(env, "worker")
        from rq.job import JobStatus

        wait_for(
            lambda: job.get_status(refresh=True) == JobStatus.SCHEDULED,
            timeout=60,
            what="the failed job to be scheduled for a retry",
        )
        with app.app_context():
            assert len(chat.history(1)["2_User"]["messages"]) == 5  # nothing cleared
        assert sql_count(database_url) == 0
        proxy.up()
        wait_for(
            lambda: job.get_status(refresh=True) == JobStatus.FINISHED,
            timeout=90,
            what="the retry to succeed",
        )
        assert sql_count(database_url) == 5
        with app.app_context():
            assert chat.history(1) == {}
    finally:
        if worker is not None:
            out = stop(worker)
            assert "OperationalError" in out or "connection" in out.lower()
        proxy.down()
        close_chat(app)


def horse_of(worker: subprocess.Popen[str]) -> int | None:
    """The worker's work horse: the child that made a process group of its own (RQ's
    scheduler process, its other child, stays in the worker's)."""
    for pid in children(worker.pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:
            return pid
    return None


@contextmanager
def database_locked(url: str) -> Iterator[None]:
    """Hold the messages table so every write waits (a slow database, mid-batch)."""
    if url.startswith("postgresql"):
        engine = create_engine(url)
        conn = engine.connect()
        trans = conn.begin()
        conn.execute(text("LOCK TABLE chat_messages IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            trans.rollback()
            conn.close()
            engine.dispose()
    else:
        import sqlite3

        raw = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        raw.execute("BEGIN EXCLUSIVE")  # writers wait (busy_timeout, 30 s); readers go on
        try:
            yield
        finally:
            raw.execute("ROLLBACK")
            raw.close()


def test_kill_9_of_the_work_horse_mid_drain_loses_no_write_behind_record(
    app: Flask, env: dict[str, str], database_url: str
) -> None:
    """The drain took a batch off the queue and is writing it when its work horse is
    killed: RQ retries the job, which writes that batch first. Every message ends up in
    SQL exactly once, with its views, and nothing is left in Redis. (It used to pop the
    batch, so a kill dropped it; the caches still held the messages, but without member
    copies of group messages, CHAT_GROUP_MEMBER_CACHES = False, nothing else did.)"""
    chat = app.extensions["chat"]
    env = dict(env, CHAT_PERSIST_BATCH="10")
    with app.app_context():
        state = chat.state
    key = state.keys.persist_queue()
    worker = None
    try:
        with database_locked(database_url):
            with app.app_context():
                sent = [chat.send_message(1, "2_User", f"m{i}").id for i in range(30)]
            assert state.redis.llen(key) == 30
            worker = spawn(env, "worker")
            wait_for(lambda: state.redis.llen(key) < 30 and horse_of(worker),
                     timeout=60, interval=0.01, what="the drain to take a batch")
            horse = horse_of(worker)
            assert horse is not None
            os.kill(horse, signal.SIGKILL)  # mid-batch: its SQL write is waiting
        wait_for(lambda: sql_count(database_url) == 30, timeout=120, interval=0.2,
                 what="the retried drain to write every message")
        wait_for(lambda: state.redis.llen(key) == 0
                 and not state.redis.zcard(state.keys.persist_leases()), timeout=30,
                 what="the drain to acknowledge its batches")
    finally:
        out = stop(worker) if worker is not None else ""
    assert "Work-horse terminated unexpectedly" in out, out
    assert sql_count(database_url) == len(set(sent)) == 30
    assert sql_count(database_url, views) == 60  # sent and received, once each
    leftovers = [k for k in state.redis.scan_iter(match="{chat:persist}*")]
    assert leftovers == []


#: A killed worker's job is retried by another worker within this many seconds of the
#: kill (docs/deployment.md): `flask chat worker`'s bound (job monitoring interval 10 s
#: + RQ's fixed 60 s heartbeat grace + maintenance interval 30 s + the scheduler's 1 s
#: poll), then RETRY's first backoff (2 s).
ABANDONED_RETRY_BOUND = abandoned_retry_bound() + 2


def test_a_killed_workers_logout_persistence_is_retried_within_the_documented_bound(
    redis_url: str, database_url: str
) -> None:
    """kill -9 of a worker (and its work horse and scheduler) mid-job: a worker started
    afterwards finds the job abandoned and retries it, with RETRY's backoff, within the
    documented bound; the cache is persisted, then cleared. (With RQ's defaults the
    retry waited for the next 10-minute maintenance.) Only on PostgreSQL: the retry is
    RQ's and the same for both databases; this test is slow by nature."""
    if not database_url.startswith("postgresql"):
        pytest.skip("RQ's retry path does not depend on the database; run once")
    env = dict(os.environ, CHAT_REDIS_URL=redis_url, CHAT_DATABASE_URL=database_url,
               CHAT_PERSISTENCE="false")
    app = jobs_app.create_app({"CHAT_REDIS_URL": redis_url, "CHAT_DATABASE_URL": database_url,
                               "CHAT_DATABASE_AUTO_UPGRADE": True, "CHAT_PERSISTENCE": False})
    chat = app.extensions["chat"]
    first = second = None
    try:
        with app.app_context():
            for i in range(5):
                chat.send_message(1, "2_User", f"before logout {i}")
            job = chat.logout(1)
        from rq.job import JobStatus

        with database_locked(database_url):
            first = spawn(env, "worker")
            wait_for(lambda: job.get_status(refresh=True) == JobStatus.STARTED
                     and horse_of(first), timeout=60, interval=0.05, what="the job to start")
            kill_9(first)  # the worker, its work horse and its scheduler, mid-job
            killed = time.monotonic()
        second = spawn(env, "worker")
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED,
                 timeout=ABANDONED_RETRY_BOUND + 60, interval=0.5,
                 what="another worker to retry the abandoned job")
        waited = time.monotonic() - killed
        job.refresh()
        assert job.retries_left == 4  # RQ's retry, not a second enqueue
        assert sql_count(database_url) == 5
        with app.app_context():
            assert chat.history(1) == {}  # persisted, then cleared
            assert chat.history(2) != {}  # bob did not log out
        print(f"retried {waited:.0f} s after the kill (bound {ABANDONED_RETRY_BOUND} s)")
    finally:
        if second is not None:
            stop(second)
        close_chat(app)
