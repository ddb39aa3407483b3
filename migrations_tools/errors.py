"""Why a legacy value was skipped: one small hierarchy, each with a stable reason code.

The importer catches :class:`Skip` per key, reports ``code`` (counted) and ``detail``
(an example), and goes on with the next key; anything else is a real failure that stops
the run (a database outage, say) with the checkpoint intact.
"""

from __future__ import annotations


class Skip(Exception):
    """A key that cannot be imported; nothing is written for it."""

    code = "skipped"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


class Truncated(Skip):
    code = "truncated"


class Corrupt(Skip):
    code = "corrupt"


class UnknownRubyClass(Skip):
    """A Ruby class outside the allow-list: never constructed, the key is skipped."""

    code = "unknown_class"

    def __init__(self, class_name: str, detail: str | None = None) -> None:
        super().__init__(detail or class_name)
        self.class_name = class_name


class NotAHistory(Skip):
    code = "not_a_history"


class Vanished(Skip):
    """The key was listed or discovered but holds nothing by the time it is read."""

    code = "vanished"


class OutOfRange(Skip):
    """A conversation that the legacy id scheme cannot number (see ``legacy_ids``)."""

    code = "out_of_range"
