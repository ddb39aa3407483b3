"""Moving cached and legacy Rails chat history into SQL (installed as
``flask_chat_migrations``).

Empty for now: the persistence and migration issues fill it in. It lives in the
repository's ``migrations_tools/`` folder and installs under this namespaced name.
"""
