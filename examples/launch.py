"""Start the whole demo: Redis (embedded unless CHAT_REDIS_URL is set), an RQ worker, the
rq-scheduler (the 5-minute sweep), and the web server on gevent. Ctrl-C stops it all.

    python examples/launch.py          # what `bash examples/run-demo.sh` runs

Settings come from the environment: PORT (5000), HOST, CHAT_REDIS_URL,
CHAT_DATABASE_URL (default: SQLite in examples/instance/), SECRET_KEY, any other CHAT_*
setting.

Without SECRET_KEY (or FLASK_SECRET_KEY) the launcher makes one random key for this run
and gives it to every process it starts: each would otherwise make its own, and two web
processes with different keys cannot read each other's sessions or websocket tokens.
Logins last until the demo stops; set SECRET_KEY to keep them across restarts.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RANDOM_KEY_WARNING = (
    "flask-chat demo: WARNING: SECRET_KEY not set: a random key was generated for this run "
    "(shared by the web server, the RQ worker and the scheduler); sessions and websocket "
    "tokens end when the demo restarts"
)


def main() -> int:
    from flask_chat.embedded import RedisServer

    env = dict(os.environ)
    if not (env.get("SECRET_KEY") or env.get("FLASK_SECRET_KEY")):
        env["SECRET_KEY"] = secrets.token_hex(32)
        print(RANDOM_KEY_WARNING, file=sys.stderr, flush=True)
    redis_server = None
    if not env.get("CHAT_REDIS_URL"):
        redis_server = RedisServer()
        env["CHAT_REDIS_URL"] = redis_server.start()
        print(f"flask-chat demo: started an embedded Redis at {env['CHAT_REDIS_URL']}", flush=True)
    env.setdefault(
        "CHAT_DATABASE_URL", "sqlite:///" + os.path.join(HERE, "instance", "flask_chat.db")
    )
    flask = [sys.executable, "-m", "flask", "--app", os.path.join(HERE, "chat_app.py"), "chat"]
    subprocess.run([*flask, "db", "upgrade"], env=env, check=True)
    helpers = [
        subprocess.Popen([*flask, "worker"], env=env),
        subprocess.Popen([*flask, "scheduler"], env=env),
    ]
    web = subprocess.Popen([sys.executable, os.path.join(HERE, "serve.py")], env=env)
    try:
        return web.wait()
    except KeyboardInterrupt:
        web.send_signal(signal.SIGTERM)
        return web.wait()
    finally:
        for proc in helpers:
            proc.terminate()
        for proc in helpers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if redis_server is not None:
            redis_server.stop()


if __name__ == "__main__":
    sys.exit(main())
