"""Retention keeps what the policy says, prune frees space, and locked objects stay."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backupkit import write_tree

from hdsvault.backup import (
    BackupError,
    BackupRepository,
    LocalRepository,
    ObjectLockedError,
    RetentionPolicy,
    Snapshot,
)
from hdsvault.backup.config import format_time
from hdsvault.backup.forget import plan_forget
from hdsvault.backup.manifest import Manifest


def _fake(seq: int, when: datetime) -> Snapshot:
    m = Manifest(
        kind="snapshot",
        repository="r",
        config="c",
        seq=seq,
        parent=None,
        time=format_time(when),
        host="h",
    )
    return Snapshot(f"{seq:064x}", m)


def test_daily_monthly_yearly_policy() -> None:
    start = datetime(2023, 1, 1, 2, 0, tzinfo=UTC)
    # two snapshots a day (02:00 and 14:00) for 800 days
    snaps = [_fake(i, start + timedelta(hours=12 * i)) for i in range(1600)]
    plan = plan_forget(snaps, RetentionPolicy(keep_daily=7, keep_monthly=12, keep_yearly=3))
    kept = {s.seq: reasons for s, reasons in plan.keep}
    newest = snaps[-1]
    assert "daily" in kept[newest.seq] and "monthly" in kept[newest.seq]
    daily = sorted(s.datetime.date() for s, r in plan.keep if "daily" in r)
    assert len(daily) == 7 and len(set(daily)) == 7  # newest of each of the last 7 days
    assert all(s.datetime.hour == 14 for s, r in plan.keep if "daily" in r)
    monthly = {(s.datetime.year, s.datetime.month) for s, r in plan.keep if "monthly" in r}
    assert len(monthly) == 12
    yearly = sorted(s.datetime.year for s, r in plan.keep if "yearly" in r)
    assert yearly == [2023, 2024, 2025]
    assert len(plan.keep) + len(plan.remove) == 1600
    assert len(plan.keep) < 7 + 12 + 3


def test_empty_policy_is_refused() -> None:
    with pytest.raises(BackupError, match="empty policy"):
        plan_forget([_fake(1, datetime.now(UTC))], RetentionPolicy())


def test_forget_and_prune_keep_the_repository_valid(repo: BackupRepository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    snaps = [repo.backup([src])]
    for i in range(2):
        (src / f"gen{i}.bin").write_bytes(os.urandom(120_000))  # unique data per snapshot
        snaps.append(repo.backup([src]))
    os.remove(src / "gen0.bin")
    os.remove(src / "gen1.bin")
    snaps.append(repo.backup([src]))
    before = len(repo.backend.list("data"))

    result = repo.forget(RetentionPolicy(keep_last=1))
    assert sorted(result.removed) == sorted(s.id for s in snaps[:3])
    assert [s.id for s in repo.snapshots()] == [snaps[3].id]
    report = repo.verify(last_seen_seq=4)
    assert report.ok, report.summary()  # the forget record keeps the chain checkable
    assert report.latest_seq == 5

    pruned = repo.prune()
    assert pruned.packs_deleted and pruned.bytes_freed > 200_000
    assert len(repo.backend.list("data")) == before - len(pruned.packs_deleted)
    report = repo.verify(read_data=True, last_seen_seq=5)
    assert report.ok, report.summary()
    repo.restore(snaps[3].id, tmp_path / "out")
    assert not (tmp_path / "out/src/gen0.bin").exists()
    assert repo.prune().packs_deleted == []  # idempotent


class LockedBackend(LocalRepository):
    """A backend where every object under some prefixes is immutable (retention)."""

    attempts: list[str]
    locked: tuple[str, ...] = ("data/", "snapshots/")

    def is_locked(self, name: str) -> bool:
        return name.startswith(self.locked)

    def delete(self, name: str) -> None:
        if self.is_locked(name):
            self.attempts.append(name)  # the engine must never even try
        super().delete(name)


def test_locked_objects_are_never_deleted(make_repo: object, tmp_path: Path) -> None:
    backend = LockedBackend(tmp_path / "worm", durable=False)
    backend.attempts = []
    repo: BackupRepository = make_repo(backend=backend)  # type: ignore[operator]
    src = tmp_path / "src"
    write_tree(src)
    first = repo.backup([src])
    (src / "notes/small.json").unlink()
    (src / "imaging").rename(tmp_path / "moved-away")
    repo.backup([src])
    packs = repo.backend.list("data")

    forgotten = repo.forget(RetentionPolicy(keep_last=1))
    assert forgotten.locked == [first.id] and forgotten.removed == []
    assert forgotten.record is None
    backend.locked = ("data/",)  # manifests' retention expired, packs' not yet
    forgotten = repo.forget(RetentionPolicy(keep_last=1))
    assert forgotten.removed == [first.id]
    result = repo.prune()
    assert result.packs_deleted == [] and result.packs_locked
    assert repo.backend.list("data") == packs
    assert backend.attempts == []
    with pytest.raises(ObjectLockedError):
        backend.delete(packs[0])
