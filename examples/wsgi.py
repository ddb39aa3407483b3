"""WSGI entry point for gunicorn's gevent worker (it monkey-patches before loading this):

    gunicorn -k gevent -w 1 -b 127.0.0.1:5000 --chdir examples wsgi:app

With ``-c examples/gunicorn.conf.py`` (instead of ``-k gevent``) each worker starts its
hub as soon as it has loaded the app: the Juggernaut bridge then consumes ``juggernaut``
before any browser connects.

Settings come from the environment, as for ``serve.py``. With more than one worker
(``-w 2``), set SECRET_KEY: without it each worker makes its own random key and cannot
read the sessions and websocket tokens of the others.
"""

from chat_app import create_app

app = create_app()
