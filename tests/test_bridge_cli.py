"""``flask chat bridge``: the bridge as a process of its own translates legacy chat
publishes into flask-chat messages, once each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import redis
from conftest import close_chat
from helpers import ROOT, wait_for

DEMO = os.path.join(ROOT, "examples", "chat_app.py")


def test_standalone_bridge_translates_legacy_publishes(redis_url: str, tmp_path: Any) -> None:
    env = dict(os.environ, CHAT_REDIS_URL=redis_url,
               CHAT_DATABASE_URL=f"sqlite:///{tmp_path}/chat.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", DEMO, "chat", "bridge", "--seconds", "60"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import chat_app

    app = chat_app.create_app({"CHAT_REDIS_URL": redis_url,
                               "CHAT_DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"})
    client = redis.Redis.from_url(redis_url)
    try:
        chat = app.extensions["chat"]
        wait_for(lambda: client.pubsub_numsub("juggernaut")[0][1] > 0, timeout=30,
                 what="the bridge to subscribe to juggernaut")
        lock = f"{app.config['CHAT_KEY_PREFIX']}:jug:translator"
        wait_for(lambda: client.exists(lock), timeout=30, what="the translator lock")
        # What the legacy Rails send_message published, byte for byte as the gem would.
        client.publish("juggernaut", json.dumps(
            {"channels": ["/chats/user_2"],
             "data": {"sender_id": 1, "message_text": "from rails", "image": None}},
            separators=(",", ":")))
        client.publish("juggernaut", "not json")  # dropped, no crash
        client.publish("juggernaut", json.dumps(  # what flask-chat mirrored: never taken back
            {"channels": ["/chats/user_2"], "_flask_chat": "x",
             "data": {"sender_id": 1, "message_text": "mirrored", "image": None}}))

        def bobs() -> list[str]:
            with app.app_context():
                history = chat.history(2).get("1_User", {"messages": []})
            return [m["message_text"] for m in history["messages"]]

        wait_for(lambda: bobs() == ["from rails"], timeout=30, what="the translated message")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
        client.close()
        close_chat(app)
    assert "listening on juggernaut" in out
    assert bobs() == ["from rails"]
