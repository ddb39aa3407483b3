"""``flask chat migrate ...``: cached history into SQL, and the legacy Rails cache.

Attached to ``flask chat`` by :mod:`flask_chat.cli` when this package is installed.
Each command shows a progress bar and ends with one summary line of counts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from flask import current_app
from flask.cli import with_appcontext

from .cache_to_db import persist_cache
from .checkpoint import Checkpoint
from .keys import MigrationKeys
from .legacy_ids import DEFAULT_EPOCH, DEFAULT_UNTIL, LegacyIds
from .legacy_import import ImportSettings, LegacyImporter
from .merge import PAPERCLIP_ID
from .report import Report
from .sources import FileStoreSource, KeyTemplate, RedisSource, Source


def _chat() -> Any:
    return current_app.extensions["chat"]


def _date(_: Any, __: Any, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not a date: {value!r} (use YYYY-MM-DD)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _finish(report: Report, report_file: str | None) -> None:
    for line in report.details():
        click.echo(line)
    if report_file:
        with open(report_file, "w", encoding="utf-8") as f:
            json.dump(report.as_json(), f, indent=2, ensure_ascii=False)
    click.echo(report.summary())


@click.group("migrate", help="Move cached and legacy Rails chat history into SQL.")
def migrate_cli() -> None:
    pass


@migrate_cli.command("cache-to-db")
@click.option("--dry-run", is_flag=True, help="Read and count; write nothing.")
@click.option("--clear", is_flag=True,
              help="Clear each offline user's cache once persisted (as the sweep does).")
@click.option("--batch", "batch_size", type=click.IntRange(1), default=None,
              help="Users per SQL transaction (default: CHAT_PERSIST_BATCH_USERS).")
@click.option("--max-users", type=click.IntRange(0), default=None,
              help="Stop after this many users; the next run resumes.")
@click.option("--restart", is_flag=True, help="Forget an interrupted run's checkpoint.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, writable=True),
              help="Also write the report as JSON to this file.")
@with_appcontext
def cache_to_db(dry_run: bool, clear: bool, batch_size: int | None, max_users: int | None,
                restart: bool, report_file: str | None) -> None:
    """Persist every user's cached history to SQL (idempotent, resumable)."""
    state = _chat().state
    checkpoint = Checkpoint(state.redis, MigrationKeys(state.keys.prefix), "cache-to-db")
    if restart:
        checkpoint.clear()
    total = int(state.redis.scard(state.keys.cached_users()))
    with click.progressbar(length=total, label="Persisting cached history", show_pos=True) as bar:
        report = persist_cache(
            state, clear=clear, dry_run=dry_run,
            batch_size=batch_size or state.config.persist_batch_users,
            checkpoint=checkpoint, max_users=max_users, progress=bar.update,
        )
    _finish(report, report_file)


def _user_ids(path: str) -> list[int]:
    ids = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            if not text.isdigit() or int(text) < 1:
                raise click.BadParameter(f"line {number}: {text[:40]!r} is not a user id",
                                         param_hint="--user-ids")
            ids.append(int(text))
    return ids


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _members(chat: Any) -> Any:
    def members(group_id: int) -> Iterable[int] | None:
        group = chat.get_group(group_id)
        return None if group is None else group.members

    return members


def _check_id_settings(client: redis.Redis, keys: MigrationKeys, ids: LegacyIds,
                       force: bool) -> None:
    """The id scheme is fixed by the first import: a second one with another epoch
    would give every legacy message a second id."""
    recorded = client.hgetall(keys.legacy_ids())
    if recorded and recorded != ids.settings() and not force:
        raise click.UsageError(
            f"an earlier import numbered legacy messages with {recorded}; run with the same "
            "--legacy-epoch and --legacy-until (or --force-ids if those messages are gone)."
        )
    for name, value in ids.settings().items():
        client.hset(keys.legacy_ids(), name, value)


@migrate_cli.command("import-legacy")
@click.option("--redis", "redis_url", metavar="URL", help="The legacy app's Redis.")
@click.option("--namespace", metavar="NS",
              help="The store's namespace: keys are NS:<user id> (redis-store URL path, "
                   "Rails.cache :namespace).")
@click.option("--keys", "pattern", metavar="PATTERN",
              help="Find keys with this SCAN pattern (default: every key the template "
                   "can make).")
@click.option("--user-ids", "user_ids_file", type=click.Path(exists=True, dir_okay=False),
              help="Import these users' keys (one id a line) instead of scanning.")
