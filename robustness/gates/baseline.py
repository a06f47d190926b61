"""Baselines: the stored figures of earlier runs, and the regressions against them.

:class:`Baseline` is one JSON file mapping gate names to their figures. A figure that
dropped by more than its ``max_drop`` is a :class:`Regression`; a session's regressions
are reported together as one :class:`RobustnessRegression`, which fails the session.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.gates.errors import GateConfigError
from robustness.gates.threshold import TOL, figure_records

if TYPE_CHECKING:
    from robustness.gates.gate import GateResult


@dataclass(frozen=True)
class Regression:
    """A figure that dropped from the baseline by more than ``max_drop``."""

    gate: str
    attack: str  # an attack label, or WORST
    eps: float
    baseline: float
    robust_accuracy: float
    ci_low: float
    ci_high: float
    drop: float  # baseline - robust_accuracy (per sample: (lost - gained) / n)
    max_drop: float
    rule: str
    note: str = ""
    compared: str = "point estimates"  # how: point estimates, or paired per sample
    norm: str = ""

    def message(self) -> str:
        """One line: which figure dropped, from what to what, by how much, judged how."""
        where = f"{self.norm} eps" if self.norm else "eps"
        text = (f"{self.gate}: {self.attack} robust accuracy at {where} {self.eps:g} dropped "
                f"from {self.baseline:.3f} (baseline) to {self.robust_accuracy:.3f} "
                f"[{self.ci_low:.3f}, {self.ci_high:.3f}]; drop {self.drop:.3f} exceeds "
                f"max_drop {self.max_drop:.3f}, {self.compared} (rule '{self.rule}')")
        return f"{text}; {self.note}" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return dataclasses.asdict(self)


class RobustnessRegression(Exception):
    """One or more gates got less robust than their stored baseline.

    Named like pytest-benchmark's ``PerformanceRegression``: it fails the session.
    """

    __module__ = "robustness.gates"  # the name tracebacks print, as users import it

    def __init__(self, regressions: Sequence[Regression], baseline: str | os.PathLike[str]):
        self.regressions = list(regressions)
        self.baseline = str(baseline)
        lines = [f"{len(self.regressions)} robustness regression(s) against the baseline "
                 f"{self.baseline}:"]
        lines += [f"  - {r.message()}" for r in self.regressions]
        super().__init__("\n".join(lines))


BASELINE_FORMAT = "robustness-baseline"
BASELINE_VERSION = 1


@dataclass(frozen=True)
class BaselineEntry:
    """One gate's stored figures."""

    figures: tuple[dict[str, Any], ...]
    setup: dict[str, Any]
    updated: str

    def get(self, attack: str, eps: float, norm: str = "") -> float | None:
        """Stored robust accuracy of ``attack`` (or :data:`WORST`) at ``eps`` in ``norm``
        (figures stored without a norm match any)."""
        for f in self.figures:
            if f.get("attack") == attack and abs(float(f.get("eps", math.nan)) - eps) < TOL \
                    and (not norm or f.get("norm", norm) in (norm, "")):
                return float(f["robust_accuracy"])
        return None

    def samples(self, attack: str, eps: float, norm: str = "") -> list[bool] | None:
        """Stored per-sample outcomes of that figure (None if the baseline has none)."""
        for f in self.figures:
            if f.get("attack") == attack and abs(float(f.get("eps", math.nan)) - eps) < TOL \
                    and (not norm or f.get("norm", norm) in (norm, "")):
                bits = f.get("robust_samples")
                # Only outcomes that agree with the stored figure (not a hand-edited one).
                if isinstance(bits, str) and bits and set(bits) <= {"0", "1"} and abs(
                        bits.count("1") / len(bits) - float(f["robust_accuracy"])) < 1e-9:
                    return [c == "1" for c in bits]
        return None

    def setup_note(self, setup: Mapping[str, Any]) -> str:
        """Say what differs when the baseline was recorded with another setup."""
        diffs = [f"{k} {self.setup.get(k)!r} -> {setup.get(k)!r}" for k in setup
                 if k in self.setup and self.setup.get(k) != setup.get(k)]
        return ("baseline recorded with a different setup (" + ", ".join(diffs) + "); "
                "re-record it with --update-baseline if intended") if diffs else ""


class Baseline:
    """Figures of earlier runs, keyed by gate name, stored as one JSON file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.exists = self.path.exists()
        self._gates: dict[str, dict[str, Any]] = {}
        if self.exists:
            self._gates = _read_baseline(self.path)

    def entry(self, name: str) -> BaselineEntry | None:
        """The stored figures of gate ``name``, if any."""
        raw = self._gates.get(name)
        if raw is None:
            return None
        return BaselineEntry(tuple(raw.get("figures", ())), dict(raw.get("setup", {})),
                             str(raw.get("updated", "")))

    def __contains__(self, name: object) -> bool:
        return name in self._gates

    def record(self, result: GateResult) -> None:
        """Store ``result``'s figures as gate ``result.gate.name``'s baseline."""
        if result.report is None:
            return
        self._gates[result.gate.name] = {
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "setup": result.gate.setup(),
            "clean_accuracy": result.report.clean_accuracy,
            "figures": figure_records(result.report, samples=True),
        }

    def save(self) -> Path:
        """Write the file atomically (other gates' entries are kept)."""
        from robustness.core.io import write_json

        self.exists = True
        return write_json(self.path, {"format": BASELINE_FORMAT, "version": BASELINE_VERSION,
                                      "gates": dict(sorted(self._gates.items()))})


def _read_baseline(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GateConfigError(f"The baseline file {path} cannot be read as JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise GateConfigError(f"The baseline file {path} is not a robustness baseline (expected "
                              f"a JSON object with \"format\": \"{BASELINE_FORMAT}\"); write it "
                              f"with --robustness-update-baseline / --update-baseline.")
    if data.get("version") != BASELINE_VERSION:
        raise GateConfigError(f"The baseline file {path} has version {data.get('version')!r}; "
                              f"this harness reads version {BASELINE_VERSION}.")
    gates = data.get("gates")
    if not isinstance(gates, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("figures"), list) for v in gates.values()):
        raise GateConfigError(f"The baseline file {path} must map gate names to objects with a "
                              f"'figures' list under \"gates\".")
    return gates


__all__ = [
    "BASELINE_FORMAT",
    "BASELINE_VERSION",
    "Baseline",
    "BaselineEntry",
    "Regression",
    "RobustnessRegression",
]
