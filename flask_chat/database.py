"""The SQL engine and the schema migrations shipped with flask-chat.

flask-chat uses the host app's Flask-SQLAlchemy ``db`` when given one (``Chat(db=db)``),
otherwise its own engine from ``CHAT_DATABASE_URL`` (default: SQLite in the app's
instance folder). Its tables are created and upgraded by Alembic with its own version
table, ``flask_chat_alembic_version``, so they live beside a host app's Flask-Migrate.
"""

from __future__ import annotations

import os
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

VERSION_TABLE = "flask_chat_alembic_version"
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def default_url(instance_path: str) -> str:
    return "sqlite:///" + os.path.join(instance_path, "flask_chat.db")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        path = engine.url.database

        @event.listens_for(engine, "do_connect")
        def _make_folder(*_: Any) -> None:
            # The instance folder may not exist yet; create it on first use only.
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets web processes read while a worker writes; foreign keys are off
            # by default in SQLite.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(MIGRATIONS).get_current_head()
