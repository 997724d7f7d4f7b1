#!/usr/bin/env bash
# Regenerate the initial migration from src/hdsvault/db/schema.py.
# Only while 0001 has not been released to any installation: after that, schema changes get
# a new migration (alembic revision --autogenerate) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f src/hdsvault/db/migrations/versions/0001_foundation.py
uv run --frozen python - "$tmp/gen.db" <<'PY'
import sys
from alembic import command
from hdsvault.db.engine import create_db_engine
from hdsvault.db.migrate import _config
engine = create_db_engine(f"sqlite:///{sys.argv[1]}")
command.revision(_config(engine), message="foundation", autogenerate=True, rev_id="0001")
PY
uv run --frozen ruff format -q src/hdsvault/db/migrations/versions
rm -rf "$tmp"
echo "regenerated src/hdsvault/db/migrations/versions/0001_foundation.py"
