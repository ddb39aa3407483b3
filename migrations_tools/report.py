"""What a run did: counts, skip reasons with examples, formats seen; one summary line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Examples kept per skip reason (the counts are exact; the examples are a sample).
EXAMPLES = 5

#: The counters, in report order, with what they count.
COUNTS = {
    "keys": "keys (or cached users) read",
    "users": "users whose history was imported",
    "conversations": "conversations in those histories",
    "empty": "users whose history was empty",
    "messages_read": "message copies read (one per user who held the message)",
    "written": "messages written to SQL",
    "already": "messages already in SQL (an earlier run, or the other side's copy)",
    "views_written": "(user, message) views written",
    "replaced": "strings with invalid bytes or U+0000 (NUL), decoded with U+FFFD",
    "refused": "messages the database refused on their data (not written)",
    "cached": "messages appended to the live flask-chat cache",
    "cleared": "caches cleared after persisting",
    "kept": "caches kept (user online, or no --clear)",
    "resumed": "users done by an earlier, interrupted run",
    "ignored": "other keys the scan met that name no user (not read)",
}


@dataclass
class Report:
    command: str
    dry_run: bool = False
    n: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    formats: Counter[str] = field(default_factory=Counter)
    #: Examples of messages the database refused.
    refusals: list[str] = field(default_factory=list)
    #: Stopped before the end (``--max-keys``, Ctrl-C): the checkpoint is kept.
    interrupted: bool = False

    def skip(self, code: str, name: str, detail: str) -> None:
        self.skipped[code] += 1
        sample = self.examples.setdefault(code, [])
        if len(sample) < EXAMPLES:
            sample.append(f"{name}: {detail}")

    def refuse(self, name: str, detail: str) -> None:
        self.n["refused"] += 1
        if len(self.refusals) < EXAMPLES:
            self.refusals.append(f"{name}: {detail}")

    # -- for the checkpoint ------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = {k: v for k, v in self.n.items() if k != "resumed"}
        out.update({f"skip:{k}": v for k, v in self.skipped.items()})
        out.update({f"format:{k}": v for k, v in self.formats.items()})
        return out

    def add_counts(self, counts: dict[str, int]) -> None:
        for name, value in counts.items():
            if name.startswith("skip:"):
                self.skipped[name[5:]] += value
            elif name.startswith("format:"):
                self.formats[name[7:]] += value
            else:
                self.n[name] += value

    def absorb(self, delta: Report) -> None:
        """Add a batch's report to this one."""
        self.add_counts(delta.counts())
        for code, examples in delta.examples.items():
            kept = self.examples.setdefault(code, [])
            kept.extend(examples[: max(0, EXAMPLES - len(kept))])
        self.refusals.extend(delta.refusals[: max(0, EXAMPLES - len(self.refusals))])

    # -- output ------------------------------------------------------------------------

    def summary(self) -> str:
        n = self.n
        verb = "would be written" if self.dry_run else "written"
        unit = "cached users" if self.command == "cache-to-db" else "keys"
        line = f"{self.command}: {n['keys']} {unit} read ({n['users']} users, " \
               f"{n['conversations']} conversations"
        line += f", {n['empty']} empty); " if self.command != "cache-to-db" else "); "
        line += f"{n['messages_read']} messages read, {n['written']} {verb}, " \
                f"{n['already']} already present"
        if self.command != "cache-to-db":
            line += f", {n['views_written']} views {verb}"
        if n["cached"]:
            line += f", {n['cached']} put in the cache"
        if n["cleared"] or n["kept"]:
            line += f"; {n['cleared']} caches cleared, {n['kept']} kept"
        if n["refused"]:
            line += f", {n['refused']} refused by the database"
        skipped = sum(self.skipped.values())
        line += f"; {skipped} skipped"
        if skipped:
            line += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) + ")"
        if n["resumed"]:
            line += f"; resumed after {n['resumed']} users done earlier"
        if self.interrupted:
            line += "; STOPPED EARLY, run again to resume"
        return line

    def details(self) -> list[str]:
        lines = []
        if self.formats:
            seen = ", ".join(f"{k} {v}" for k, v in sorted(self.formats.items()))
            lines.append(f"formats: {seen}")
        if self.n["ignored"]:
            lines.append(f"{self.n['ignored']} other keys name no user: not read")
        if self.n["replaced"]:
            lines.append(f"{self.n['replaced']} strings had invalid bytes or U+0000, "
                         "replaced with U+FFFD")
        if self.refusals:
            lines.append("refused by the database (kept out of SQL), e.g.:")
            lines.extend(f"  {example}" for example in self.refusals)
        for code in sorted(self.examples):
            lines.append(f"skipped ({code}), e.g.:")
            lines.extend(f"  {example}" for example in self.examples[code])
        return lines

    def as_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "counts": {k: self.n[k] for k in COUNTS},
            "skipped": dict(self.skipped),
            "skip_examples": self.examples,
            "refused_examples": self.refusals,
            "formats": dict(self.formats),
            "summary": self.summary(),
        }
