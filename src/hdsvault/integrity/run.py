"""Run every check of :mod:`hdsvault.integrity` and journal the verdict."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hdsvault.integrity.blob_hashes import check_blobs
from hdsvault.integrity.report import ComponentReport, Finding, IntegrityReport
from hdsvault.integrity.sealed_data import check_sealed
from hdsvault.journal import service as journal
from hdsvault.journal.entry import Outcome, Severity
from hdsvault.platform import Platform

Progress = Callable[[str, int, int], None]
"""``progress(component, done, total)``."""


def verify_platform(
    platform: Platform,
    *,
    actor: str,
    backups: bool = False,
    config_file: Path | None = None,
    progress: Progress | None = None,
) -> IntegrityReport:
    """Check sealed data, blobs, the journal and (``backups``) every backup repository."""

    def step(name: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(name, done, total)) if progress else None

    components = [
        _timed(lambda: check_sealed(platform, step("sealed"))),
        _timed(lambda: check_blobs(platform, step("blobs"))),
        _timed(lambda: _check_journal(platform, step("journal"))),
    ]
    if backups:
        components.append(_timed(lambda: _check_backups(platform, actor, config_file, step)))
    report = IntegrityReport(components)
    _journal_verdict(platform, actor, report)
    return report


def _timed(check: Callable[[], ComponentReport]) -> ComponentReport:
    start = time.perf_counter()
    report = check()
    report.seconds = time.perf_counter() - start
    return report


def _check_journal(
    platform: Platform, progress: Callable[[int, int], None] | None
) -> ComponentReport:
    report = ComponentReport("journal (Merkle tree, signed checkpoints)")
    result = journal.verify(platform, progress=(lambda n: progress(n, 0)) if progress else None)
    for log in result.logs:
        report.checked += log.entries
        report.findings += [
            Finding(
                f"log {p.log_id}" + ("" if p.index is None else f" index {p.index}"),
                f"{p.kind}: {p.message}",
            )
            for p in log.problems
        ]
    report.note = f"{len(result.logs)} logs"
    return report


def _check_backups(
    platform: Platform,
    actor: str,
    config_file: Path | None,
    step: Callable[[str], Callable[[int, int], None] | None],
) -> ComponentReport:
    from hdsvault.backup.service import BackupService

    report = ComponentReport("backups (manifests, packs)")
    repositories = platform.settings.backup.repositories
    if not repositories:
        report.note = "no [[backup.repositories]] configured"
        return report
    service = BackupService(platform, actor, config_file=config_file)
    for cfg in repositories:
        result = service.verify(cfg.name, read_data=True, progress=step(f"backup {cfg.name}"))
        report.checked += result.packs_checked
        report.findings += [
            Finding(f"repository {cfg.name}: {p.subject}", f"{p.kind}: {p.detail}")
            for p in result.problems
            if p.is_error
        ]
    report.note = f"{len(repositories)} repositories, every pack read"
    return report


def _journal_verdict(platform: Platform, actor: str, report: IntegrityReport) -> None:
    bad = sum(len(c.findings) for c in report.components)
    with platform.engine.begin() as conn:
        journal.record(
            conn,
            journal.admin_entry(
                "platform.verify",
                actor,
                objects=tuple(
                    f"Checked/{c.name.split(' ')[0]}/{c.checked}" for c in report.components
                )
                + ((f"Findings/{bad}",) if bad else ()),
                outcome=Outcome.SUCCESS if report.ok else Outcome.SERIOUS_FAILURE,
                severity=Severity.NOTICE if report.ok else Severity.ALERT,
            ),
        )
