"""The 3-2-1-1-0 status: is there a copy ransomware cannot reach, and does it read back?

The rule (Veeam's extension of 3-2-1, taken up by the French CaRE programme):

* **3** copies of the data, production included;
* on **2** different media types;
* **1** copy off-site;
* **1** copy immutable (WORM) or offline (air-gapped);
* **0** errors at the last verification of every copy (and at the last restore drill).

What counts, exactly (``docs/backup.md``): production is one copy on ``disk``. A configured
repository counts once it holds at least one snapshot; its media type is ``disk`` (local,
hardened-local) or ``object-storage`` (s3) unless ``media`` says otherwise; it is off-site if
``offsite`` (default: true for s3); immutable if hardened-local or s3 (Object Lock). An offline
medium of the inventory counts as one copy, of type ``removable`` (its ``kind``), offline, and
off-site unless recorded otherwise. "0" requires a verification of every counted copy within
``backup.verification_max_age_days``, all successful, and the last drill (if any) successful:
a copy never verified is an unknown, not a zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["CopyStatus", "ProtectionStatus", "compute_status"]


@dataclass
class CopyStatus:
    name: str
    kind: str
    media: str
    offsite: bool
    immutable: bool
    offline: bool
    snapshots: int
    latest: str | None
    last_verified: str | None
    last_ok: bool | None
    error: str | None = None

    @property
    def counts(self) -> bool:
        return self.snapshots > 0 and self.error is None


@dataclass
class ProtectionStatus:
    copies: list[CopyStatus] = field(default_factory=list)
    last_drill_ok: bool | None = None
    last_drill_time: str | None = None
    max_age_days: int = 8
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def _counted(self) -> list[CopyStatus]:
        return [c for c in self.copies if c.counts]

    @property
    def n_copies(self) -> int:
        return len(self._counted())

    @property
    def n_media(self) -> int:
        return len({c.media for c in self._counted()})

    @property
    def n_offsite(self) -> int:
        return sum(1 for c in self._counted() if c.offsite)

    @property
    def n_immutable_or_offline(self) -> int:
        return sum(1 for c in self._counted() if c.immutable or c.offline)

    @property
    def verification_errors(self) -> list[str]:
        """Why the "0" does not hold (empty: it holds)."""
        problems: list[str] = []
        limit = self.now - timedelta(days=self.max_age_days)
        for c in self._counted():
            if c.kind == "production":
                continue
            if c.last_verified is None:
                problems.append(f"{c.name}: never verified")
            elif c.last_ok is False:
                problems.append(f"{c.name}: last verification failed ({c.last_verified})")
            elif datetime.fromisoformat(c.last_verified) < limit:
                problems.append(
                    f"{c.name}: last verified {c.last_verified}, over {self.max_age_days} days ago"
                )
        for c in self.copies:
            if c.error is not None:
                problems.append(f"{c.name}: unreachable ({c.error})")
        if self.last_drill_ok is False:
            problems.append(f"last restore drill failed ({self.last_drill_time})")
        return problems

    @property
    def rules(self) -> dict[str, bool]:
        return {
            "3 copies": self.n_copies >= 3,
            "2 media": self.n_media >= 2,
            "1 off-site": self.n_offsite >= 1,
            "1 immutable or offline": self.n_immutable_or_offline >= 1,
            "0 errors": not self.verification_errors,
        }

    @property
    def ok(self) -> bool:
        return all(self.rules.values())

    @property
    def label(self) -> str:
        return (
            f"{self.n_copies}-{self.n_media}-{self.n_offsite}-{self.n_immutable_or_offline}-"
            f"{len(self.verification_errors)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rules": self.rules,
            "counts": {
                "copies": self.n_copies,
                "media": self.n_media,
                "offsite": self.n_offsite,
                "immutable_or_offline": self.n_immutable_or_offline,
                "verification_errors": self.verification_errors,
            },
            "copies": [asdict(c) for c in self.copies],
            "last_drill": {"ok": self.last_drill_ok, "time": self.last_drill_time},
        }


def compute_status(
    copies: list[CopyStatus],
    *,
    last_drill_ok: bool | None,
    last_drill_time: str | None,
    max_age_days: int,
    now: datetime | None = None,
) -> ProtectionStatus:
    production = CopyStatus(
        name="production",
        kind="production",
        media="disk",
        offsite=False,
        immutable=False,
        offline=False,
        snapshots=1,
        latest=None,
        last_verified=None,
        last_ok=None,
    )
    return ProtectionStatus(
        copies=[production, *copies],
        last_drill_ok=last_drill_ok,
        last_drill_time=last_drill_time,
        max_age_days=max_age_days,
        now=now or datetime.now(UTC),
    )
