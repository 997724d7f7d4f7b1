"""Schema migrations (Alembic), run programmatically by ``hdsvault init`` and at start-up checks."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from hdsvault.db.engine import read_connection

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the database schema to ``revision`` (default: every newest revision).

    ``heads`` rather than ``head``: revisions written in parallel branches (before a merge
    revision joins them) are all applied instead of refusing to start.
    """
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the database schema back to ``revision`` (operators' rollback; migration tests)."""
    command.downgrade(_config(engine), revision)


def current_revisions(engine: Engine) -> frozenset[str]:
    with read_connection(engine) as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def head_revisions() -> frozenset[str]:
    return frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def is_up_to_date(engine: Engine) -> bool:
    """True when the schema is at the newest migrations (used by ``/readyz``)."""
    return current_revisions(engine) == head_revisions()
