"""The bridge's limit settings: checked when the bridge starts, with a clear message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask_chat_bridge import JuggernautBridge

from flask_chat.errors import ConfigurationError


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS", -1),
        ("CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS", 2.5),
        ("CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS", True),
        ("CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS", "100"),
        ("CHAT_JUGGERNAUT_FRAME_RATE", -1),
        ("CHAT_JUGGERNAUT_FRAME_RATE", "10"),
        ("CHAT_JUGGERNAUT_FRAME_BURST", 0.5),
        ("CHAT_JUGGERNAUT_FRAME_BURST", None),
    ],
)
def test_bad_limit_settings_are_refused_at_start(
    app_factory: Callable[..., Flask], name: str, value: Any
) -> None:
    app = app_factory(CHAT_JUGGERNAUT_ENABLED=True, **{name: value})
    with pytest.raises(ConfigurationError, match=name):
        JuggernautBridge(app)


def test_limit_defaults_and_zero_turns_them_off(app_factory: Callable[..., Flask]) -> None:
    bridge = JuggernautBridge(app_factory(CHAT_JUGGERNAUT_ENABLED=True))
    assert bridge.router is not None
    limits = bridge.router.limits
    assert (limits.max_subscriptions, limits.frame_rate, limits.frame_burst) == (100, 10, 150)
    off = JuggernautBridge(
        app_factory(
            CHAT_JUGGERNAUT_ENABLED=True,
            CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS=0,
            CHAT_JUGGERNAUT_FRAME_RATE=0,
        )
    )
    assert off.router is not None
    assert off.router.limits.max_subscriptions == 0 and off.router.limits.frame_rate == 0
