"""``flask chat migrate import-legacy`` end to end: a real legacy Redis loaded with the
shared fixtures' own ``load.sh``, FileStore trees, SQLite and PostgreSQL (the
``database_url`` fixture), idempotent re-runs, resuming, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import jobs_app
import pytest
import redis
from conftest import close_chat
from flask import Flask
from flask_chat_migrations.checkpoint import Checkpoint
from flask_chat_migrations.keys import MigrationKeys
from flask_chat_migrations.legacy_import import ImportSettings, LegacyImporter
from flask_chat_migrations.sources import KeyTemplate, RedisSource
from sqlalchemy import func, select

from flask_chat.conversations import ConversationKey
from flask_chat.embedded import RedisServer
from flask_chat.ids import is_valid_id
from flask_chat.models import messages, views

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "fixtures", "rails-cache")
OWN = os.path.join(HERE, "fixtures", "ruby-cases")
LOAD_SH = os.path.join(SHARED, "load.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def legacy_server() -> Iterator[RedisServer]:
    """The legacy app's own Redis: another server, on TCP, as load.sh expects."""
    with RedisServer(port=free_port(), binary=shutil.which("redis-server")) as server:
        yield server


@pytest.fixture
def legacy(legacy_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(legacy_server.url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def app(redis_url: str, database_url: str) -> Iterator[Flask]:
    application = jobs_app.create_app({"CHAT_REDIS_URL": redis_url,
                                       "CHAT_DATABASE_URL": database_url,
                                       "CHAT_DATABASE_AUTO_UPGRADE": True})
    yield application
    close_chat(application)


def load_sh(server: RedisServer, *args: str) -> None:
    result = subprocess.run(["bash", LOAD_SH, str(server.port), *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def migrate(app: Flask, *args: str, code: int = 0) -> str:
    result = app.test_cli_runner().invoke(args=["chat", "migrate", *args])
    assert result.exit_code == code, (result.output, result.exception)
    return str(result.output)


def summary(output: str) -> str:
    return output.strip().splitlines()[-1]


def count(app: Flask, table: Any = messages, where: Any = None) -> int:
    with app.app_context():
        engine = app.extensions["chat"].state.history.engine
        query = select(func.count()).select_from(table)
        if where is not None:
            query = query.where(where)
        with engine.connect() as conn:
            return int(conn.scalar(query) or 0)


def rows(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        engine = app.extensions["chat"].state.history.engine
        with engine.connect() as conn:
            query = select(messages).order_by(messages.c.id)
            return [dict(r) for r in conn.execute(query).mappings()]


def copies_in(folder: str, files: Sequence[str]) -> int:
    """Message copies the fixtures hold, from their expected JSON (not from the importer)."""
    total = 0
    for file in files:
        name = os.path.basename(file)[: -len(".bin")] if file.endswith(".bin") else file
        with open(os.path.join(folder, f"{name}.expected.json"), encoding="utf-8") as f:
            value = json.load(f)["value"]
        total += sum(len(c["messages"]) for c in value.values())
    return total


def tsv_set(name: str) -> list[tuple[str, str]]:
    with open(os.path.join(SHARED, "redis-keys.tsv"), encoding="utf-8") as f:
        return [(r[1], r[2]) for r in csv.reader(f, delimiter="\t") if r and r[0] == name]


# -- the shared fixtures, loaded as load.sh does ----------------------------------------------


def test_a_redis_loaded_with_load_sh_imports_exactly_once(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis
) -> None:
    load_sh(legacy_server, "--set", "r32")
    out = migrate(app, "import-legacy", "--redis", legacy_server.url)
    assert "formats: rails3-entry 1, rails32-entry 7" in out
    assert summary(out) == (
        "import-legacy: 8 keys read (8 users, 13 conversations, 1 empty); 40 messages read, "
        "40 written, 0 already present, 40 views written; 0 skipped")
    assert count(app) == 40 == copies_in(SHARED, [f for _, f in tsv_set("r32")])
    assert count(app, views) == 40

    again = migrate(app, "import-legacy", "--redis", legacy_server.url)
    assert summary(again) == (
        "import-legacy: 8 keys read (8 users, 13 conversations, 1 empty); 40 messages read, "
        "0 written, 40 already present, 0 views written; 0 skipped")
    assert count(app) == 40 and count(app, views) == 40

    stored = rows(app)
    assert all(is_valid_id(r["id"]) and r["id"] < "1577836800000" for r in stored)  # < 2020
    # user 1's copy of the basic payload (user 17 holds the same texts)
    by_text = {(r["message_text"], r["sender_id"], r["target_id"]): r for r in stored}
    hi = by_text[("Hi Bob, are you there?", 1, 2)]
    reply = by_text[("Yes! Give me 5 minutes.", 2, 1)]
    assert hi["kind"] == reply["kind"] == "User" and hi["id"] < reply["id"]
    # A group message received by user 1: its sender read from the Paperclip avatar path.
    assert by_text[("Morning team", 3, 5)]["kind"] == "Group"
    nil_image = [r for r in stored if r["message_text"] == "I have no avatar"]
    assert nil_image[0]["image"] is None


LOAD_SETS = [
    # load.sh set, namespace to import with
    ("r30", None), ("r32", None), ("r40", None), ("as61", None), ("as61-redis", "chatapp"),
    ("redis-store", "legacy"), ("redis-store", "chat"), ("r70", None), ("r71", None),
    ("plain", None),
]


@pytest.mark.parametrize(("name", "namespace"), LOAD_SETS, ids=[f"{s}-{n}" for s, n in LOAD_SETS])
def test_every_load_sh_set_imports_with_its_exact_counts(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis, name: str, namespace: str | None
) -> None:
    load_sh(legacy_server, "--set", name, "--ttl")
    keys = [(k, f) for k, f in tsv_set(name) if namespace is None or k.startswith(f"{namespace}:")]
    args = ["import-legacy", "--redis", legacy_server.url]
    if namespace:
        args += ["--namespace", namespace]
    out = migrate(app, *args)
    expected = copies_in(SHARED, [f for _, f in keys])
    assert f"{len(keys)} keys read ({len(keys)} users" in summary(out)
    assert f"{expected} messages read, {expected} written, 0 already present" in summary(out)
    assert count(app) == expected and count(app, views) == expected
    assert "0 written" in summary(migrate(app, *args))


@pytest.mark.parametrize(("folder", "namespace", "keys", "stored", "seen"), [
    (os.path.join(SHARED, "filestore-rails32"), None, 8, 40, 40),
    (os.path.join(SHARED, "filestore-as61"), None, 2, 15, 15),
    # A real ActiveSupport 6.1 FileStore with a namespace: the four-user scenario below.
    (os.path.join(OWN, "filestore-as61-ns"), "chat", 4, 11, 19),
], ids=["rails32", "as61", "as61-namespace"])
def test_a_filestore_tree_imports_with_its_exact_counts(
    app: Flask, folder: str, namespace: str | None, keys: int, stored: int, seen: int
) -> None:
    args = ["import-legacy", "--filestore", folder]
    args += ["--namespace", namespace] if namespace else []
    out = migrate(app, *args)
    assert f"{keys} keys read ({keys} users" in summary(out)
    assert f"{seen} messages read, {stored} written" in summary(out)
    assert count(app) == stored and count(app, views) == seen
    assert f"{seen} messages read, 0 written, {stored} already present, 0 views" in summary(
        migrate(app, *args))


# -- both copies of a conversation -------------------------------------------------------------


def load_scenario(legacy: redis.Redis, namespace: str = "chat") -> None:
    for uid in (1, 2, 3, 4):
        with open(os.path.join(OWN, f"scenario-user{uid}.bin"), "rb") as f:
            legacy.set(f"{namespace}:{uid}", f.read())


def test_both_copies_of_a_message_become_one_message_with_two_views(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis, tmp_path: Any
) -> None:
    """alice's and bob's caches both hold their chat (bob's only since his last clear);
    the team group's messages sit in the caches of whoever was online."""
    load_scenario(legacy)
    only_bob = tmp_path / "bob.txt"
    only_bob.write_text("2\n")
    # bob first, alone: his 4 copies get the ids the whole conversation gives them.
    first = migrate(app, "import-legacy", "--redis", legacy_server.url, "--namespace", "chat",
                    "--user-ids", str(only_bob))
    assert "6 messages read, 6 written" in summary(first)
    out = migrate(app, "import-legacy", "--redis", legacy_server.url, "--namespace", "chat",
                  "--into-cache")
    assert "19 messages read" in summary(out)
    assert count(app) == 11  # alice-bob 6, team 3, dave-alice 2
    assert count(app, views) == 19
    for owner, n in ((1, 9), (2, 6), (3, 2), (4, 2)):  # alice holds none of dave's
        assert count(app, views, views.c.user_id == owner) == n

    with app.app_context():
        chat = app.extensions["chat"]
        history = chat.state.history
        alice = history.conversation_page(1, ConversationKey.user(2), None, 50)
        bob = history.conversation_page(2, ConversationKey.user(1), None, 50)
        texts = ["hi bob", "hi alice", "lunch?", "ok", "ok", "see you at 12"]
        assert [m["message_text"] for m in reversed(alice)] == texts
        assert [m["sender_id"] for m in reversed(alice)] == [1, 2, 1, 2, 1, 2]
        assert [m["id"] for m in bob] == [m["id"] for m in alice]
        team = history.conversation_page(3, ConversationKey.group(5), None, 50)
        assert [(m["message_text"], m["sender_id"]) for m in reversed(team)] == [
            ("morning team", 1), ("morning", 3), ("stand-up at 10", 2)]
        # --into-cache: bob finds his open conversations in flask-chat's cache.
        cached = chat.history(2)
        assert [m["message_text"] for m in cached["1_User"]["messages"]] == texts[2:]
        types = [m["type"] for m in cached["1_User"]["messages"]]
        assert types == ["received", "sent", "received", "sent"]
        group = [m["message_text"] for m in cached["5_Group"]["messages"]]
        assert group == ["morning", "stand-up at 10"]
        assert cached["1_User"]["messages"][0]["id"] == alice[3]["id"]


# -- resuming, bad input, dry runs ------------------------------------------------------------


def test_an_interrupted_run_resumes_where_it_stopped(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis
) -> None:
    load_sh(legacy_server, "--set", "r32")
    first = migrate(app, "import-legacy", "--redis", legacy_server.url, "--batch", "2",
                    "--max-keys", "3")
    assert "3 keys read" in summary(first) and "STOPPED EARLY" in summary(first)
    done = count(app, views)
    assert 0 < done < 40
    second = migrate(app, "import-legacy", "--redis", legacy_server.url, "--batch", "2")
    # The counts are the whole job's: the first run's and this one's.
    assert summary(second).startswith("import-legacy: 8 keys read (8 users")
    assert "40 messages read, 40 written, 0 already present" in summary(second)
    assert "resumed after 3 users done earlier" in summary(second)
    assert count(app) == 40 and count(app, views) == 40
    # Finished: the checkpoint is gone, so the next run reads everything again.
    assert "resumed" not in summary(migrate(app, "import-legacy", "--redis", legacy_server.url))


class Interrupting(RedisSource):
    """Ctrl-C while the second batch (users 6 to 10) is being read."""

    def read_many(self, names: Sequence[str]) -> list[bytes | None | Exception]:
        if names and names[0] == "6":
            raise KeyboardInterrupt
        return super().read_many(names)


def test_ctrl_c_mid_run_leaves_a_checkpoint_to_resume_from(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis
) -> None:
    load_sh(legacy_server, "--set", "r32")
    with app.app_context():
        chat = app.extensions["chat"]
        state = chat.state
        checkpoint = Checkpoint(state.redis, MigrationKeys(state.keys.prefix), "test")
        members = lambda g: chat.get_group(g).members if chat.get_group(g) else None  # noqa: E731
        source = Interrupting(legacy, KeyTemplate(), user_ids=range(1, 18))
        first = LegacyImporter(source, state.history, members, ImportSettings(batch_size=5),
                               checkpoint=checkpoint).run()
        assert first.interrupted and first.n["keys"] == 5
        again = LegacyImporter(RedisSource(legacy, KeyTemplate(), user_ids=range(1, 18)),
                               state.history, members, ImportSettings(batch_size=5),
                               checkpoint=checkpoint).run()
        assert not again.interrupted and again.n["resumed"] == 5
        assert again.n["written"] == 40 and again.skipped == {"vanished": 9}
        assert not checkpoint.started()
    assert count(app) == 40


def test_bad_values_are_reported_and_skipped_and_the_run_goes_on(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis, tmp_path: Any
) -> None:
    load_sh(legacy_server, "--set", "r32")
    with open(os.path.join(SHARED, "r32-entry-basic.bin"), "rb") as f:
        good = f.read()
    with open(os.path.join(OWN, "bad-unknown-class-object.bin"), "rb") as f:
        unknown = f.read()
    with open(os.path.join(OWN, "bad-not-history-array.bin"), "rb") as f:
        not_history = f.read()
    legacy.set("101", good[:300])  # truncated
    legacy.set("102", b"\x04\x08garbage")  # corrupt
    legacy.set("103", unknown)  # an unknown Ruby class
    legacy.set("104", not_history)  # not a history
    legacy.hset("105", "a", "b")  # not a string at all
    legacy.set("session:abc", b"x")  # no user's key: not read
    report_file = tmp_path / "report.json"
    out = migrate(app, "import-legacy", "--redis", legacy_server.url, "--report", str(report_file))
    assert summary(out).endswith(
        "40 messages read, 40 written, 0 already present, 40 views written; 5 skipped "
        "(corrupt: 2, not_a_history: 1, truncated: 1, unknown_class: 1)")
    assert "103: LegacyChat::Message" in out
    assert "1 other keys name no user: not read" in out
    report = json.loads(report_file.read_text())
    assert report["skipped"] == {"corrupt": 2, "not_a_history": 1, "truncated": 1,
                                 "unknown_class": 1}
    assert report["counts"]["ignored"] == 1
    for uid in range(101, 106):  # nothing half-written for a skipped key
        assert count(app, views, views.c.user_id == uid) == 0
    # With an explicit pattern, a key that names no user is reported too.
    out = migrate(app, "import-legacy", "--redis", legacy_server.url, "--keys", "*")
    assert "not_a_user_key: 1" in summary(out)


class Vanishing(RedisSource):
    """The scan finds a key; it expires before its batch is read."""

    def names(self) -> Iterator[str]:
        for name in super().names():
            if name == "2":
                self.client.delete("2")
            yield name


def test_a_key_that_vanishes_mid_run_is_reported(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis, tmp_path: Any
) -> None:
    load_sh(legacy_server, "--set", "r32")
    with app.app_context():
        state = app.extensions["chat"].state
        report = LegacyImporter(Vanishing(legacy, KeyTemplate()), state.history,
                                lambda g: None).run()
    assert report.skipped == {"vanished": 1}
    assert report.examples["vanished"][0].startswith("2: the key is gone")
    assert report.n["written"] == 40 - 6  # user 2's six copies
    ids = tmp_path / "ids.txt"
    ids.write_text("# listed, never there\n999\n")
    out = migrate(app, "import-legacy", "--redis", legacy_server.url, "--user-ids", str(ids))
    assert "1 skipped (vanished: 1)" in summary(out)


def test_a_dry_run_counts_and_writes_nothing(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis, r: redis.Redis
) -> None:
    load_sh(legacy_server, "--set", "r71")
    n = copies_in(SHARED, [f for _, f in tsv_set("r71")])
    before = sorted(r.keys("*"))
    out = migrate(app, "import-legacy", "--redis", legacy_server.url, "--dry-run", "--into-cache")
    assert f"{n} messages read, {n} would be written, 0 already present, {n} views would be " \
           "written" in summary(out)
    assert count(app) == 0
    assert sorted(r.keys("*")) == before  # no checkpoint, no cache, no id settings
    migrate(app, "import-legacy", "--redis", legacy_server.url)
    assert f"0 would be written, {n} already present" in summary(
        migrate(app, "import-legacy", "--redis", legacy_server.url, "--dry-run"))


def test_the_id_scheme_is_fixed_by_the_first_import(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis
) -> None:
    load_sh(legacy_server, "--set", "plain")
    migrate(app, "import-legacy", "--redis", legacy_server.url)
    out = migrate(app, "import-legacy", "--redis", legacy_server.url, "--legacy-epoch",
                  "2010-01-01", code=2)
    assert "an earlier import numbered legacy messages" in out
    assert count(app) == copies_in(SHARED, [f for _, f in tsv_set("plain")])


def test_the_command_runs_as_flask_chat_migrate(
    redis_url: str, legacy_server: RedisServer, legacy: redis.Redis, tmp_path: Any
) -> None:
    """A real `flask` process: the command is attached to `flask chat`, draws its
    progress bar and ends with the summary line."""
    load_sh(legacy_server, "--set", "r70")
    env = dict(os.environ, CHAT_REDIS_URL=redis_url, CHAT_DATABASE_AUTO_UPGRADE="true",
               CHAT_DATABASE_URL=f"sqlite:///{tmp_path}/chat.db")
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", os.path.join(HERE, "jobs_app.py"), "chat",
         "migrate", "import-legacy", "--redis", legacy_server.url],
        env=env, capture_output=True, text=True, timeout=120, cwd=HERE)
    assert result.returncode == 0, result.stderr
    assert "Importing legacy caches" in result.stdout
    assert summary(result.stdout).startswith("import-legacy: 3 keys read (3 users")


def rails71(value: Any) -> bytes:
    """What Rails 7.1's cache coder writes for a Marshal value (no expiry, no version).
    rubymarshal writes the same bytes as Ruby's own Marshal.dump for these values."""
    import struct

    from rubymarshal.writer import writes

    return b"\x00\x11" + struct.pack("<Bdl", 1, -1.0, -1) + writes(value)


def test_a_nul_in_legacy_text_is_imported_as_u_fffd_and_counted(
    app: Flask, legacy_server: RedisServer, legacy: redis.Redis, tmp_path: Any
) -> None:
    """The legacy app stored U+0000 (PostgreSQL text cannot): it is replaced with U+FFFD,
    like an invalid byte, and counted; the rest of the key imports as usual."""
    from rubymarshal.classes import Symbol

    def message(text: str, direction: str, image: str | None) -> dict[Any, Any]:
        return {Symbol("message_text"): text, Symbol("type"): direction,
                Symbol("image"): image}

    legacy.set("1", rails71({"2_User": {Symbol("type"): "User", Symbol("messages"): [
        message("before\x00after", "sent", None),
        message("clean", "received", "/img/\x00.png"),
        message("also clean", "sent", None),
    ]}}))
    report_file = tmp_path / "report.json"
    out = migrate(app, "import-legacy", "--redis", legacy_server.url, "--report", str(report_file))
    assert "3 messages read, 3 written, 0 already present, 3 views written; 0 skipped" in summary(
        out)
    assert "2 strings had invalid bytes or U+0000, replaced with U+FFFD" in out
    assert json.loads(report_file.read_text())["counts"]["replaced"] == 2
    with app.app_context():
        engine = app.extensions["chat"].state.history.engine
        with engine.connect() as conn:
            rows = set(conn.execute(select(messages.c.message_text, messages.c.image)).all())
    assert rows == {("before\ufffdafter", None), ("clean", "/img/\ufffd.png"),
                    ("also clean", None)}
