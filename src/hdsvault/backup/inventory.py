"""The inventory of offline media and the log of verifications (tables ``backup_media``,
``backup_checks``).

Why in the platform database: an offline medium is, by design, not reachable; what the
platform can know about it is what was recorded when it was written and when it was last
plugged in and verified. The 3-2-1-1-0 status reads these rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from hdsvault.db.engine import read_connection
from hdsvault.db.schema import backup_checks, backup_media

__all__ = ["LastCheck", "MediaInventory", "MediaRecord", "last_checks"]


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class MediaRecord:
    label: str
    kind: str
    path: str
    repository_id: str
    snapshots: list[str]
    offsite: bool
    written_at: datetime
    last_verified_at: datetime | None
    last_result: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "path": self.path,
            "repository_id": self.repository_id,
            "snapshots": self.snapshots,
            "offsite": self.offsite,
            "written_at": self.written_at.isoformat(),
            "last_verified_at": self.last_verified_at.isoformat()
            if self.last_verified_at
            else None,
            "last_result": self.last_result,
            "detail": self.detail,
        }


class MediaInventory:
    """Offline media written by ``backup export`` and their last verification."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_export(
        self,
        *,
        label: str,
        path: str,
        repository_id: str,
        snapshots: list[str],
        kind: str = "removable",
        offsite: bool = True,
    ) -> None:
        """Add (or, for a re-used label, replace) a medium: written now, never verified."""
        values = {
            "kind": kind,
            "path": path,
            "repository_id": repository_id,
            "snapshots": json.dumps(snapshots),
            "offsite": offsite,
            "written_at": datetime.now(UTC),
            "last_verified_at": None,
            "last_result": "never",
            "detail": "",
        }
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(backup_media.c.label).where(backup_media.c.label == label)
            ).first()
            if exists:
                conn.execute(
                    update(backup_media).where(backup_media.c.label == label).values(values)
                )
            else:
                conn.execute(insert(backup_media).values(label=label, **values))

    def record_verification(self, label: str, ok: bool, detail: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(backup_media)
                .where(backup_media.c.label == label)
                .values(
                    last_verified_at=datetime.now(UTC),
                    last_result="ok" if ok else "failed",
                    detail=detail[:20000],
                )
            )

    def get(self, label: str) -> MediaRecord | None:
        return next((m for m in self.list() if m.label == label), None)

    def list(self) -> list[MediaRecord]:
        with read_connection(self.engine) as conn:
            rows = conn.execute(select(backup_media).order_by(backup_media.c.written_at)).all()
        return [
            MediaRecord(
                label=r.label,
                kind=r.kind,
                path=r.path,
                repository_id=r.repository_id,
                snapshots=json.loads(r.snapshots),
                offsite=bool(r.offsite),
                written_at=_utc(r.written_at) or datetime.now(UTC),
                last_verified_at=_utc(r.last_verified_at),
                last_result=r.last_result,
                detail=r.detail,
            )
            for r in rows
        ]


@dataclass
class LastCheck:
    target: str
    kind: str
    time: datetime
    ok: bool
    errors: int
    summary: str


def last_checks(engine: Engine) -> dict[str, LastCheck]:
    """The newest verification of every target (``repo:<name>``, ``media:<label>``)."""
    newest = (
        select(backup_checks.c.target, func.max(backup_checks.c.id).label("id"))
        .group_by(backup_checks.c.target)
        .subquery()
    )
    with read_connection(engine) as conn:
        rows = conn.execute(
            select(backup_checks).join(newest, newest.c.id == backup_checks.c.id)
        ).all()
    return {
        r.target: LastCheck(
            r.target, r.kind, _utc(r.time) or datetime.now(UTC), bool(r.ok), r.errors, r.summary
        )
        for r in rows
    }
