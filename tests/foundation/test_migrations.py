"""The Alembic revisions build exactly the schema the code declares, on both backends.

Schema changes land as new revisions; a revision that forgets a column, an index or a table
(or a ``schema.py`` edit without its revision) makes the database differ from what the code
expects, and this test names the difference.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hdsvault.db.engine import create_db_engine
from hdsvault.db.migrate import current_revisions, head_revisions, upgrade
from hdsvault.db.schema import metadata


def test_revisions_build_the_declared_schema(db_url: str) -> None:
    engine = create_db_engine(db_url)
    try:
        upgrade(engine)
        assert current_revisions(engine) == head_revisions()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], f"migrations and db/schema.py differ: {diff}"
    finally:
        engine.dispose()
