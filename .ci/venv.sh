# Sourced by the demo and test commands: make a virtualenv with flask-chat installed.
# VENV (default .venv) names it. On Debian, python3 needs python3-venv for this; as root
# we install it, otherwise we say what to run.

VENV=${VENV:-.venv}

ensure_venv() {
  local extras=$1
  if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      else
        echo "python3 cannot make a virtualenv: run 'sudo apt-get install python3-venv' first." >&2
        exit 1
      fi
    fi
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.flask-chat-$extras"
  if [ ! -e "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >"$VENV/pip.log" 2>&1 || { cat "$VENV/pip.log" >&2; exit 1; }
    "$VENV/bin/python" -m pip install -q -e ".[$extras]" >"$VENV/pip.log" 2>&1 || { cat "$VENV/pip.log" >&2; exit 1; }
    touch "$stamp"
  fi
}
