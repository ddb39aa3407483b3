"""Blinker signals flask-chat sends, in Flask's signal namespace style.

Connect with ``message_sent.connect(receiver, app)`` to hear only one app's messages.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent by :meth:`flask_chat.Chat.send_message` (and so by ``POST /chats/send_message``)
#: after a message is in every cache it belongs to. Sender: the Flask app. Keyword
#: arguments: ``message`` (a :class:`flask_chat.messaging.Message`) and ``recipients``
#: (the list of user ids whose caches received it, the sender excluded).
message_sent = _signals.signal("flask-chat.message-sent")

#: Sent after a user's chat cache was cleared. Sender: the Flask app. Keyword
#: arguments: ``user_id`` and ``removed`` (how many messages were removed).
cache_cleared = _signals.signal("flask-chat.cache-cleared")
