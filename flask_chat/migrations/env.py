"""Alembic environment for flask-chat's own tables (run through flask_chat.database)."""

from alembic import context

from flask_chat.database import VERSION_TABLE
from flask_chat.models import metadata

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
