"""``flask chat bridge``: the bridge as a process of its own.

For deployments that keep the legacy Node server for legacy browsers for a while: this
process translates legacy chat publishes into flask-chat messages (the ``translator``
hook, one process at a time under the same lock the instances use) and cleans up the
legacy-channel rosters of flask-chat instances that died. It needs no gevent: it reads
``juggernaut`` with redis-py's pub/sub.
"""

from __future__ import annotations

import threading
import time

import click
from flask import current_app
from flask.cli import with_appcontext

from . import protocol
from .extension import _TRANSLATOR_LOCK_TTL_MS, JuggernautBridge, hold_lock
from .roster import Roster


@click.command("bridge", help="Run the Juggernaut bridge as a process of its own.")
@click.option("--seconds", type=float, default=None, help="Stop after this long (tests).")
@with_appcontext
def bridge_cli(seconds: float | None) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    bridge: JuggernautBridge | None = app.extensions.get("chat_bridge")
    if bridge is None:
        raise click.ClickException("Register JuggernautBridge(app) to run the bridge.")
    state = bridge.chat.state
    key = f"{state.keys.prefix}:jug:translator"
    stop = threading.Event()

    def elect() -> None:
        while not stop.is_set():
            bridge.is_translating = bridge.translator is not None and hold_lock(
                state.redis, key, bridge.instance_id, _TRANSLATOR_LOCK_TTL_MS
            )
            stop.wait(_TRANSLATOR_LOCK_TTL_MS / 3000)

    roster = Roster(state.redis, state.keys.prefix, state.config.presence_ttl)

    def reap() -> None:
        while not stop.is_set():
            for session_id, channels, meta in roster.reap():
                for payload in protocol.unsubscribe_payloads(session_id, channels, meta):
                    state.redis.publish(protocol.EVENT_CHANNELS["unsubscribe"], payload)
            stop.wait(state.config.presence_ttl / 3)

    threads = [threading.Thread(target=f, daemon=True) for f in (elect, reap)]
    for thread in threads:
        thread.start()
    pubsub = state.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(protocol.PUBLISH_CHANNEL)
    click.echo("flask-chat bridge: listening on juggernaut")
    deadline = time.monotonic() + seconds if seconds else None
    translated = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            try:
                publish = protocol.parse_publish(message["data"])
            except protocol.InvalidPublish:
                continue
            if publish.origin is None and bridge.translator is not None and bridge.is_translating:
                with app.app_context():
                    bridge.translate(publish)
                translated += 1
    finally:
        stop.set()
        pubsub.close()
        click.echo(f"flask-chat bridge: stopped ({translated} publishes translated)")
