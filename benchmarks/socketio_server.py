"""The Flask-SocketIO side of the real-time benchmark: the same scenarios as flask-chat,
the way a Flask-SocketIO app does them (gevent async mode, Redis message queue).

    python benchmarks/socketio_server.py --port 5002 --redis-url redis://127.0.0.1:6379/0

A client connects to ``/socket.io/?EIO=4&transport=websocket&user=<id>`` and joins the
room of its user (``u:<id>``) and, for users 1..group_size, the group's room (``g:1``).
``send`` events ({"to": "2_User" | "1_Group", "message_text": ...}) are emitted as
``message`` events to the recipient's and the sender's rooms (a 1:1 message) or to the
group's room; ``POST /send`` (``X-Bench-User`` header) does the same over HTTP. Every
emit goes through the Redis message queue, as it does when several processes serve an
app. No cache, no presence: the minimum a chat needs to deliver.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import itertools  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask, request  # noqa: E402
from flask_socketio import SocketIO, join_room  # noqa: E402

GROUP = 1


def create(redis_url: str, group_size: int) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "socketio-benchmark-not-secret"
    socketio = SocketIO(
        app,
        async_mode="gevent",
        message_queue=redis_url,
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )
    users: dict[str, int] = {}
    seq = itertools.count()

    def deliver(sender: int, to: Any, text: Any) -> dict[str, Any] | None:
        if not isinstance(to, str) or not isinstance(text, str) or "_" not in to:
            return None
        target, kind = to.split("_", 1)
        if not target.isdigit():
            return None
        event = {
            "type": "message",
            "id": f"{int(time.time() * 1000)}-{next(seq)}",
            "sender_id": sender,
            "to": to,
            "message_text": text,
            "image": None,
            "sent_at": datetime.now(timezone.utc).isoformat(),
        }
        if kind == "Group":
            if int(target) != GROUP or not 1 <= sender <= group_size:
                return None
            socketio.emit("message", event, to=f"g:{GROUP}")
        else:
            socketio.emit("message", event, to=f"u:{int(target)}")
            socketio.emit("message", event, to=f"u:{sender}")
        return event

    @socketio.on("connect")
    def connect(auth: Any = None) -> bool:
        raw = request.args.get("user", "")
        if not raw.isdigit():
            return False
        user = int(raw)
        users[request.sid] = user  # type: ignore[attr-defined]
        join_room(f"u:{user}")
        if 1 <= user <= group_size:
            join_room(f"g:{GROUP}")
        return True

    @socketio.on("disconnect")
    def disconnect(*args: Any) -> None:
        users.pop(request.sid, None)  # type: ignore[attr-defined]

    @socketio.on("send")
    def send(data: Any) -> None:
        user = users.get(request.sid)  # type: ignore[attr-defined]
        if user is None or not isinstance(data, dict):
            return
        deliver(user, data.get("to"), data.get("message_text"))

    @app.post("/send")
    def http_send() -> Any:
        raw = request.headers.get("X-Bench-User", "")
        body = request.get_json(silent=True) or {}
        if not raw.isdigit():
            return {"error": "not_authenticated"}, 401
        event = deliver(int(raw), body.get("to"), body.get("message_text"))
        if event is None:
            return {"error": "invalid"}, 400
        return event, 201

    return app, socketio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--group-size", type=int, default=1000)
    args = parser.parse_args()
    app, socketio = create(args.redis_url, args.group_size)
    print(f"Flask-SocketIO benchmark server on {args.host}:{args.port}", flush=True)
    socketio.run(app, args.host, args.port, log_output=False)


if __name__ == "__main__":
    main()
