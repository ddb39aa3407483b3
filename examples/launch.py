"""Start the whole demo: Redis (embedded unless CHAT_REDIS_URL is set), an RQ worker, the
rq-scheduler (the 5-minute sweep), and the web server on gevent. Ctrl-C stops it all.

    python examples/launch.py          # what `bash examples/run-demo.sh` runs

Settings come from the environment: PORT (5000), HOST, CHAT_REDIS_URL,
CHAT_DATABASE_URL (default: SQLite in examples/instance/), any other CHAT_* setting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    from flask_chat.embedded import RedisServer

    env = dict(os.environ)
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
