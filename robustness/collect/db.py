"""The collection database: submissions, model versions and rounds (SQLAlchemy Core).

Any SQLAlchemy URL works; SQLite (the default, and what the tests use) runs in WAL mode
with ``synchronous=FULL``, so a submission acknowledged with a 2xx survives the server
being killed right after. The schema carries a version in the ``meta`` table; a database of
another version is refused with a message saying so, never migrated silently.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
)

SCHEMA_VERSION = 1
STATUSES = ("pending", "accepted", "rejected")

metadata = MetaData()
meta = Table("meta", metadata, Column("key", String(64), primary_key=True),
             Column("value", String(256), nullable=False))
models = Table(
    "models", metadata,
    Column("version", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("round", Integer, nullable=True))  # the round that trained it (None: the start)
submissions = Table(
    "submissions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created", Float, nullable=False),
    Column("client_id", String(64), nullable=False, index=True),
    Column("label", Integer, nullable=False),  # the true label the person picked
    Column("reviewed_label", Integer, nullable=True),  # a reviewer's correction
    Column("status", String(16), nullable=False, default="pending", index=True),
    Column("model_version", Integer, ForeignKey("models.version"), nullable=False),
    Column("prediction", Integer, nullable=False),
    Column("probabilities", Text, nullable=False),  # JSON list, one per class
    Column("fooled", Boolean, nullable=False),
    Column("png", LargeBinary, nullable=False),  # the upload, as received
    Column("tensor", LargeBinary, nullable=False),  # float32 (C, H, W) the model saw
    Column("used_in_round", Integer, nullable=True))
rounds = Table(
    "rounds", metadata,
    Column("n", Integer, primary_key=True),
    Column("status", String(16), nullable=False),  # running / finished / failed
    Column("progress", Text, nullable=False, default=""),
    Column("started", Float, nullable=False),
    Column("finished", Float, nullable=True),
    Column("from_version", Integer, nullable=False),
    Column("model_version", Integer, nullable=True),  # the version it produced
    Column("result", Text, nullable=True))  # JSON: examples used, accuracies


class DatabaseVersionError(RuntimeError):
    """The database was written by another schema version of this harness."""


def open_database(url: str) -> Engine:
    """Connect, create the schema in a new database, or check an existing one's version."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # an acknowledged commit is on disk
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
    tables = set(inspect(engine).get_table_names())
    if "meta" not in tables:
        if tables:
            raise DatabaseVersionError(
                f"The database {engine.url.render_as_string(hide_password=True)} holds tables "
                f"({', '.join(sorted(tables))}) but no robustness-collect schema: point --db "
                "at a new database or at one this command created.")
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            conn.execute(meta.insert().values(key="created", value=str(time.time())))
        return engine
    with engine.connect() as conn:
        row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
    found = row[0] if row else "none"
    if found != str(SCHEMA_VERSION):
        raise DatabaseVersionError(
            f"The database {engine.url.render_as_string(hide_password=True)} has schema "
            f"version {found}; this version of robustness collect reads version "
            f"{SCHEMA_VERSION} only. Use a new database (or the harness version that wrote it).")
    return engine


__all__ = ["SCHEMA_VERSION", "STATUSES", "DatabaseVersionError", "metadata", "models",
           "open_database", "rounds", "submissions"]
