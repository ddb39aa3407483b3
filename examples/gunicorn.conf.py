"""gunicorn settings for flask-chat (the demo's, and a model for an app's own):

    gunicorn -c examples/gunicorn.conf.py -w 1 -b 127.0.0.1:5000 --chdir examples wsgi:app

The gevent worker patches before it loads the app. Each worker starts its hub as soon as
it has loaded the app, not with its first websocket, when an add-on needs the hub from
the start: the Juggernaut bridge consumes ``juggernaut`` (and translates legacy
publishes) with no client connected.
"""

from typing import Any

worker_class = "gevent"


def post_worker_init(worker: Any) -> None:
    from flask_chat.server import start_hub

    start_hub(worker.wsgi)
