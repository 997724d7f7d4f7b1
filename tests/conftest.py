"""Shared fixtures: real components started by the tests themselves.

Layout: the machinery lives in ``tests/support/`` (plain importable modules, unit-tested in
``tests/support/test_*.py``); this file only wires it into pytest fixtures. Add a fixture
for a new component in its own section below, following the same pattern:

1. ask the support module what is missing (``missing_requirements()``);
2. if anything is, call ``require_component(name, reason)``: skip on a developer machine,
   fail under ``CI`` (a missing component there is a broken environment, not a pass);
3. start the component, ``yield`` it, tear it down.

Expensive components are session-scoped and hand out cheap per-test slices (one PostgreSQL
cluster, one fresh database per test).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `support` importable whatever the import mode and whether or not tests/ becomes a
# package later (pytest's default "prepend" mode already does this for a rootdir conftest).
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from hdsvault.config import Settings, load_settings  # noqa: E402
from hdsvault.platform import Platform, init_platform  # noqa: E402
from hdsvault.tenants.service import add_tenant  # noqa: E402

from support import pgcluster, softhsm  # noqa: E402
from support.components import require_component  # noqa: E402
from support.pgcluster import PostgresCluster  # noqa: E402
from support.softhsm import SoftHSMToken  # noqa: E402

# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole session (per xdist worker).

    Not durable (``fsync=off``): tests about fsync-level durability start their own
    ``PostgresCluster(durable=True)``. Tests must not stop or kill this shared cluster;
    crash and failover tests start their own.
    """
    problem = pgcluster.missing_requirements()
    if problem is not None:
        require_component("postgresql", problem)
    with PostgresCluster(name="session") as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """SQLAlchemy URL of a fresh, empty database in the session cluster.

    Databases are not dropped after the test (they vanish with the cluster, and dropping
    would cost time); a failing test's database can be inspected while the session runs.
    """
    return pg_cluster.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLAlchemy URL of an empty database, once per supported backend.

    The PostgreSQL cluster is only started when a ``postgresql`` case actually runs, so
    ``-m "not postgres"`` stays free of PostgreSQL entirely.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/hdsvault.db"
    url: str = request.getfixturevalue("pg_url")
    return url


# --------------------------------------------------------------------------- SoftHSM2


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSMToken]:
    """A fresh SoftHSM2 token for the session; ``SOFTHSM2_CONF`` points at it meanwhile.

    See ``support/softhsm.py`` for why the variable is process-wide and when the module must
    be re-initialised (``softhsm.open_token`` does it).
    """
    problem = softhsm.missing_requirements()
    if problem is not None:
        require_component("softhsm2", problem)
    token = softhsm.init_token(tmp_path_factory.mktemp("softhsm"))
    try:
        yield token
    finally:
        softhsm.restore_env(token)


# --------------------------------------------------------------------------- the platform


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings of an initialised platform in ``tmp_path`` on each database backend."""
    s = load_settings(data_dir=tmp_path / "var", database={"url": db_url})
    init_platform(s)
    return s


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    """An opened platform (file KEK) on each database backend; closed after the test."""
    opened = Platform.open(settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def tenant(platform: Platform) -> str:
    """One establishment (FINESS 750712184) with its keys."""
    return add_tenant(platform, "750712184", "Hôpital de test", by="test").id
