"""What a verification found, per component, in a shape the CLI renders and journals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One bad item: where it is (table and key, blob key, log index) and what is wrong."""

    where: str
    problem: str


@dataclass
class ComponentReport:
    """One kind of stored data: how many items were checked, what was wrong, what was skipped."""

    name: str
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    skipped: int = 0
    note: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass
class IntegrityReport:
    components: list[ComponentReport]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.components)

    def to_json(self, max_findings: int = 100) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "components": [
                {
                    **{k: v for k, v in asdict(c).items() if k != "findings"},
                    "ok": c.ok,
                    "findings": [asdict(f) for f in c.findings[:max_findings]],
                    "findings_total": len(c.findings),
                }
                for c in self.components
            ],
        }
