"""``hdsvault backup ...``: platform backups, verification, restore, retention, offline media.

Each command opens the platform, calls one function of :mod:`hdsvault.backup.service` and
renders the result (Rich tables, progress bars on stderr, ``--json`` where a machine reads it).
Every act is journaled by the service. ``restore`` also works when the platform cannot be
opened (its data directory is gone): that is the disaster the backups exist for, see the PRA
runbook in ``docs/backup.md``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from hdsvault.backup.errors import BackupError
from hdsvault.backup.service import BackupService, dumps, parse_policy
from hdsvault.cli.context import (
    config_file,
    console,
    err_console,
    fail,
    opened_platform,
    operator_name,
)

app = typer.Typer(
    help="Backups: run, verify, restore, retention, offline media.", no_args_is_help=True
)
media_app = typer.Typer(help="Offline media inventory.", no_args_is_help=True)
escrow_app = typer.Typer(
    help="Escrow passphrases (open a repository without the KEK).", no_args_is_help=True
)
app.add_typer(media_app, name="media")
app.add_typer(escrow_app, name="escrow")

RepoOption = Annotated[
    str | None, typer.Option("--repo", "-r", help="Repository name (default: the first).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def emit_json(text: str) -> None:
    """JSON on stdout, unwrapped and uncoloured (Rich would fold long lines)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@contextmanager
def backup_service() -> Iterator[BackupService]:
    with opened_platform() as platform:
        yield BackupService(platform, operator_name(), config_file=config_file())


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A byte progress bar on stderr; yields the ``progress(done, total)`` callback."""
    if not enabled:
        yield lambda _d, _t: None
        return
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, 1))

        yield update


def read_passphrase(path: Path | None, *, confirm: bool) -> str:
    if path is not None:
        return path.read_text().rstrip("\n")
    return str(typer.prompt("escrow passphrase", hide_input=True, confirmation_prompt=confirm))


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BackupError as exc:
        fail(str(exc))


# --------------------------------------------------------------------------- run / list


@app.command("init")
def init(
    repo: RepoOption = None,
    escrow_passphrase_file: Annotated[
        Path | None, typer.Option(help="Also wrap the key with this passphrase (escrow).")
    ] = None,
) -> None:
    """Create a configured repository (``run`` creates it too, without escrow)."""
    with backup_service() as svc:
        opened = _guard(lambda: svc.open(repo, create=True))
        console.print(f"[green]✓[/] repository {svc.config_of(repo).name}: {opened.id}")
        if escrow_passphrase_file is not None:
            name = _guard(
                lambda: svc.add_escrow(repo, read_passphrase(escrow_passphrase_file, confirm=False))
            )
            console.print(f"[green]✓[/] escrow key {name}")
        key = svc.signing_key().public_key()
        from hdsvault.backup.service import public_key_b64

        console.print(f"snapshot signer (record it in the PRA runbook): {public_key_b64(key)}")


@app.command("run")
def run(
    repo: Annotated[
        str | None, typer.Option("--repo", "-r", help="One repository (default: every one).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Back up the whole platform (database, journal, blobs, configuration) now."""
    with backup_service() as svc:
        names = [repo] if repo else [r.name for r in svc.settings.backup.repositories]
        if not names:
            fail("no backup repository configured: add [[backup.repositories]]")
        results = []
        failed = False
        for name in names:
            try:
                with progress_bar(f"backup {name}", not json_out) as update:
                    steps = (
                        (lambda s, n=name: err_console.print(f"  {n}: {s}"))
                        if not json_out
                        else None
                    )
                    result = svc.run(name, progress=update, step=steps)
            except BackupError as exc:
                err_console.print(f"[bold red]error:[/] {exc}")
                failed = True
                continue
            results.append(result)
            if not json_out:
                snap = result.snapshot
                stats = snap.stats
                console.print(
                    f"[green]✓[/] {name}: snapshot {snap.id[:12]} seq {snap.seq}, "
                    f"{result.manifest.total_resources} resources, {stats.get('files')} files, "
                    f"{stats.get('bytes', 0) / 1e6:.1f} MB ({stats.get('new_bytes', 0) / 1e6:.1f} "
                    f"MB new); snapshot {result.seconds['platform snapshot']:.2f} s, "
                    f"repository {result.seconds['repository backup']:.2f} s"
                )
        if json_out:
            emit_json(
                dumps(
                    [
                        {
                            "repository": r.repository,
                            "snapshot": r.snapshot.id,
                            "seq": r.snapshot.seq,
                            "resources": r.manifest.total_resources,
                            "seconds": r.seconds,
                            "stats": r.snapshot.stats,
                        }
                        for r in results
                    ]
                )
            )
        if failed:
            raise typer.Exit(1)


