"""The result of a gate or A/B comparison: one ``Row`` per rule and series, with its verdict. Computed by
``deploybench.decisions.gate.judge`` and ``deploybench.decisions.ab``, rendered by
``deploybench.reports.gate_render``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_CONFIDENCE = 0.95
VERDICTS = ("pass", "improvement", "not significant", "cannot tell", "regression", "no data")
CANNOT_TELL_EXIT = 4  # one run per side, a change beyond a limit: drift between two runs is not estimated


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
    # Significance (None where none can be claimed): the one-sided p-value of a change in the bad direction,
    # the same after Holm's adjustment over every test of the gate call, the standard error and t degrees
    # of freedom on the test scale (log ratio for relative rules, else the difference), and the change
    # (in the rule's terms, like ``change``) that this rule would catch 9 times in 10 at this noise.
    p_value: float | None = None
    p_adjusted: float | None = None
    se: float | None = None
    df: float | None = None
    detectable: float | None = None


@dataclass
class GateResult:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    confidence: float = DEFAULT_CONFIDENCE
    title: str = "Latency gate"
    family: int = 0  # tests in the Holm family (rows with a p-value)

    @property
    def alpha(self) -> float:
        """Family-wise one-sided false-alarm level: 1 - confidence."""
        return round(1.0 - self.confidence, 12)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def cannot_tell(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "cannot tell"]

    @property
    def outcome(self) -> str:
        """The call's answer: a regression, else "cannot tell" (no regression, but a change beyond a limit
        that one run per side cannot judge), else a pass."""
        return "regression" if self.regressions else "cannot tell" if self.cannot_tell else "pass"

    @property
    def exit_code(self) -> int:
        return {"regression": 1, "cannot tell": CANNOT_TELL_EXIT}.get(self.outcome, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "result": self.outcome,
            "exit_code": self.exit_code,
            "confidence": self.confidence,
            "alpha": self.alpha,
            "family": self.family,
            "smallest_adjusted_level": self.alpha / self.family if self.family else None,
            "rows": [asdict(r) for r in self.rows],
            "notes": list(self.notes),
        }
