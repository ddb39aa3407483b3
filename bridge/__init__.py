"""flask-chat's Juggernaut compatibility layer (installed as ``flask_chat_bridge``).

Lives in the repository's ``bridge/`` folder and installs under this namespaced name so
that no generic top-level ``bridge`` module lands in site-packages.
"""

from .extension import JuggernautBridge

__all__ = ["JuggernautBridge"]
