"""flask-chat's Juggernaut compatibility layer (installed as ``flask_chat_bridge``).

Empty for now: the Juggernaut bridge issue fills it in. It lives in the repository's
``bridge/`` folder and installs under this namespaced name so that no generic
top-level ``bridge`` module lands in site-packages.
"""
