"""The SQL record of chat history (SQLAlchemy 2.x), on flask-chat's own metadata.

- ``chat_messages``: every message, stored once; its id from send time is the key.
- ``chat_sessions``: a user's login sessions (start, end).
- ``chat_message_views``: what each user saw — the message, from their side (``sent``
  or ``received``, in which conversation as they name it), in which of their sessions —
  so a transcript can be rebuilt from either side.

The tables live on their own ``MetaData`` (and their own Alembic version table), so they
sit beside a host app's models and Flask-Migrate without touching them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = metadata


class ChatMessage(Base):
    __tablename__ = "chat_messages"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    sender_id: Mapped[int] = mapped_column(BigInteger)
    #: ``User`` or ``Group``: what kind of conversation it was sent to.
    kind: Mapped[str] = mapped_column(String(5))
    #: The recipient user, or the group.
    target_id: Mapped[int] = mapped_column(BigInteger)
    message_text: Mapped[str] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_chat_messages_target", "kind", "target_id", "id"),
        Index("ix_chat_messages_sender", "sender_id", "id"),
    )


class ChatSession(Base):
    __tablename__ = "chat_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ChatMessageView(Base):
    __tablename__ = "chat_message_views"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[str] = mapped_column(
        String(24), ForeignKey("chat_messages.id", ondelete="CASCADE"), primary_key=True
    )
    #: The conversation key as this user names it (``2_User``, ``5_Group``).
    conversation: Mapped[str] = mapped_column(String(40))
    #: ``sent`` or ``received``.
    direction: Mapped[str] = mapped_column(String(8))
    session_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("chat_sessions.id", ondelete="SET NULL"), nullable=True
    )

    __table_args__ = (
        Index("ix_chat_message_views_conversation", "user_id", "conversation", "message_id"),
        Index("ix_chat_message_views_session", "session_id"),
    )


messages: Table = ChatMessage.__table__  # type: ignore[assignment]
sessions: Table = ChatSession.__table__  # type: ignore[assignment]
views: Table = ChatMessageView.__table__  # type: ignore[assignment]
