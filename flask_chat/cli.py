"""``flask chat ...``: the database, the RQ worker and scheduler, and the sweep."""

from __future__ import annotations

import importlib

import click
from flask import current_app
from flask.cli import with_appcontext

from . import database, jobs
from .state import ChatState


def _state() -> ChatState:
    state: ChatState = current_app.extensions["chat"].state
    return state


@click.group("chat", help="flask-chat: database, workers, scheduler, sweep, migrations.")
def chat_cli() -> None:
    pass


@chat_cli.group("db", help="flask-chat's own tables (its own Alembic version table).")
def db_cli() -> None:
    pass


@db_cli.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Create or upgrade flask-chat's tables."""
    engine = _state().history.engine
    database.upgrade(engine, revision)
    click.echo(f"flask-chat database at revision {database.current_revision(engine)}")


@db_cli.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Downgrade flask-chat's tables (``base`` drops them)."""
    engine = _state().history.engine
    database.downgrade(engine, revision)
    click.echo(f"flask-chat database at revision {database.current_revision(engine)}")


@db_cli.command("current")
@with_appcontext
def db_current() -> None:
    """Show the schema revision, and the newest one this version ships."""
    engine = _state().history.engine
    click.echo(f"current: {database.current_revision(engine)}  head: {database.head_revision()}")


@chat_cli.command("worker")
@click.option("--burst", is_flag=True, help="Work off what is queued, then exit.")
@click.option("--name", default=None, help="Worker name (default: RQ's).")
@click.option("--maintenance-interval", type=click.IntRange(min=1),
              default=jobs.MAINTENANCE_INTERVAL, show_default=True,
              help="Seconds between looks for jobs a killed worker abandoned (and tries "
                   "to take over RQ's scheduler lock).")
@click.option("--job-monitoring-interval", type=click.IntRange(min=1),
              default=jobs.JOB_MONITORING_INTERVAL, show_default=True,
              help="Seconds between heartbeats of the running job (abandoned 60 s after "
                   "this much silence).")
@with_appcontext
def worker(burst: bool, name: str | None, maintenance_interval: int,
           job_monitoring_interval: int) -> None:
    """Run an RQ worker for flask-chat's jobs (each job in a fresh app context).

    A job whose worker was killed is retried by a live worker within
    job-monitoring-interval + 60 + maintenance-interval seconds (100 by default), then
    after its RETRY backoff."""
    from .jobs import AppWorker, queue, rq_connection

    state = _state()
    # An idle RQ worker runs its maintenance only when its blocking dequeue times out,
    # every worker_ttl - 15 seconds (405 by RQ's default): so that is set to match.
    w = AppWorker([queue(state)], connection=rq_connection(state), name=name,
                  maintenance_interval=maintenance_interval,
                  job_monitoring_interval=job_monitoring_interval,
                  worker_ttl=maintenance_interval + 15)
    w.app = current_app._get_current_object()  # type: ignore[attr-defined]
    # with_scheduler: RQ enqueues retries (with their backoff) from its own registry.
    # One worker holds the scheduler lock; another takes it over at its maintenance
    # once a killed holder's lock has run out (61 s).
    w.work(burst=burst, with_scheduler=True)


@chat_cli.command("scheduler")
@click.option("--interval", default=1.0, help="Seconds between checks for due jobs.")
@click.option("--burst", is_flag=True, help="Enqueue what is due, then exit.")
@with_appcontext
def scheduler(interval: float, burst: bool) -> None:
    """Run rq-scheduler, with the sweep registered (once, whoever else registers it)."""
    from rq_scheduler import Scheduler

    from .jobs import rq_connection, schedule_sweep

    state = _state()
    schedule_sweep(state)
    Scheduler(
        queue_name=state.keys.rq_queue(), connection=rq_connection(state), interval=interval
    ).run(burst=burst)


@chat_cli.command("sweep")
@with_appcontext
def sweep_now() -> None:
    """Persist every cached user's history now, and clear the offline users' caches."""
    from .jobs import sweep

    state = _state()
    total = state.redis.scard(state.keys.cached_users())
    with click.progressbar(length=total, label="Sweeping caches", show_pos=True) as bar:
        result = sweep(progress=bar.update)
    line = (
        f"swept {result['users']} users: {result['messages']} messages read, "
        f"{result['written']} written, {result['already']} already stored; "
        f"{result['cleared']} caches cleared, {result['kept']} kept (online)"
    )
    if result["rejected"]:
        line += (f"; {result['rejected']} could not be stored, kept in the cache "
                 "(flask chat dead-letters)")
    click.echo(line)


@chat_cli.command("dead-letters")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--forget", is_flag=True,
              help="Remove the listed entries (a cache entry stays in its cache, and is "
                   "listed again if the next persist still cannot store it).")
@with_appcontext
def dead_letters(as_json: bool, forget: bool) -> None:
    """List the records that could not be persisted (not messages, or refused by the
    database), with where they were and why."""
    import json

    from . import deadletters

    state = _state()
    entries = deadletters.read(state.redis, state.keys)
    for name, entry in entries.items():
        if as_json:
            click.echo(json.dumps(dict(entry, name=name), ensure_ascii=False))
        else:
            where = f"user {entry['owner']} {entry['conversation']}" if entry["owner"] else ""
            click.echo(f"{entry['at']}  {entry['source']}  {entry['message_id'] or '-'}  "
                       f"{where}  {entry['error']}")
    if forget:
        deadletters.forget(state.redis, state.keys, list(entries))
    if not as_json:
        click.echo(f"{len(entries)} dead letters" + (", forgotten" if forget else ""))


def attach_tools() -> None:
    """Add ``flask chat migrate ...`` and ``flask chat bridge``, which live in
    migrations_tools/ and bridge/ (installed as flask_chat_migrations and
    flask_chat_bridge). Called by ``init_app``: they import flask_chat themselves."""
    for module, name in (("flask_chat_migrations.cli", "migrate_cli"),
                         ("flask_chat_bridge.cli", "bridge_cli")):
        try:
            command = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        chat_cli.add_command(command)