@app.command("list")
def list_(repo: RepoOption = None, json_out: JsonOption = False) -> None:
    """Snapshots of a repository, oldest first."""
    with backup_service() as svc:
        opened = _guard(lambda: svc.open(repo))
        snaps = opened.snapshots()
    if json_out:
        emit_json(
            dumps(
                [
                    {
                        "id": s.id,
                        "seq": s.seq,
                        "time": s.time,
                        "host": s.manifest.host,
                        "tags": s.tags,
                        "paths": s.paths,
                        "files": s.stats.get("files"),
                        "bytes": s.stats.get("bytes"),
                        "locked": opened.backend.is_locked(f"snapshots/{s.id}"),
                    }
                    for s in snaps
                ]
            )
        )
        return
    table = Table(title=f"Snapshots of {svc.config_of(repo).name}")
    for col in ("seq", "id", "time", "host", "files", "MB", "locked"):
        table.add_column(col, justify="right" if col in ("seq", "files", "MB") else "left")
    for s in snaps:
        table.add_row(
            str(s.seq),
            s.id[:12],
            s.time,
            s.manifest.host,
            str(s.stats.get("files")),
            f"{s.stats.get('bytes', 0) / 1e6:.1f}",
            "yes" if opened.backend.is_locked(f"snapshots/{s.id}") else "no",
        )
    console.print(table)


# --------------------------------------------------------------------------- verify


