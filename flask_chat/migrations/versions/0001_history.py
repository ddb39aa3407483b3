"""Chat history: messages, sessions, and what each user saw.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("sender_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(5), nullable=False),
        sa.Column("target_id", sa.BigInteger(), nullable=False),
        sa.Column("message_text", sa.Text(), nullable=False),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
    )
    op.create_index("ix_chat_messages_target", "chat_messages", ["kind", "target_id", "id"])
    op.create_index("ix_chat_messages_sender", "chat_messages", ["sender_id", "id"])
    op.create_table(
        "chat_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_chat_sessions"),
    )
    op.create_index("ix_chat_sessions_user_id", "chat_sessions", ["user_id"])
    op.create_table(
        "chat_message_views",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(24), nullable=False),
        sa.Column("conversation", sa.String(40), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["chat_messages.id"],
            ondelete="CASCADE",
            name="fk_chat_message_views_message_id_chat_messages",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            ondelete="SET NULL",
            name="fk_chat_message_views_session_id_chat_sessions",
        ),
        sa.PrimaryKeyConstraint("user_id", "message_id", name="pk_chat_message_views"),
    )
    op.create_index(
        "ix_chat_message_views_conversation",
        "chat_message_views",
        ["user_id", "conversation", "message_id"],
    )
    op.create_index("ix_chat_message_views_session", "chat_message_views", ["session_id"])


def downgrade() -> None:
    op.drop_table("chat_message_views")
    op.drop_table("chat_sessions")
    op.drop_table("chat_messages")
