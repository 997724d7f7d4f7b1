"""When scheduled backups run: ``backup.schedule`` = ``every <n>m|h|d`` or ``daily HH:MM`` (UTC).

Why so small a grammar rather than cron: a backup schedule is "every N hours" or "every night
at 02:30"; anything cron can say beyond that is a source of silently skipped backups. The
daemon (``hdsvault backup daemon``) computes the next run from the previous one, so a daemon
restarted late runs once at start-up, not once per missed slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Schedule"]

_EVERY = re.compile(r"^every (\d+)(m|h|d)$")
_DAILY = re.compile(r"^daily (\d{2}):(\d{2})$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Schedule:
    interval: timedelta | None = None
    daily_at: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        if m := _EVERY.match(text.strip()):
            n = int(m.group(1))
            if n <= 0:
                raise ValueError("a schedule interval must be positive")
            return cls(interval=timedelta(**{_UNITS[m.group(2)]: n}))
        if m := _DAILY.match(text.strip()):
            hour, minute = int(m.group(1)), int(m.group(2))
            if hour > 23 or minute > 59:
                raise ValueError(f"bad time of day in schedule {text!r}")
            return cls(daily_at=(hour, minute))
        raise ValueError(f"bad schedule {text!r}: use 'every 6h', 'every 30m' or 'daily 02:30'")

    def next_run(self, last: datetime | None, now: datetime | None = None) -> datetime:
        """The next time to run, given the last run (None: never ran -> now)."""
        now = now or datetime.now(UTC)
        if self.interval is not None:
            return now if last is None else max(now, last + self.interval)
        assert self.daily_at is not None
        hour, minute = self.daily_at
        slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if slot > now:
            slot -= timedelta(days=1)  # the most recent slot at or before now
        if last is None or last < slot:
            return now  # never ran, or a slot was missed: run at once
        return slot + timedelta(days=1)
