"""Run by test_cache: many greenlets send concurrently under a patched gevent.

Usage: gevent_sender.py REDIS_URL GREENLETS PER_GREENLET. Prints a JSON report.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from conftest import make_chat_app  # noqa: E402


def main() -> None:
    url, greenlets, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    app = make_chat_app(url, CHAT_HISTORY_LIMIT=10_000)
    chat = app.extensions["chat"]

    def sender(n: int) -> None:
        with app.app_context():
            for i in range(per):
                chat.send_message(1 if n % 2 else 2, "2_User" if n % 2 else "1_User", f"{n}:{i}")

    gevent.joinall([gevent.spawn(sender, n) for n in range(greenlets)], raise_error=True)
    with app.app_context():
        alice = chat.history(1)["2_User"]["messages"]
        bob = chat.history(2)["1_User"]["messages"]
    ids = [m["id"] for m in alice]
    print(
        json.dumps(
            {
                "alice": len(alice),
                "bob": len(bob),
                "unique": len(set(ids)),
                "ordered": ids == sorted(ids) and ids == [m["id"] for m in bob],
            }
        )
    )


if __name__ == "__main__":
    main()
