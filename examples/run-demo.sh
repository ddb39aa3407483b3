#!/usr/bin/env bash
# Start the flask-chat demo: a venv with flask-chat installed, an embedded Redis server,
# an RQ worker and the rq-scheduler (the 5-minute sweep), SQLite for the history,
# the app on gevent at http://127.0.0.1:${PORT:-5000}/. Ctrl-C stops everything.
# Without SECRET_KEY in the environment, one random key is made per run and exported to
# all of these processes (logins then end when the demo restarts): see launch.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/venv.sh
ensure_venv demo
exec "$VENV/bin/python" examples/launch.py
