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


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` (default: the newest)."""
    command.upgrade(_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with read_connection(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def is_up_to_date(engine: Engine) -> bool:
    """True when the schema is at the newest migration (used by ``/readyz``)."""
    return current_revision(engine) == head_revision()
