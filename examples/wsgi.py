"""WSGI entry point for gunicorn's gevent worker (it monkey-patches before loading this):

    gunicorn -k gevent -w 1 -b 127.0.0.1:5000 --chdir examples wsgi:app

Settings come from the environment, as for ``serve.py``.
"""

from chat_app import create_app

app = create_app()
