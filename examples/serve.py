"""Serve the demo (or any ``module:create_app``) on gevent.

    python examples/serve.py                 # the demo on $HOST:$PORT (127.0.0.1:5000)

Monkey-patching happens here, on the first line, and nowhere in the library.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chat_app import create_app  # noqa: E402

from flask_chat.server import serve  # noqa: E402


def main() -> None:
    app = create_app()
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5000"))
    print(f"flask-chat demo: http://{host}:{port}/  (log in as alice, bob or carol)", flush=True)
    serve(app, host, port, log=None if os.environ.get("QUIET") else "default")


if __name__ == "__main__":
    main()
