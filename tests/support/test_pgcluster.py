"""The PostgreSQL test harness does what the rest of the suite relies on.

Real clusters, real processes: if these pass, a fixture-provided database is a genuine
PostgreSQL server, crashes are genuine crashes and standbys genuinely replicate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from support.pgcluster import PostgresCluster, PostgresClusterError

pytestmark = pytest.mark.postgres


def _dbname(url: str) -> str:
    name = make_url(url).database
    assert name
    return name


def test_session_cluster_roundtrip_and_dump(pg_cluster: PostgresCluster, pg_url: str) -> None:
    """Connect with psycopg, write, read back, and find the row in pg_dump's output."""
    marker = f"marker-{uuid.uuid4().hex}"
    dbname = _dbname(pg_url)
    with psycopg.connect(pg_cluster.conninfo(dbname)) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes (body) VALUES (%s)", (marker,))
        conn.commit()
        row = conn.execute("SELECT body FROM notes").fetchone()
    assert row == (marker,)
    assert pg_cluster.psql("SELECT count(*) FROM notes", dbname=dbname) == "1"
    assert marker.encode() in pg_cluster.pg_dump(dbname)


def test_pg_url_is_a_fresh_database_reachable_by_sqlalchemy(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == _dbname(pg_url)
            tables = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            assert tables == 0
            # Not the system cluster on 5432: a throwaway, non-durable one.
            assert conn.execute(text("SHOW port")).scalar_one() != "5432"
            assert conn.execute(text("SHOW fsync")).scalar_one() == "off"
    finally:
        engine.dispose()


def test_db_url_gives_a_working_database_per_backend(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (v integer)"))
            conn.execute(text("INSERT INTO t VALUES (42)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT v FROM t")).scalar_one() == 42
    finally:
        engine.dispose()


def test_errors_carry_the_message(pg_cluster: PostgresCluster) -> None:
    with pytest.raises(PostgresClusterError, match="no_such_table"):
        pg_cluster.psql("SELECT * FROM no_such_table")
    with pytest.raises(ValueError):
        pg_cluster.create_database('bad"; DROP DATABASE postgres; --')


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A private cluster, for tests that stop, crash or replicate it."""
    with PostgresCluster(name="own") as cluster:
        yield cluster


def test_kill_then_start_recovers_committed_data_only(own_cluster: PostgresCluster) -> None:
    """SIGKILL of the whole server loses nothing committed and nothing uncommitted leaks."""
    pg = own_cluster
    port = pg.port
    pg.psql("CREATE TABLE t (v text)")
    with psycopg.connect(pg.conninfo()) as conn:
        conn.execute("INSERT INTO t VALUES ('committed')")
        conn.commit()
        conn.execute("INSERT INTO t VALUES ('in-flight')")  # never committed
        pg.kill()
        assert not pg.is_running
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    pg.start()
    assert pg.port == port  # URLs handed out earlier stay valid
    assert pg.psql("SELECT v FROM t ORDER BY v") == "committed"
    assert "database system was interrupted" in pg.log_path.read_text()


def test_stop_and_start_again(own_cluster: PostgresCluster) -> None:
    own_cluster.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
    own_cluster.stop("fast")
    assert not own_cluster.is_running
    own_cluster.start()
    assert own_cluster.psql("SELECT v FROM t") == "1"


def _poll(cluster: PostgresCluster, sql: str, expected: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        got = cluster.psql(sql)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_synchronous_standby_receives_commits_and_can_be_promoted(
    own_cluster: PostgresCluster,
) -> None:
    primary = own_cluster
    primary.psql("CREATE TABLE t (v text)")
    standby = PostgresCluster.standby_of(primary, synchronous=True)
    try:
        assert standby.port != primary.port
        assert primary.psql("SHOW synchronous_standby_names") == f'"{standby.application_name}"'
        assert standby.psql("SELECT pg_is_in_recovery()") == "t"

        primary.psql("INSERT INTO t VALUES ('replicated')")
        assert _poll(standby, "SELECT string_agg(v, ',') FROM t", "replicated") == "replicated"
        with pytest.raises(PostgresClusterError, match="read-only"):
            standby.psql("INSERT INTO t VALUES ('nope')")

        standby.promote()
        assert standby.psql("SELECT pg_is_in_recovery()") == "f"
        standby.psql("INSERT INTO t VALUES ('after-promotion')")
        assert standby.psql("SELECT count(*) FROM t") == "2"
    finally:
        standby.destroy()
    # Destroying a synchronous standby releases the primary, whose commits would block.
    assert primary.psql("SHOW synchronous_standby_names") == ""
    primary.psql("INSERT INTO t VALUES ('primary-still-writable')")


def test_destroy_removes_everything() -> None:
    cluster = PostgresCluster(name="gone")
    cluster.start()
    base = cluster.base_dir
    cluster.destroy()
    cluster.destroy()  # idempotent
    assert not base.exists()
    assert not cluster.is_running