@app.command("verify")
def verify(
    repo: RepoOption = None,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Read and check every pack.")
    ] = False,
    sample: Annotated[
        float | None,
        typer.Option("--sample", help="Read this percentage of packs.", min=0, max=100),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Check a repository (and against the journal: rollback, replay); exit 1 on any error."""
    depth: bool | float = True if read_data else (sample / 100 if sample else False)
    with backup_service() as svc:
        with progress_bar("verify", not json_out and bool(depth)) as update:
            report = _guard(lambda: svc.verify(repo, read_data=depth, progress=update))
        name = svc.config_of(repo).name
    if json_out:
        emit_json(
            dumps(
                {
                    "repository": name,
                    "ok": report.ok,
                    "snapshots": report.snapshots_checked,
                    "packs": report.packs_checked,
                    "packs_read": report.packs_read,
                    "bytes_read": report.bytes_read,
                    "latest_seq": report.latest_seq,
                    "problems": [
                        {
                            "kind": str(p.kind),
                            "subject": p.subject,
                            "detail": p.detail,
                            "error": p.is_error,
                            "chunks": p.chunks[:100],
                            "affected": [
                                {"snapshot": a.snapshot, "path": a.path} for a in p.affected[:100]
                            ],
                        }
                        for p in report.problems
                    ],
                }
            )
        )
    else:
        style = "green" if report.ok else "bold red"
        console.print(f"[{style}]{report.summary()}[/]", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- restore


def _restore_disaster(
    snapshot: str,
    to: Path,
    *,
    repo: str | None,
    from_dir: Path | None,
    escrow: bool,
    passphrase_file: Path | None,
    trust_signer: list[str],
    salvage: bool,
    as_platform: bool,
    database_url: str | None,
) -> None:
    """Restore without an opened platform (its data directory or database is gone)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from hdsvault.backup.engine import BackupRepository
    from hdsvault.backup.repository import LocalRepository
    from hdsvault.backup.service import open_backend, restore_as_platform
    from hdsvault.cli.context import settings as load
    from hdsvault.crypto.kek import load_kek

    cfg = load()
    keys = [*cfg.backup.trusted_signers, *trust_signer]
    if not keys:
        fail(
            "the platform is not available to say which key signs its snapshots: give "
            "--trust-signer <base64 public key> (from the PRA runbook) or backup.trusted_signers"
        )
    trusted = [Ed25519PublicKey.from_public_bytes(base64.b64decode(k)) for k in keys]
    if from_dir is not None:
        backend: Any = LocalRepository(from_dir, durable=False)
    else:
        repos = cfg.backup.repositories
        chosen = next((r for r in repos if repo is None or r.name == repo), None)
        if chosen is None:
            fail(f"no backup repository {repo or ''} configured")
        backend = open_backend(chosen)
    passphrase = read_passphrase(passphrase_file, confirm=False) if escrow else None
    kek = None if escrow else load_kek(cfg.kek, cfg.kek_file)
    opened = _guard(
        lambda: BackupRepository.open(backend, kek=kek, passphrase=passphrase, trusted_keys=trusted)
    )
    err_console.print("[yellow]platform unavailable: restoring in disaster-recovery mode[/]")
    with progress_bar("restore") as update:
        if as_platform:
            url = database_url or (
                cfg.database.url or f"sqlite:///{(to / 'hdsvault.db').resolve()}"
            )
            restored = _guard(
                lambda: restore_as_platform(
                    opened,
                    snapshot,
                    to,
                    url,
                    salvage=salvage,
                    pg_bin_dir=cfg.backup.pg_bin_dir,
                    progress=update,
                )
            )
            _report_platform(restored)
            _journal_restored(to, url, opened.snapshot(snapshot).id, opened.id)
        else:
            result = _guard(lambda: opened.restore(snapshot, to, salvage=salvage, progress=update))
            _report_files(result)


def _journal_restored(data_dir: Path, url: str, snapshot_id: str, repository_id: str) -> None:
    """Record the restore in the restored platform's own journal (when it opens)."""
    from hdsvault.cli.context import settings as load
    from hdsvault.journal.entry import Category
    from hdsvault.platform import Platform

    try:
        cfg = load().model_copy(update={"data_dir": data_dir})
        cfg.database = cfg.database.model_copy(update={"url": url})
        platform = Platform.open(cfg)
    except Exception as exc:
        err_console.print(f"[yellow]restored platform not opened ({exc}); restore not journaled[/]")
        return
    try:
        BackupService(platform, operator_name()).journal_now(
            "backup.restore",
            Category.MOVEMENT,
            objects=(f"BackupRepository/{repository_id}", f"BackupSnapshot/{snapshot_id}"),
        )
    finally:
        platform.close()


def _report_files(result: Any) -> None:
    console.print(
        f"[green]✓[/] restored {result.files} files, {result.dirs} directories, "
        f"{result.bytes / 1e6:.1f} MB into {result.target}"
    )
    if result.broken:
        table = Table(title="Not restored (corrupt or missing data)")
        for col in ("path", "pack", "reason"):
            table.add_column(col)
        for b in result.broken:
            table.add_row(b.path, b.pack or b.chunk, b.reason)
        console.print(table)
        raise typer.Exit(1)


def _report_platform(restored: Any) -> None:
    m = restored.manifest
    console.print(
        f"[green]✓[/] platform restored into {restored.data_dir} ({m.database}, "
        f"{m.total_resources} resources, {len(m.tenants)} tenants, snapshot of {m.time})"
    )
    if restored.mismatches:
        for line in restored.mismatches:
            err_console.print(f"[bold red]count mismatch:[/] {line}")
        raise typer.Exit(1)
    console.print(
        "Provide the KEK to the restored platform (same key file or HSM), then "
        "`hdsvault journal verify` and `hdsvault serve` (docs/backup.md, PRA runbook)."
    )


def _platform_opens() -> bool:
    """Whether the configured platform opens (without creating an empty SQLite file)."""
    from sqlalchemy.engine import make_url

    from hdsvault.cli.context import settings as load
    from hdsvault.platform import Platform

    cfg = load()
    url = cfg.database_url
    if url.startswith("sqlite"):
        db = Path(make_url(url).database or "")
        if not db.is_file() or db.stat().st_size == 0:
            return False
    try:
        Platform.open(cfg).close()
    except Exception:
        return False
    return True


@app.command("restore")
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix, or 'latest'.")],
    to: Annotated[Path, typer.Option("--to", help="Empty or absent target directory.")],
    repo: RepoOption = None,
    salvage: Annotated[
        bool, typer.Option("--salvage", help="Restore what is intact; list what is not.")
    ] = False,
    as_platform: Annotated[
        bool,
        typer.Option("--platform", help="Rebuild a runnable platform: --to becomes its data dir."),
    ] = False,
    database_url: Annotated[
        str | None, typer.Option(help="With --platform: database to restore into.")
    ] = None,
    from_dir: Annotated[
        Path | None, typer.Option(help="Read an offline copy (its repository/ directory).")
    ] = None,
    escrow: Annotated[bool, typer.Option(help="Open with the escrow passphrase.")] = False,
    passphrase_file: Annotated[Path | None, typer.Option(help="Escrow passphrase file.")] = None,
    trust_signer: Annotated[
        list[str] | None, typer.Option(help="Trusted snapshot signer (base64), repeatable.")
    ] = None,
) -> None:
    """Restore a snapshot's files, or (``--platform``) a whole platform."""
    disaster = from_dir is not None or escrow or not _platform_opens()
    if disaster:
        _restore_disaster(
            snapshot,
            to,
            repo=repo,
            from_dir=from_dir,
            escrow=escrow,
            passphrase_file=passphrase_file,
            trust_signer=trust_signer or [],
            salvage=salvage,
            as_platform=as_platform,
            database_url=database_url,
        )
        return
    with backup_service() as svc:
        if as_platform:
            from hdsvault.backup.service import restore_as_platform
            from hdsvault.journal.entry import Category

            opened = _guard(lambda: svc.open(repo))
            snap = _guard(lambda: opened.snapshot(snapshot))
            url = database_url
            if url is None:
                fail("the platform is running: --platform needs --database-url of a new database")
            with progress_bar("restore") as update:
                restored = _guard(
                    lambda: restore_as_platform(
                        opened,
                        snap.id,
                        to,
                        url,
                        salvage=salvage,
                        pg_bin_dir=svc.settings.backup.pg_bin_dir,
                        progress=update,
                    )
                )
            svc.journal_now(
                "backup.restore",
                Category.MOVEMENT,
                objects=(f"BackupRepository/{opened.id}", f"BackupSnapshot/{snap.id}"),
            )
            _report_platform(restored)
            return
        with progress_bar("restore") as update:
            result = _guard(
                lambda: svc.restore(repo, snapshot, to, salvage=salvage, progress=update)
            )
        _report_files(result)


