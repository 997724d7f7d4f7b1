"""Hot statements run by the database driver's own cursor, inside SQLAlchemy's transaction.

Why: ``Connection.exec_driver_sql`` skips SQLAlchemy's compilation, but still builds an
execution context, a cursor result and its metadata for every statement: 50 us per
statement against 8 us for the same statement through the driver's cursor (a C-STORE's
lookup, SQLite, measured in-process). A C-STORE runs about seven statements (BEGIN, the
lookup, its rows, blob, tokens, study revision and journal entry), so this was ~0.3 ms of
the ~2 ms of interpreter time each one costs, paid under the interpreter lock that every
association of the listener shares.

What is kept of SQLAlchemy: the connection, its pool and its transaction (``begin`` /
commit / rollback, and the SQLite ``BEGIN`` hook of :mod:`hdsvault.db.engine`, which these
functions trigger as SQLAlchemy's own autobegin would); errors are raised as SQLAlchemy
raises them (``IntegrityError``, ``OperationalError``... through
``DBAPIError.instance``), and a connection the driver reports lost is invalidated, so that
callers and the pool behave exactly as with ``exec_driver_sql``. What is not: result rows
are plain tuples, and parameters go to the driver as they are (``?`` or ``%s`` markers,
:func:`hdsvault.db.engine.marker`). A statement built with SQLAlchemy Core is compiled once
per dialect by :func:`compiled`, which knows how its dialect wants the values bound. For the
few statements on a hot path only; everything else stays with SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement


@dataclass(frozen=True)
class Compiled:
    """A Core statement compiled for one dialect: its SQL; the names of its bound parameters
    in the order a positional dialect (SQLite's ``?``) takes them, empty for a dialect that
    binds by name (psycopg's ``%(name)s``); and the values of the literals it was built with
    (SQLAlchemy binds them as anonymous parameters)."""

    sql: str
    order: tuple[str, ...]
    literals: dict[str, Any]

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """``values`` (by name), with the literals, as the dialect binds them."""
        if self.literals:
            values = {**self.literals, **values}
        return [values[name] for name in self.order] if self.order else values


def compiled(statement: ClauseElement, dialect: Dialect) -> Compiled:
    """``statement`` compiled for ``dialect``: compile once per dialect and keep it (callers
    cache it); bind its named parameters (``bindparam``) with :meth:`Compiled.params`."""
    done = statement.compile(dialect=dialect)
    literals = {k: v for k, v in done.params.items() if v is not None}
    return Compiled(done.string, tuple(getattr(done, "positiontup", None) or ()), literals)


def execute(
    conn: Connection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] = (),
    *,
    autobegin: bool = True,
) -> list[tuple[Any, ...]]:
    """Run ``sql`` once; its rows (none for a statement that returns none). ``params``:
    positional, or by name for SQL written with named markers (a statement SQLAlchemy
    compiled for a dialect whose style that is). ``autobegin`` false: inside SQLAlchemy's
    ``begin`` hook, where the transaction is being begun."""
    if autobegin:
        _begun(conn)
    with _cursor(conn, sql, params) as cur:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description is not None else []


def execute_many(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` once per row of ``rows`` (the driver's ``executemany``)."""
    if rows:
        _begun(conn)
        with _cursor(conn, sql, rows) as cur:
            cur.executemany(sql, rows)


def _begun(conn: Connection) -> None:
    if not conn.in_transaction():
        conn.begin()  # what SQLAlchemy's autobegin does on a first statement (and its hooks)


@contextmanager
def _cursor(conn: Connection, sql: str, params: Any) -> Iterator[Any]:
    dbapi_conn = conn.connection.dbapi_connection
    cur = dbapi_conn.cursor()  # type: ignore[union-attr]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield cur
    except dbapi_error as exc:
        lost = conn.dialect.is_disconnect(exc, dbapi_conn, cur)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            params,
            exc,
            dbapi_error,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from exc
    finally:
        if not conn.invalidated:
            cur.close()
