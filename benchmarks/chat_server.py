"""Serve the benchmark app (``bench_app.py``) with flask-chat's gevent server, in one
process: ``python benchmarks/chat_server.py --port 5001 --redis-url redis://...``."""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_app import create_app  # noqa: E402

from flask_chat.server import make_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--group-size", type=int, default=1000)
    args = parser.parse_args()
    app = create_app(args.redis_url, args.group_size)
    print(f"flask-chat benchmark server on {args.host}:{args.port}", flush=True)
    make_server(app, args.host, args.port, log=None).serve_forever()


if __name__ == "__main__":
    main()