# --------------------------------------------------------------------------- retention


@app.command("forget")
def forget(
    policy: Annotated[str, typer.Option(help="e.g. daily=30,monthly=12,yearly=10")],
    repo: RepoOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Apply a retention policy, then prune; locked (immutable) objects are never removed."""
    with backup_service() as svc:
        rules = _guard(lambda: parse_policy(policy))
        result, pruned = _guard(lambda: svc.forget(repo, rules, dry_run=dry_run))
    doc = {
        "dry_run": dry_run,
        "keep": [
            {"id": s.id, "seq": s.seq, "time": s.time, "rules": r} for s, r in result.plan.keep
        ],
        "remove": [s.id for s in result.plan.remove],
        "removed": result.removed,
        "locked": result.locked,
        "record": result.record,
        "packs_deleted": len(pruned.packs_deleted) if pruned else 0,
        "packs_locked": len(pruned.packs_locked) if pruned else 0,
        "bytes_freed": pruned.bytes_freed if pruned else 0,
    }
    if json_out:
        emit_json(dumps(doc))
        return
    console.print(
        f"keep {len(doc['keep'])}, remove {len(doc['remove'])}"
        + (" (dry run)" if dry_run else f": removed {len(result.removed)}")
    )
    for sid in result.locked:
        console.print(f"[yellow]kept[/] {sid[:12]}: immutable until its retention date")
    if pruned:
        console.print(
            f"prune: {len(pruned.packs_deleted)} packs deleted, {pruned.bytes_freed / 1e6:.1f} MB "
            f"freed, {len(pruned.packs_locked)} unreferenced packs still locked"
        )


@app.command("maintain")
def maintain(repo: RepoOption = None) -> None:
    """Extend the Object Lock retention of every object live snapshots need (S3)."""
    with backup_service() as svc:
        n = _guard(lambda: svc.maintain(repo))
    console.print(f"[green]✓[/] retention extended on {n} objects")


# --------------------------------------------------------------------------- offline media


@app.command("export")
def export(
    to: Annotated[Path, typer.Option("--to", help="Empty directory on the removable medium.")],
    label: Annotated[str, typer.Option("--label", help="The medium's label (inventory key).")],
    repo: RepoOption = None,
    snapshot: Annotated[
        list[str] | None, typer.Option("--snapshot", help="Only these snapshots (repeatable).")
    ] = None,
    onsite: Annotated[bool, typer.Option(help="The medium stays on site.")] = False,
    kind: Annotated[str, typer.Option(help="Media type (3-2-1-1-0).")] = "removable",
) -> None:
    """Write a self-contained, verifiable offline copy and add it to the media inventory."""
    from hdsvault.backup.service import export_to_media

    with backup_service() as svc, progress_bar(f"export {label}") as update:
        result = _guard(
            lambda: export_to_media(
                svc,
                repo,
                to,
                label,
                snapshots=snapshot,
                offsite=not onsite,
                kind=kind,
                progress=update,
            )
        )
    console.print(
        f"[green]✓[/] {label}: {len(result.snapshots)} snapshots, {result.objects} objects, "
        f"{result.bytes / 1e6:.1f} MB written to {to}; verify it with "
        f"`hdsvault backup media verify {label} --path {to}`"
    )


@media_app.command("list")
def media_list(json_out: JsonOption = False) -> None:
    """The inventory of offline media."""
    from hdsvault.backup.inventory import MediaInventory

    with opened_platform() as platform:
        media = MediaInventory(platform.engine).list()
    if json_out:
        emit_json(dumps([m.to_json() for m in media]))
        return
    table = Table(title="Offline media")
    for col in ("label", "kind", "path", "snapshots", "written at", "last verified", "result"):
        table.add_column(col)
    for m in media:
        table.add_row(
            m.label,
            m.kind,
            m.path,
            str(len(m.snapshots)),
            m.written_at.isoformat(timespec="seconds"),
            m.last_verified_at.isoformat(timespec="seconds") if m.last_verified_at else "never",
            m.last_result,
        )
    console.print(table)


@media_app.command("verify")
def media_verify(
    label: Annotated[str, typer.Argument(help="The medium's label.")],
    path: Annotated[Path, typer.Option("--path", help="Where the medium is mounted.")],
    escrow: Annotated[bool, typer.Option(help="Open with the escrow passphrase.")] = False,
    passphrase_file: Annotated[Path | None, typer.Option(help="Escrow passphrase file.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Read back an offline copy entirely; record the result in the inventory."""
    from hdsvault.backup.service import verify_media

    passphrase = read_passphrase(passphrase_file, confirm=False) if escrow else None
    with backup_service() as svc, progress_bar(f"verify {label}", not json_out) as update:
        check = _guard(
            lambda: verify_media(svc, label, path, passphrase=passphrase, progress=update)
        )
    if json_out:
        emit_json(
            dumps(
                {
                    "label": label,
                    "ok": check.ok,
                    "problems": check.problems,
                    "snapshots": check.snapshots,
                }
            )
        )
    elif check.ok:
        console.print(f"[green]✓[/] {label}: {len(check.snapshots)} snapshots verified")
    else:
        for p in check.problems:
            console.print(f"[bold red]✗[/] {p}", highlight=False)
    if not check.ok:
        raise typer.Exit(1)


@escrow_app.command("add")
def escrow_add(
    repo: RepoOption = None,
    passphrase_file: Annotated[Path | None, typer.Option(help="Read the passphrase here.")] = None,
) -> None:
    """Wrap the repository key with a passphrase too, so another site can open it."""
    passphrase = read_passphrase(passphrase_file, confirm=True)
    if len(passphrase) < 12:
        fail("an escrow passphrase needs at least 12 characters")
    with backup_service() as svc:
        name = _guard(lambda: svc.add_escrow(repo, passphrase))
    console.print(f"[green]✓[/] escrow key {name}: keep the passphrase in the PRA envelope")


# --------------------------------------------------------------------------- status, daemon


@app.command("status")
def status(json_out: JsonOption = False) -> None:
    """The 3-2-1-1-0 status: copies, media, off-site, immutable/offline, verification errors."""
    from hdsvault.backup.service import protection_status, public_key_b64

    with backup_service() as svc:
        st = protection_status(svc)
        signer = public_key_b64(svc.signing_key().public_key())
    if json_out:
        doc = st.to_json()
        doc["signer_public_key"] = signer
        emit_json(dumps(doc))
    else:
        table = Table(title=f"3-2-1-1-0: {st.label}")
        for col in (
            "copy",
            "kind",
            "media",
            "off-site",
            "immutable",
            "offline",
            "snapshots",
            "last verified",
            "ok",
        ):
            table.add_column(col)
        for c in st.copies:
            table.add_row(
                c.name,
                c.kind,
                c.media,
                _yn(c.offsite),
                _yn(c.immutable),
                _yn(c.offline),
                str(c.snapshots) if c.kind != "production" else "-",
                c.last_verified or ("-" if c.kind == "production" else "never"),
                "-" if c.last_ok is None else _yn(c.last_ok),
            )
        console.print(table)
        for rule, holds in st.rules.items():
            console.print(f"{'[green]✓' if holds else '[bold red]✗'}[/] {rule}")
        for problem in st.verification_errors:
            console.print(f"  [yellow]{problem}[/]")
        console.print(f"snapshot signer: {signer}")
    if not st.ok:
        raise typer.Exit(1)


def _yn(value: bool) -> str:
    return "yes" if value else "no"


@app.command("daemon")
def daemon(
    once: Annotated[bool, typer.Option(help="One cycle, then exit (tests, cron).")] = False,
) -> None:
    """Run scheduled backups (backup.schedule), sample verification, retention, maintenance."""
    from hdsvault.backup.schedule import Schedule

    with backup_service() as svc:
        text = svc.settings.backup.schedule
        if text is None and not once:
            fail("no backup.schedule configured (e.g. 'daily 02:30' or 'every 6h')")
        schedule = Schedule.parse(text or "every 1d")
        last: datetime | None = None
        while True:
            due = schedule.next_run(last)
            wait = (due - datetime.now(UTC)).total_seconds()
            if wait > 0 and not once:
                time.sleep(min(wait, 60))
                continue
            last = datetime.now(UTC)
            _cycle(svc)
            if once:
                return


def _cycle(svc: BackupService) -> None:
    cfg = svc.settings.backup
    for r in cfg.repositories:
        try:
            result = svc.run(r.name)
            err_console.print(
                f"{r.name}: snapshot {result.snapshot.id[:12]} seq {result.snapshot.seq}"
            )
            if cfg.verify_sample_percent:
                report = svc.verify(r.name, read_data=cfg.verify_sample_percent / 100)
                err_console.print(f"{r.name}: verify {'ok' if report.ok else 'FAILED'}")
            if cfg.keep:
                svc.forget(r.name, parse_policy(cfg.keep))
            svc.maintain(r.name)
        except BackupError as exc:
            err_console.print(f"[bold red]{r.name}:[/] {exc}")


def _json(doc: Any) -> str:
    return json.dumps(doc, default=str)
