"""The result of a gate or A/B comparison: one ``Row`` per rule and series, with its verdict. Computed by
``decisions.gate.judge`` and ``decisions.ab``, rendered by ``reports.gate_render``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_CONFIDENCE = 0.95
VERDICTS = ("pass", "improvement", "not significant", "regression", "no data")


@dataclass
class Row:
    """One rule applied to one series. ``change`` and ``ci`` are fractions for % / pp rules, else µs or /s."""

    rule: str
    metric: str
    series: str
    unit: str
    baseline: float | None
    current: float | None
    change: float | None
    ci: tuple[float, float] | None
    verdict: str
    method: str
    note: str = ""


@dataclass
class GateResult:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    confidence: float = DEFAULT_CONFIDENCE
    title: str = "Latency gate"

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "result": "regression" if self.regressions else "pass",
            "exit_code": self.exit_code,
            "confidence": self.confidence,
            "rows": [asdict(r) for r in self.rows],
            "notes": list(self.notes),
        }
