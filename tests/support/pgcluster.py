"""Throwaway PostgreSQL clusters for tests: real ``initdb``/``pg_ctl`` on loopback ports.

Why real clusters rather than a mock or the system service:

* hdsvault's invariants (journal and data in one transaction, nothing acknowledged is lost,
  synchronous multi-site replication) are properties of PostgreSQL itself; only a real server
  can prove them.
* The machine's system cluster (port 5432) is shared state we must never touch. Every cluster
  here lives in its own temporary directory, listens on a free ``127.0.0.1`` port and its own
  Unix socket directory, and is deleted by :meth:`PostgresCluster.destroy`.

``initdb`` refuses to run as root. When the tests run as root (CI does), every server-side
binary (``initdb``, ``pg_ctl``, ``pg_basebackup``) runs as the unprivileged ``postgres`` OS
user through ``setpriv`` (or ``runuser``), and the temporary directory is chowned to that user.
Under a normal user account the binaries simply run as that user. Client binaries (``psql``,
``pg_dump``) connect over TCP with ``trust`` authentication, so they run as the caller.

Environment variables starting with ``PG`` (``PGHOST``, ``PGPORT``, ``PGSERVICE`` ...) are
stripped from every child process so that a developer's shell can never redirect a test to
another server.

Typical use::

    with PostgresCluster() as pg:
        url = pg.create_database("app")   # postgresql+psycopg://postgres@127.0.0.1:PORT/app
        ...

Linux only (uses ``/proc`` to wait for crashed processes to disappear).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

__all__ = [
    "PostgresCluster",
    "PostgresClusterError",
    "find_pg_bin_dir",
    "missing_requirements",
]

SERVER_OS_USER = "postgres"
"""OS account that owns data directories and runs the server when we are root."""

SUPERUSER = "postgres"
"""Database superuser created by ``initdb -U``; trusted on loopback, no password."""

StopMode = Literal["smart", "fast", "immediate"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_START_ATTEMPTS = 5
_PG_CTL_TIMEOUT_S = 60
_LOG_TAIL_LINES = 40

# Clusters still alive at interpreter exit are destroyed so that an aborted test session does
# not leave postmasters running and temporary directories behind (a SIGKILLed pytest still
# can: there is nothing a process can do about that).
_live_clusters: weakref.WeakSet[PostgresCluster] = weakref.WeakSet()


@atexit.register
def _destroy_leftovers() -> None:
    for cluster in list(_live_clusters):
        with contextlib.suppress(Exception):
            cluster.destroy()


class PostgresClusterError(RuntimeError):
    """A cluster operation failed; the message ends with the tail of the server log."""


def find_pg_bin_dir() -> Path | None:
    """Return the directory holding ``initdb``/``pg_ctl``/``postgres``, or ``None``.

    Debian installs the server binaries under ``/usr/lib/postgresql/<major>/bin`` (not on
    ``PATH``); the newest major version wins. Otherwise ``pg_config --bindir`` is asked, which
    covers source builds and other distributions.
    """
    candidates: list[tuple[int, Path]] = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        if bin_dir.parent.name.isdigit() and (bin_dir / "initdb").is_file():
            candidates.append((int(bin_dir.parent.name), bin_dir))
    if candidates:
        return max(candidates)[1]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        bin_dir = Path(result.stdout.strip())
        if result.returncode == 0 and (bin_dir / "initdb").is_file():
            return bin_dir
    return None


def missing_requirements() -> str | None:
    """Explain what prevents starting a cluster on this machine, or ``None`` if nothing does.

    Meant for fixtures: they pass the explanation to ``require_component`` (skip locally,
    fail in CI).
    """
    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        return (
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin or pg_config); "
            "run scripts/setup-system.sh"
        )
    for tool in ("initdb", "pg_ctl", "postgres", "psql", "pg_dump", "pg_basebackup"):
        if not (bin_dir / tool).is_file():
            return f"{bin_dir / tool} is missing; run scripts/setup-system.sh"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            return (
                f"running as root but OS user {SERVER_OS_USER!r} does not exist "
                "(initdb refuses to run as root); run scripts/setup-system.sh"
            )
        if shutil.which("setpriv") is None and shutil.which("runuser") is None:
            return "running as root but neither setpriv nor runuser is available"
    return None


def _free_port() -> int:
    """Ask the kernel for a free loopback port.

    The port is released before PostgreSQL binds it, so another process may take it in
    between; :meth:`PostgresCluster.start` retries with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_quote(value: str) -> str:
    """Quote a value for postgresql.conf (single quotes, doubled inside)."""
    return "'" + value.replace("'", "''") + "'"