@click.option("--key-template", default="{id}", show_default=True,
              help="The cache key of a user, with {id} for the user id.")
@click.option("--filestore", type=click.Path(exists=True, file_okay=False),
              help="A Rails FileStore directory (tmp/cache) instead of a Redis.")
@click.option("--dry-run", is_flag=True, help="Read, decode and count; write nothing.")
@click.option("--into-cache", is_flag=True,
              help="Also put the histories into the live flask-chat cache.")
@click.option("--batch", "batch_size", type=click.IntRange(1), default=200, show_default=True,
              help="Keys per SQL transaction.")
@click.option("--max-keys", type=click.IntRange(0), default=None,
              help="Stop after this many keys; the next run resumes.")
@click.option("--legacy-epoch", default=DEFAULT_EPOCH.date().isoformat(), show_default=True,
              callback=_date, help="Legacy message ids start at this date (UTC).")
@click.option("--legacy-until", default=DEFAULT_UNTIL.date().isoformat(), show_default=True,
              callback=_date, help="Legacy message ids stay before this date (UTC).")
@click.option("--force-ids", is_flag=True,
              help="Accept an epoch other than the one an earlier import used.")
@click.option("--sender-image-pattern", default=PAPERCLIP_ID, show_default=True,
              help="Regex whose groups give a group message's sender id from its image "
                   "path when no copy says who sent it; '' for none (sender 0).")
@click.option("--checkpoint", "checkpoint_name", metavar="NAME",
              help="Name of the resumable run (default: derived from the source).")
@click.option("--restart", is_flag=True, help="Forget an interrupted run's checkpoint.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, writable=True),
              help="Also write the report as JSON to this file.")
@with_appcontext
def import_legacy(redis_url: str | None, namespace: str | None, pattern: str | None,
                  user_ids_file: str | None, key_template: str, filestore: str | None,
                  dry_run: bool, into_cache: bool, batch_size: int, max_keys: int | None,
                  legacy_epoch: datetime, legacy_until: datetime, force_ids: bool,
                  sender_image_pattern: str, checkpoint_name: str | None, restart: bool,
                  report_file: str | None) -> None:
    """Import the legacy Rails chat cache (Rails 3-7 entries, dalli, bare Marshal) into
    SQL, exactly once per message, resumably."""
    if bool(redis_url) == bool(filestore):
        raise click.UsageError("give one source: --redis URL or --filestore DIR.")
    if filestore and (pattern or user_ids_file):
        raise click.UsageError("--keys and --user-ids go with --redis.")
    if pattern and user_ids_file:
        raise click.UsageError("give --keys or --user-ids, not both.")
    try:
        template = KeyTemplate(key_template, namespace)
        ids = LegacyIds(legacy_epoch, legacy_until)
        sender_image = re.compile(sender_image_pattern) if sender_image_pattern else None
    except (ValueError, re.error) as exc:
        raise click.UsageError(str(exc)) from None

    chat = _chat()
    state = chat.state
    legacy: redis.Redis | None = None
    source: Source
    if redis_url:
        legacy = redis.Redis.from_url(redis_url)
        description = f"redis {_redacted(redis_url)} {template.full} " \
                      f"{pattern or user_ids_file or ''}".strip()
        source = RedisSource(legacy, template, pattern=pattern,
                             user_ids=_user_ids(user_ids_file) if user_ids_file else None,
                             description=description)
    else:
        assert filestore
        source = FileStoreSource(filestore, template)
    keys = MigrationKeys(state.keys.prefix)
    name = checkpoint_name or "import-legacy-" + hashlib.sha1(
        source.description.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    checkpoint = Checkpoint(state.redis, keys, name)
    if restart:
        checkpoint.clear()
    if not dry_run:
        _check_id_settings(state.redis, keys, ids, force_ids)
    settings = ImportSettings(ids=ids, batch_size=batch_size, dry_run=dry_run,
                              into_cache=into_cache, max_keys=max_keys,
                              sender_image=sender_image)
    try:
        click.echo(f"source: {source.description}")
        with click.progressbar(length=source.total() or 0, label="Importing legacy caches",
                               show_pos=True) as bar:
            report = LegacyImporter(source, state.history, _members(chat), settings,
                                    checkpoint=checkpoint, cache=state.cache,
                                    progress=bar.update).run()
    finally:
        if legacy is not None:
            legacy.close()
    _finish(report, report_file)