def _check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _live_processes(pids: Sequence[int]) -> list[int]:
    """Return the pids still running; zombies count as gone.

    After SIGKILL the postmaster is re-parented to PID 1, which in containers does not always
    reap children: a zombie answers ``kill(pid, 0)`` but holds no resources any more.
    """
    alive = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # Format: "pid (comm) state ..."; comm may contain spaces and parentheses.
        state = stat.rsplit(")", 1)[1].split()[0]
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def _group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # After "(comm)": state ppid pgrp ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


class PostgresCluster:
    """One throwaway PostgreSQL cluster (data directory + server process).

    Constructing the object runs ``initdb``; :meth:`start` (or ``with``) starts the server.
    The TCP port is chosen at the first start and kept across restarts so that URLs handed
    out before a crash or a restart stay valid.

    Args:
        durable: ``False`` (default) sets ``fsync=off`` for speed. A process crash
            (:meth:`kill`) still loses nothing acknowledged, because the WAL reaches the
            kernel page cache at commit; only an OS crash or power loss would. Use ``True``
            for tests and benchmarks whose claim is about real durability (fsync timing,
            bench numbers comparable to production).
        settings: extra ``postgresql.conf`` parameters, appended after ours.
        name: prefix of the temporary directory, to recognise clusters in ``ps``/``/tmp``.
        bin_dir: PostgreSQL binaries; default :func:`find_pg_bin_dir`.
        base_dir: parent of the temporary directory; default the system temp dir. It must be
            traversable by the ``postgres`` user when running as root (pytest's ``tmp_path``
            is not: its root is mode 0700).
    """

    def __init__(
        self,
        *,
        durable: bool = False,
        settings: Mapping[str, str | int | bool] | None = None,
        name: str = "pg",
        bin_dir: Path | None = None,
        base_dir: Path | None = None,
        _initdb: bool = True,
    ) -> None:
        problem = missing_requirements() if bin_dir is None else None
        if problem is not None:
            raise PostgresClusterError(problem)
        found = bin_dir or find_pg_bin_dir()
        assert found is not None  # missing_requirements() checked it
        self.bin_dir: Path = found
        self.durable = durable
        self.name = name
        self.port: int | None = None
        self.upstream: PostgresCluster | None = None
        """For a standby: the cluster it was cloned from (kept after :meth:`promote`)."""
        self.application_name: str | None = None
        self._destroyed = False

        self.base_dir = Path(tempfile.mkdtemp(prefix=f"hdsvault-{name}-", dir=base_dir))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "server.log"
        self.socket_dir.mkdir()
        self.log_path.touch()
        self._chown_tree(self.base_dir)
        _live_clusters.add(self)

        if _initdb:
            try:
                self._initdb(settings or {})
            except BaseException:
                self.destroy()
                raise

    # ------------------------------------------------------------------ construction

    def _initdb(self, settings: Mapping[str, str | int | bool]) -> None:
        args = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
        ]
        if not self.durable:
            args.append("--no-sync")
        self._run(args, as_server=True, what="initdb")

        conf: dict[str, str | int | bool] = {
            # Replication is always possible, so standby_of() works on any cluster.
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_keep_size": "128MB",
            "hot_standby": True,
            # Keep a crashed or misbehaving test diagnosable from server.log alone.
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_min_messages": "warning",
        }
        if not self.durable:
            conf["fsync"] = False
            conf["full_page_writes"] = False
        conf.update(settings)
        self.write_settings(conf)

        # initdb -A trust already trusts replication from 127.0.0.1; state it explicitly so
        # standby_of() does not depend on initdb's defaults.
        with (self.data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"\n# hdsvault tests\nhost replication {SUPERUSER} 127.0.0.1/32 trust\n")

    def write_settings(self, settings: Mapping[str, str | int | bool]) -> None:
        """Append parameters to ``postgresql.conf`` (takes effect at next start or reload).

        Parameters live in the file rather than on the command line so that ``ALTER SYSTEM``
        can still override them and ``pg_basebackup`` carries them to standbys.
        """
        lines = ["", "# hdsvault test cluster"]
        for key, value in settings.items():
            _check_identifier(key)
            if isinstance(value, bool):
                text = "on" if value else "off"
            elif isinstance(value, int):
                text = str(value)
            else:
                text = _conf_quote(value)
            lines.append(f"{key} = {text}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")

    @classmethod
    def standby_of(
        cls,
        primary: PostgresCluster,
        *,
        synchronous: bool,
        name: str = "standby",
        timeout: float = 30.0,
    ) -> PostgresCluster:
        """Clone a running primary with ``pg_basebackup -R`` and start it as a streaming standby.

        With ``synchronous=True`` the primary's ``synchronous_standby_names`` is set to this
        standby, so a commit on the primary returns only once the standby has flushed its
        WAL (PostgreSQL's ``synchronous_commit = on``). The method returns once the primary
        reports the standby as ``streaming`` (and ``sync`` if requested).

        Note that a synchronous primary blocks commits while its standby is down;
        :meth:`destroy` on the standby resets ``synchronous_standby_names`` for that reason.
        Visibility on the standby lags the flush slightly (replay is asynchronous), so tests
        reading from it should poll with a bound.
        """
        if not primary.is_running or primary.port is None:
            raise PostgresClusterError("standby_of() needs a running primary")
        standby = cls(
            durable=primary.durable,
            name=name,
            bin_dir=primary.bin_dir,
            base_dir=primary.base_dir.parent,
            _initdb=False,
        )
        try:
            standby.upstream = primary
            standby.application_name = f"{name}_{uuid.uuid4().hex[:8]}"
            conninfo = (
                f"host=127.0.0.1 port={primary.port} user={SUPERUSER} "
                f"application_name={standby.application_name}"
            )
            standby._run(
                [
                    str(standby.bin_dir / "pg_basebackup"),
                    "-d",
                    conninfo,
                    "-D",
                    str(standby.data_dir),
                    "-R",  # write standby.signal + primary_conninfo
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    *(() if primary.durable else ("--no-sync",)),
                ],
                as_server=True,
                what="pg_basebackup",
            )
            # pg_basebackup -R derives primary_conninfo from the connection it used; state
            # ours explicitly (last line wins) so application_name is guaranteed to be there.
            with (standby.data_dir / "postgresql.auto.conf").open("a") as auto:
                auto.write(f"primary_conninfo = {_conf_quote(conninfo)}\n")
            standby.start()

            if synchronous:
                primary.psql(
                    f"ALTER SYSTEM SET synchronous_standby_names = '\"{standby.application_name}\"'"
                )
                primary.psql("SELECT pg_reload_conf()")
            wanted = "sync" if synchronous else "async"
            deadline = time.monotonic() + timeout
            while True:
                state = primary.psql(
                    "SELECT state || ' ' || sync_state FROM pg_stat_replication "
                    f"WHERE application_name = '{standby.application_name}'"
                )
                if state == f"streaming {wanted}":
                    break
                if time.monotonic() > deadline:
                    raise standby._error(
                        f"standby not {wanted} after {timeout:.0f}s (state={state!r})"
                    )
                time.sleep(0.05)
        except BaseException:
            standby.destroy()
            raise
        return standby

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_running(self) -> bool:
        """Whether a live postmaster owns the data directory."""
        return self._postmaster_pid() is not None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (or finished recovery).

        On the first start a free port is chosen; if another process grabs it first, a new
        one is tried (up to 5 times). Later starts reuse the same port.
        """
        self._check_not_destroyed()
        if self.is_running:
            return
        retry_ports = self.port is None
        for attempt in range(_START_ATTEMPTS):
            port = _free_port() if retry_ports else self.port
            assert port is not None
            log_offset = self.log_path.stat().st_size
            options = " ".join(
                shlex.quote(option)
                for option in (
                    "-p",
                    str(port),
                    "-k",
                    str(self.socket_dir),
                    "-c",
                    "listen_addresses=127.0.0.1",
                )
            )
            result = self._run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    str(_PG_CTL_TIMEOUT_S),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-o",
                    options,
                ],
                as_server=True,
                what="pg_ctl start",
                check=False,
            )
            if result.returncode == 0:
                self.port = port
                return
            new_log = self.log_path.read_bytes()[log_offset:].decode(errors="replace")
            port_taken = "could not bind" in new_log or "Address already in use" in new_log
            if not (retry_ports and port_taken) or attempt == _START_ATTEMPTS - 1:
                raise self._error(f"pg_ctl start failed:\n{result.stdout}{result.stderr}")
            # Port stolen between _free_port() and bind(): the server exited; try another.

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server with ``pg_ctl stop -m MODE`` and wait for it to exit.

        ``fast`` disconnects clients and checkpoints; ``immediate`` exits without a
        checkpoint, so the next start runs crash recovery (like :meth:`kill`, but orderly
        enough to be done by an operator).
        """
        if not self.is_running:
            return
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "-w",
                "-t",
                str(_PG_CTL_TIMEOUT_S),
                "-m",
                mode,
                "-D",
                str(self.data_dir),
            ],
            as_server=True,
            what=f"pg_ctl stop -m {mode}",
        )

    def kill(self, timeout: float = 30.0) -> None:
        """Crash the server: SIGKILL the postmaster and all its backends at once.

        This is the closest a test can get to pulling the plug on the process tree
        (OOM-kill, segfault of the host process). PostgreSQL gets no chance to flush or
        checkpoint; :meth:`start` afterwards runs crash recovery from the WAL.

        ``pg_ctl`` makes the postmaster a session leader, so the whole process group is
        killed at once. The method waits for every process to be gone, then removes the
        stale ``postmaster.pid`` and socket lock files, which the next postmaster would
        otherwise refuse while a zombie (unreaped by PID 1) still carries the old pid.
        """
        pid = self._postmaster_pid()
        if pid is None:
            return
        try:
            own_group = os.getpgid(pid) == pid and pid != os.getpgrp()
        except ProcessLookupError:  # died on its own meanwhile
            own_group = False
        if own_group:
            targets = _group_members(pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        else:  # not started by pg_ctl: kill the postmaster alone, backends follow it
            targets = [pid]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _live_processes(targets) or _group_members(pid):
            if time.monotonic() > deadline:
                raise self._error(f"processes still alive {timeout:.0f}s after SIGKILL")
            time.sleep(0.02)
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        if self.port is not None:
            for leftover in (f".s.PGSQL.{self.port}", f".s.PGSQL.{self.port}.lock"):
                (self.socket_dir / leftover).unlink(missing_ok=True)

    def promote(self) -> None:
        """Promote a standby to primary (``pg_ctl promote -w`` waits until it accepts writes)."""
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "promote",
                "-w",
                "-t",
                str(_PG_CTL_TIMEOUT_S),
                "-D",
                str(self.data_dir),
            ],
            as_server=True,
            what="pg_ctl promote",
        )

    def destroy(self) -> None:
        """Stop the server (immediately, or by SIGKILL if that fails) and delete everything.

        Idempotent. A synchronous standby (promoted or not) first removes itself from its
        upstream's ``synchronous_standby_names``: the upstream's commits would otherwise
        block forever waiting for it. (A promoted standby's old primary does keep blocking
        until then, as it would in production: that is what synchronous replication means.)
        """
        if self._destroyed:
            return
        self._destroyed = True
        _live_clusters.discard(self)
        primary = self.upstream
        if primary is not None and primary.is_running and self.application_name:
            with contextlib.suppress(PostgresClusterError):
                current = primary.psql("SHOW synchronous_standby_names")
                if self.application_name in current:
                    primary.psql("ALTER SYSTEM RESET synchronous_standby_names")
                    primary.psql("SELECT pg_reload_conf()")
        try:
            if self.is_running:
                try:
                    self.stop("immediate")
                except PostgresClusterError:
                    self.kill()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def __repr__(self) -> str:
        state = "destroyed" if self._destroyed else ("up" if self.is_running else "down")
        return f"<PostgresCluster {self.name} port={self.port} {state} {self.base_dir}>"

    # ------------------------------------------------------------------ client side

    def dsn(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of a database: ``postgresql+psycopg://postgres@127.0.0.1:PORT/DB``."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self._port()}/{dbname}"

    def conninfo(self, dbname: str = "postgres") -> str:
        """libpq connection string, for ``psycopg.connect()`` without SQLAlchemy."""
        return f"host=127.0.0.1 port={self._port()} user={SUPERUSER} dbname={dbname}"

    def create_database(self, name: str) -> str:
        """Create a database (plain identifier) and return its SQLAlchemy URL."""
        self.psql(f'CREATE DATABASE "{_check_identifier(name)}"')
        return self.dsn(name)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with ``psql`` and return its unaligned, tuples-only output (stripped).

        Multiple statements are allowed; the first error aborts (``ON_ERROR_STOP``) and
        raises :class:`PostgresClusterError` with psql's message.
        """
        result = self._run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self._port()),
                "-U",
                SUPERUSER,
                "-d",
                dbname,
            ],
            what="psql",
            input=sql.encode(),
        )
        return result.stdout.strip()

    def pg_dump(self, dbname: str, *extra_args: str) -> bytes:
        """Return the output of ``pg_dump`` (plain SQL unless ``extra_args`` say otherwise)."""
        result = self._run(
            [
                str(self.bin_dir / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self._port()),
                "-U",
                SUPERUSER,
                "--no-password",
                *extra_args,
                dbname,
            ],
            what="pg_dump",
            binary_stdout=True,
        )
        return result.stdout_bytes

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Last lines of the server log (what :class:`PostgresClusterError` messages end with)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ internals

    def _port(self) -> int:
        if self.port is None:
            raise PostgresClusterError(f"{self.name}: cluster was never started")
        return self.port

    def _postmaster_pid(self) -> int | None:
        """Pid of our live postmaster, or ``None``.

        ``postmaster.pid`` survives a crash, and its pid may since have been reused by an
        unrelated process: the pid only counts if that process runs on our data directory.
        """
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return None
        if os.fsencode(self.data_dir) not in cmdline or not _live_processes([pid]):
            return None
        return pid

    def _check_not_destroyed(self) -> None:
        if self._destroyed:
            raise PostgresClusterError(f"{self.name}: cluster was destroyed")

    def _error(self, message: str) -> PostgresClusterError:
        return PostgresClusterError(
            f"{self.name} ({self.base_dir}): {message}\n--- server log tail ---\n{self.log_tail()}"
        )

    @staticmethod
    def _server_user_prefix() -> list[str]:
        """Command prefix that drops root privileges to the ``postgres`` user."""
        if os.geteuid() != 0:
            return []
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            # Direct exec, no PAM session: the process we spawn is the tool itself.
            return [
                setpriv,
                f"--reuid={SERVER_OS_USER}",
                f"--regid={SERVER_OS_USER}",
                "--init-groups",
                "--",
            ]
        runuser = shutil.which("runuser")
        assert runuser is not None  # missing_requirements() checked it
        return [runuser, "-u", SERVER_OS_USER, "--"]

    @staticmethod
    def _chown_tree(path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(SERVER_OS_USER)
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in (*dirs, *files):
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)

    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(
            # English, predictable messages (start() greps the log for bind failures).
            LC_ALL="C",
            LANG="C",
            PGCLIENTENCODING="UTF8",
            # The server user cannot read root's home; tools fall back to it for rc files.
            HOME=str(self.base_dir),
        )
        return env

    def _run(
        self,
        args: list[str],
        *,
        what: str,
        as_server: bool = False,
        check: bool = True,
        input: bytes | None = None,
        binary_stdout: bool = False,
    ) -> _Result:
        prefix = self._server_user_prefix() if as_server else []
        proc = subprocess.run(
            [*prefix, *args],
            input=input,
            capture_output=True,
            env=self._env(),
            # The server user may not be able to enter the caller's cwd (e.g. /root).
            cwd=self.base_dir,
            check=False,
            timeout=_PG_CTL_TIMEOUT_S * 2,
        )
        result = _Result(
            returncode=proc.returncode,
            stdout="" if binary_stdout else proc.stdout.decode(errors="replace"),
            stderr=proc.stderr.decode(errors="replace"),
            stdout_bytes=proc.stdout if binary_stdout else b"",
        )
        if check and proc.returncode != 0:
            raise self._error(
                f"{what} exited with {proc.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result


@dataclass(frozen=True, slots=True)
class _Result:
    """Outcome of one child process (decoded output, raw stdout when binary)."""

    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes
