"""Robustness gates: thresholds on a :class:`~robustness.evaluation.report.RobustnessReport` for CI.

Shared by the pytest plugin (:mod:`robustness.pytest_plugin`) and ``robustness gate``
(:mod:`robustness.gate_cli`).

* :class:`Threshold` is one criterion: "the robust accuracy at eps, for one attack or
  the per-sample worst case across attacks, is at least X" and/or "it dropped by at most
  Y from a baseline". ``report >= threshold`` returns a :class:`Verdict`, which is truthy
  when the threshold holds and explains itself (:meth:`Verdict.explain`).
* :class:`Gate` is a named, configured evaluation: model, data, attack budget, eps,
  sample size, seed and thresholds. :meth:`Gate.run` refuses to judge robustness when the
  configuration is wrong (no model, no trained model, data of the wrong shape): that is a
  :class:`GateConfigError`, never a robustness failure.
* :class:`Baseline` is the stored figures of earlier runs; a drop beyond ``max_drop`` is a
  :class:`Regression`, and a session's regressions are reported together as one
  :class:`RobustnessRegression`.

Statistical rule
----------------
A measured robust accuracy is an estimate from ``n`` samples, reported with its 95%
Wilson interval. A threshold compares one statistic with the required value:

``rule="upper"`` (the default)
    fail only when even the upper bound of the 95% interval is below the threshold,
    i.e. when the data show the model is below it. Small samples do not cause flaky
    failures, but a model slightly below the threshold can pass.
``rule="point"``
    fail when the point estimate is below the threshold: stricter, and noisier on
    small samples.

Every verdict names the rule it used.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.core.stats import wilson_interval
from robustness.core.validation import (
    ParameterError,
    check_choice,
    check_float,
    check_int,
    did_you_mean,
    invalid,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from robustness.checkpoint import CheckpointMeta
    from robustness.data import Dataset
    from robustness.evaluation.report import AttackResult, RobustnessReport

RULES: dict[str, str] = {
    "upper": "fail only when even the upper bound of the 95% Wilson CI is below the threshold",
    "point": "fail when the point estimate is below the threshold",
}
DEFAULT_RULE = "upper"
WORST = "worst case"  # how the per-sample worst case across attacks is labelled
_TOL = 1e-12  # float slack in comparisons: 0.6 measured as 300/500 meets 0.6


class GateConfigError(ParameterError):
    """A gate is misconfigured: bad keys, no model, an untrained model, mismatched data.

    Raised instead of a robustness verdict, so a broken setup never reads as "the model
    got less robust".
    """


class GateFailure(AssertionError):
    """A gate's threshold failed; the message is the verdict's full explanation."""


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
    statistic: float  # what was compared under ``rule``
    drop: float  # baseline - statistic
    max_drop: float
    rule: str
    note: str = ""

    def message(self) -> str:
        """One line: which figure dropped, from what to what, by how much."""
        which = "upper CI bound" if self.rule == "upper" else "point estimate"
        text = (f"{self.gate}: {self.attack} robust accuracy at eps {self.eps:g} dropped from "
                f"{self.baseline:.3f} (baseline) to {self.robust_accuracy:.3f} "
                f"[{self.ci_low:.3f}, {self.ci_high:.3f}]; drop {self.drop:.3f} by the {which} "
                f"exceeds max_drop {self.max_drop:.3f} (rule '{self.rule}')")
        return f"{text}; {self.note}" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return dataclasses.asdict(self)


class RobustnessRegression(Exception):
    """One or more gates got less robust than their stored baseline.

    Named like pytest-benchmark's ``PerformanceRegression``: it fails the session.
    """

    def __init__(self, regressions: Sequence[Regression], baseline: str | os.PathLike[str]):
        self.regressions = list(regressions)
        self.baseline = str(baseline)
        lines = [f"{len(self.regressions)} robustness regression(s) against the baseline "
                 f"{self.baseline}:"]
        lines += [f"  - {r.message()}" for r in self.regressions]
        super().__init__("\n".join(lines))


# -- thresholds and verdicts ----------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """The measured robust accuracy a threshold looks at: one attack, or the worst case."""

    attack: str  # an attack label, or WORST
    eps: float
    robust_accuracy: float
    ci_low: float
    ci_high: float
    n: int

    def statistic(self, rule: str) -> float:
        """The value compared with a threshold under ``rule``."""
        return self.ci_high if rule == "upper" else self.robust_accuracy


@dataclass(frozen=True)
class Criterion:
    """One comparison a verdict made."""

    name: str  # "robust_accuracy" (a minimum) or "max_drop" (versus a baseline)
    passed: bool
    required: float  # the minimum, or the largest allowed drop
    statistic: float  # the measured value under the rule, or the measured drop
    baseline: float | None = None
    checked: bool = True  # False: max_drop without a baseline to compare with

    @property
    def shortfall(self) -> float:
        """By how much it failed (0 when it passed)."""
        if self.passed:
            return 0.0
        return self.required - self.statistic if self.name == "robust_accuracy" \
            else self.statistic - self.required


def _fmt_eps(eps: float) -> str:
    return f"{eps:g}"


def _resolve_eps(report: RobustnessReport, eps: float | None) -> float:
    have = report.eps_values
    if eps is None:
        if len(have) == 1:
            return have[0]
        raise GateConfigError(
            f"The 'eps' parameter of Threshold must be given when the report has several "
            f"budgets ({', '.join(map(_fmt_eps, have))}). Got None instead.")
    for e in have:
        if abs(e - eps) < _TOL:
            return e
    raise GateConfigError(
        f"The 'eps' parameter of Threshold must be a budget the report evaluated "
        f"({', '.join(map(_fmt_eps, have))}). Got {eps:g} instead.")


def _resolve_attack(report: RobustnessReport, attack: str, eps: float) -> AttackResult:
    """The result for ``attack`` at ``eps``: exact label, or a unique name before '('."""
    rows = [r for r in report.results if abs(r.eps - eps) < _TOL]
    exact = [r for r in rows if r.attack == attack]
    if exact:
        return exact[0]
    by_name = [r for r in rows if r.attack.split("(", 1)[0].strip() == attack]
    if len(by_name) == 1:
        return by_name[0]
    labels = ", ".join(repr(r.attack) for r in rows)
    hint = "a unique attack name or label" if by_name else "an attack the report evaluated"
    raise GateConfigError(f"The 'attack' parameter of Threshold must be {hint} at eps "
                          f"{eps:g} ({labels}), or None for the worst case. Got {attack!r} "
                          f"instead.")


def figure_of(report: RobustnessReport, eps: float | None = None,
              attack: str | None = None) -> Figure:
    """The robust accuracy of ``attack`` (None: per-sample worst case) at ``eps``.

    Parameters
    ----------
    report
        An evaluation result.
    eps
        A budget the report evaluated; None if it evaluated only one.
    attack
        An attack label (``"pgd(steps=10)"``), a unique attack name (``"pgd"``), or None
        for the worst case across every attack.

    Returns
    -------
    Figure
    """
    e = _resolve_eps(report, eps)
    if attack is None:
        w = report.worst(e)
        return Figure(WORST, e, w.robust_accuracy, w.ci_low, w.ci_high, w.n)
    r = _resolve_attack(report, attack, e)
    return Figure(r.attack, e, r.robust_accuracy, r.ci_low, r.ci_high, r.n)


@dataclass(frozen=True)
class Threshold:
    """A minimum robust accuracy and/or a maximum drop from a baseline, at one eps.

    Parameters
    ----------
    robust_accuracy
        The minimum robust accuracy, in [0, 1].
    eps
        The budget it applies at. None: the report's only budget.
    attack
        An attack label or unique name in the report; None (default) means the
        per-sample worst case across every attack, the honest figure.
    max_drop
        The largest allowed drop from ``baseline``, in [0, 1].
    baseline
        What ``max_drop`` compares with: a robust accuracy, or a stored
        :class:`~robustness.evaluation.report.RobustnessReport` (its matching figure is used).
    rule
        ``"upper"`` (default; fail only when even the 95% CI upper bound is below) or
        ``"point"`` (fail when the point estimate is below). See the module docstring.

    Examples
    --------
    >>> assert report >= Threshold(robust_accuracy=0.6, eps=0.1)  # doctest: +SKIP
    """

    robust_accuracy: float | None = None
    eps: float | None = None
    attack: str | None = None
    max_drop: float | None = None
    baseline: float | RobustnessReport | None = field(default=None, repr=False, compare=False)
    rule: str = DEFAULT_RULE

    def __post_init__(self) -> None:
        owner = "Threshold"
        if self.robust_accuracy is not None:
            check_float(owner, "robust_accuracy", self.robust_accuracy, low=0.0, high=1.0)
        if self.eps is not None:
            check_float(owner, "eps", self.eps, low=0.0)
        if self.attack is not None and (not isinstance(self.attack, str)
                                        or not self.attack.strip()):
            raise invalid(owner, "attack", "an attack label such as 'pgd', or None for the "
                          "worst case across attacks", self.attack)
        if self.max_drop is not None:
            check_float(owner, "max_drop", self.max_drop, low=0.0, high=1.0)
        if self.baseline is not None and not isinstance(self.baseline, float | int):
            from robustness.evaluation.report import RobustnessReport

            if not isinstance(self.baseline, RobustnessReport):
                raise invalid(owner, "baseline", "a robust accuracy or a RobustnessReport",
                              type(self.baseline).__name__, raw=True)
        elif self.baseline is not None:
            check_float(owner, "baseline", self.baseline, low=0.0, high=1.0)
        check_choice(owner, "rule", self.rule, tuple(RULES))
        if self.robust_accuracy is None and self.max_drop is None:
            raise invalid(owner, "robust_accuracy", "given (or max_drop with a baseline): a "
                          "threshold needs something to check", None)

    def describe(self) -> str:
        """``robust_accuracy >= 0.600 at eps 0.1 (worst case)``, for messages."""
        parts = []
        if self.robust_accuracy is not None:
            parts.append(f"robust_accuracy >= {self.robust_accuracy:.3f}")
        if self.max_drop is not None:
            parts.append(f"max_drop {self.max_drop:.3f}")
        where = f" at eps {self.eps:g}" if self.eps is not None else ""
        return f"{' and '.join(parts)}{where} ({self.attack or WORST})"

    def check(self, report: RobustnessReport,
              baseline: float | RobustnessReport | None = None) -> Verdict:
        """Judge ``report``.

        Parameters
        ----------
        report
            The evaluation to judge.
        baseline
            Overrides :attr:`baseline` for the ``max_drop`` check. Without any baseline
            the drop check is recorded as not checked.

        Returns
        -------
        Verdict
            Truthy when every checked criterion holds.
        """
        fig = figure_of(report, self.eps, self.attack)
        stat = fig.statistic(self.rule)
        criteria = []
        if self.robust_accuracy is not None:
            criteria.append(Criterion("robust_accuracy", stat >= self.robust_accuracy - _TOL,
                                      self.robust_accuracy, stat))
        if self.max_drop is not None:
            base = self.baseline if baseline is None else baseline
            value = _baseline_value(base, fig)
            if value is None:
                criteria.append(Criterion("max_drop", True, self.max_drop, 0.0, checked=False))
            else:
                drop = value - stat
                criteria.append(Criterion("max_drop", drop <= self.max_drop + _TOL,
                                          self.max_drop, drop, baseline=value))
        return Verdict(threshold=self, figure=fig, criteria=tuple(criteria), report=report)

    def __le__(self, other: object) -> Verdict:
        # ``report >= threshold``: RobustnessReport defines no ordering, so Python falls
        # back to this reflected method.
        from robustness.evaluation.report import RobustnessReport

        if not isinstance(other, RobustnessReport):
            return NotImplemented
        if self.max_drop is not None and self.baseline is None:
            raise GateConfigError(
                "The 'baseline' parameter of Threshold must be given with max_drop (a robust "
                "accuracy or a stored RobustnessReport) in `report >= Threshold(...)`. Got "
                "None instead.")
        return self.check(other)


def _baseline_value(base: float | RobustnessReport | None, fig: Figure) -> float | None:
    if base is None:
        return None
    if isinstance(base, int | float):
        return float(base)
    attack = None if fig.attack == WORST else fig.attack
    try:
        return figure_of(base, fig.eps, attack).robust_accuracy
    except GateConfigError as e:
        raise GateConfigError(f"The baseline report has no matching figure: {e}") from None


@dataclass(frozen=True)
class Verdict:
    """The outcome of a :class:`Threshold` on a report: truthy when it holds."""

    threshold: Threshold
    figure: Figure
    criteria: tuple[Criterion, ...]
    report: RobustnessReport = field(repr=False, compare=False)

    @property
    def passed(self) -> bool:
        """Every checked criterion holds."""
        return all(c.passed for c in self.criteria)

    @property
    def below_minimum(self) -> bool:
        """The minimum robust accuracy failed."""
        return any(not c.passed for c in self.criteria if c.name == "robust_accuracy")

    @property
    def regressed(self) -> bool:
        """The drop from the baseline exceeded ``max_drop``."""
        return any(not c.passed for c in self.criteria if c.name == "max_drop")

    def __bool__(self) -> bool:
        return self.passed

    @property
    def rule_text(self) -> str:
        """``rule 'upper': fail only when ...``."""
        return f"rule '{self.threshold.rule}': {RULES[self.threshold.rule]}"

    def _criterion_line(self, c: Criterion) -> str:
        f, rule = self.figure, self.threshold.rule
        stat_name = "95% CI upper bound" if rule == "upper" else "point estimate"
        if c.name == "robust_accuracy":
            if c.passed:
                line = (f"threshold robust_accuracy >= {c.required:.3f} passed: {stat_name} "
                        f"{c.statistic:.3f} >= {c.required:.3f}")
                if rule == "upper" and f.robust_accuracy < c.required - _TOL:
                    line += (f" (the point estimate {f.robust_accuracy:.3f} is below it: the "
                             f"sample cannot show the model is below the threshold; use "
                             f"rule 'point' or a larger n for a stricter gate)")
                return line
            return (f"threshold robust_accuracy >= {c.required:.3f} failed by "
                    f"{c.shortfall:.3f}: {stat_name} {c.statistic:.3f} < {c.required:.3f}")
        if not c.checked:
            return f"threshold max_drop {c.required:.3f} not checked: no baseline figure"
        verb = "passed" if c.passed else f"failed by {c.shortfall:.3f}"
        return (f"threshold max_drop {c.required:.3f} {verb}: baseline {c.baseline:.3f}, drop "
                f"{c.statistic:.3f} by the {stat_name}")

    def explain(self, title: str | None = None) -> str:
        """Why it passed or failed: figures, rule, the worst attack, the full table.

        Parameters
        ----------
        title
            First line; default ``"Robustness threshold PASSED/FAILED: ..."``.
        """
        f, r = self.figure, self.report
        outcome = "PASSED" if self.passed else "FAILED"
        attacks = ", ".join(r.provenance.get("attacks", [])) or \
            ", ".join(dict.fromkeys(x.attack for x in r.results))
        subject = f"worst case over {attacks}" if f.attack == WORST else f"attack {f.attack}"
        lines = [title or f"Robustness threshold {outcome}: {self.threshold.describe()}"]
        lines += [f"  {self._criterion_line(c)}" for c in self.criteria]
        lines.append(f"  measured: robust accuracy {f.robust_accuracy:.3f}, 95% CI "
                     f"[{f.ci_low:.3f}, {f.ci_high:.3f}] at eps {f.eps:g} ({subject}); n = "
                     f"{f.n}; clean accuracy {r.clean_accuracy:.3f}")
        lines.append(f"  {self.rule_text}")
        worst = worst_attack(r, f.eps)
        if worst is not None:
            broke = r.worst(f.eps).broken_by.get(worst.attack)
            lines.append(f"  worst attack at eps {f.eps:g}: {worst.attack} (robust accuracy "
                         f"{worst.robust_accuracy:.3f} [{worst.ci_low:.3f}, {worst.ci_high:.3f}]"
                         f", success rate {worst.success_rate:.3f}"
                         + (f", broke {broke} samples no earlier attack broke" if broke else "")
                         + ")")
        lines += ["", r.table(), ""]
        problems = r.problems("warning")
        if problems:
            lines.append("Sanity checks (do not trust the figures until resolved):")
            lines += [f"  [{p.severity}] {p.check}: {p.message}" for p in problems]
        else:
            lines.append("Sanity checks: no warnings.")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line, e.g. ``worst case @ eps 0.1: 0.562 [0.518, 0.605]: upper 0.605 >= 0.400``."""
        f, rule = self.figure, self.threshold.rule
        parts = []
        for c in self.criteria:
            if c.name == "robust_accuracy":
                parts.append(f"{rule} {c.statistic:.3f} >= {c.required:.3f}" if c.passed else
                             f"{rule} {c.statistic:.3f} < {c.required:.3f}, failed by "
                             f"{c.shortfall:.3f}")
            elif c.checked:
                parts.append(f"drop {c.statistic:+.3f} from baseline {c.baseline:.3f} "
                             + ("<=" if c.passed else ">") + f" max_drop {c.required:.3f}")
        return (f"{f.attack} @ eps {f.eps:g}: {f.robust_accuracy:.3f} [{f.ci_low:.3f}, "
                f"{f.ci_high:.3f}]: {', '.join(parts)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of the threshold, the figure and every criterion."""
        t = self.threshold
        return {
            "passed": self.passed,
            "rule": t.rule,
            "rule_text": RULES[t.rule],
            "threshold": {"robust_accuracy": t.robust_accuracy, "eps": self.figure.eps,
                          "attack": t.attack, "max_drop": t.max_drop},
            "figure": dataclasses.asdict(self.figure),
            "criteria": [dataclasses.asdict(c) | {"shortfall": c.shortfall}
                         for c in self.criteria],
        }


def worst_attack(report: RobustnessReport, eps: float) -> AttackResult | None:
    """The single attack with the lowest robust accuracy at ``eps`` (first on ties)."""
    rows = [r for r in report.results if abs(r.eps - eps) < _TOL]
    return min(rows, key=lambda r: r.robust_accuracy) if rows else None


# -- budgets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """A named attack preset with a default sample size."""

    name: str
    attacks: tuple[str, ...]
    n: int
    description: str


BUDGETS: dict[str, Budget] = {
    "fast": Budget("fast", ("fgsm", "pgd(steps=10)"), 500,
                   "FGSM + 10-step PGD on 500 test images: every push, well under a minute"),
    "standard": Budget("standard", ("fgsm", "pgd(steps=40,restarts=2)", "genetic(generations=100)"),
                       1000, "FGSM + 40-step PGD with 2 restarts + a gradient-free genetic "
                             "attack (a gradient-masking cross-check) on 1000 images: nightly "
                             "or before a release, minutes per eps"),
}
DEFAULT_BUDGET = "fast"


# -- gates ----------------------------------------------------------------------------------

GATE_KEYS: dict[str, str] = {
    "name": "gate id (baseline key); default: the test id / required in TOML",
    "model": "checkpoint path (relative to the project root / the TOML file) or nn.Module",
    "data": "dataset name ('mnist', 'digits', 'idx:DIR', 'PATH.npz'); default: the "
            "checkpoint's dataset",
    "attacks": "attack specs run in order, e.g. ['fgsm', 'pgd(steps=20)']; default: the "
               "budget's",
    "budget": f"attack preset: {', '.join(BUDGETS)}",
    "n": "number of test images; default: the budget's",
    "seed": "seed of the attacks",
    "eps": "the budget the threshold applies at (a float)",
    "robust_accuracy": "minimum robust accuracy in [0, 1]",
    "attack": "the attack the threshold applies to; default: worst case across attacks",
    "max_drop": "largest allowed drop from the baseline",
    "rule": f"statistical rule: {', '.join(RULES)}",
    "thresholds": "further thresholds: Threshold objects or tables with eps, "
                  "robust_accuracy, attack, max_drop, rule",
}
_THRESHOLD_KEYS = ("eps", "robust_accuracy", "attack", "max_drop", "rule")


@dataclass(frozen=True)
class GateDefaults:
    """Settings a gate inherits unless it sets its own (command-line options, TOML defaults)."""

    budget: str = DEFAULT_BUDGET
    n: int | None = None
    seed: int = 0
    rule: str = DEFAULT_RULE
    max_drop: float = 0.0  # tolerance of the baseline comparison when a threshold has none


@dataclass(frozen=True)
class Gate:
    """A named robustness requirement: what to evaluate and what it must reach.

    Build one with :func:`gate_from_mapping` (validates user input) or directly.

    Attributes
    ----------
    name
        Identifies the gate in reports and in the baseline file.
    thresholds
        What the evaluation must reach; their eps values are the budgets evaluated.
    model
        A checkpoint path or an ``nn.Module``; None if given to :meth:`run` instead.
    data
        A dataset name, a Dataset, an ``(x, y)`` pair, or None (the checkpoint's dataset).
    attacks
        Attack specs; None uses the budget's.
    budget, n, seed
        Attack preset, sample size (None: the budget's) and seed.
    tolerance
        ``max_drop`` for the baseline comparison of thresholds that set none.
    """

    name: str
    thresholds: tuple[Threshold, ...]
    model: Any = None
    data: Any = None
    attacks: tuple[str, ...] | None = None
    budget: str = DEFAULT_BUDGET
    n: int | None = None
    seed: int = 0
    tolerance: float = 0.0

    @property
    def eps(self) -> list[float]:
        """The budgets evaluated: every threshold's eps."""
        return sorted({float(t.eps) for t in self.thresholds if t.eps is not None})

    @property
    def attack_specs(self) -> tuple[str, ...]:
        """The attacks run: the gate's own, else the budget's."""
        return self.attacks if self.attacks is not None else BUDGETS[self.budget].attacks

    @property
    def sample_size(self) -> int:
        """Images evaluated (at most; a smaller test split is used whole)."""
        return self.n if self.n is not None else BUDGETS[self.budget].n

    def prepare(self, model: Any = None, data: Any = None, *,
                resources: Resources | None = None) -> PreparedGate:
        """Resolve the model and data and check they make sense together.

        Parameters
        ----------
        model, data
            Override :attr:`model` / :attr:`data`.
        resources
            A cache of loaded checkpoints and datasets shared across gates.

        Raises
        ------
        GateConfigError
            No model, an unreadable checkpoint, unknown data, data whose images do not
            fit the model, labels outside its classes, or a model that looks untrained.
        """
        return _prepare(self, self.model if model is None else model,
                        self.data if data is None else data, resources or Resources())

    def evaluate(self, prepared: PreparedGate, *, baseline: Baseline | None = None,
                 echo: Any = None) -> GateResult:
        """Run the attacks on a prepared gate and judge every threshold.

        Parameters
        ----------
        prepared
            From :meth:`prepare`.
        baseline
            Stored figures; thresholds are compared with this gate's entry, using their
            ``max_drop`` or :attr:`tolerance`.
        echo
            Progress callback, one line per attack (see :func:`robustness.evaluate`).

        Returns
        -------
        GateResult
        """
        from robustness.evaluation import evaluate

        started = time.perf_counter()
        try:
            report = evaluate(prepared.model, prepared.data, list(self.attack_specs), self.eps,
                              n=len(prepared.x), seed=self.seed, checks=True,
                              model_info=prepared.model_info, echo=echo)
        except ParameterError as e:
            raise self._error(str(e)) from None
        # A threshold's minimum is judged here; its max_drop only against the baseline file,
        # where a failure is a regression (reported per session), not a failed minimum.
        verdicts = [dataclasses.replace(t, max_drop=None).check(report)
                    for t in self.thresholds if t.robust_accuracy is not None]
        entry = baseline.entry(self.name) if baseline is not None else None
        regressions = []
        for t in self.thresholds:
            if entry is None:
                break
            fig = figure_of(report, t.eps, t.attack)
            stored = entry.get(fig.attack, fig.eps)
            if stored is None:
                continue
            max_drop = t.max_drop if t.max_drop is not None else self.tolerance
            drop = dataclasses.replace(t, robust_accuracy=None, max_drop=max_drop) \
                .check(report, baseline=stored).criteria[0]
            if not drop.passed:
                regressions.append(Regression(
                    self.name, fig.attack, fig.eps, stored, fig.robust_accuracy, fig.ci_low,
                    fig.ci_high, fig.statistic(t.rule), drop.statistic, max_drop, t.rule,
                    note=entry.setup_note(self.setup())))
        return GateResult(gate=self, report=report, verdicts=verdicts, regressions=regressions,
                          seconds=time.perf_counter() - started, compared=entry is not None)

    def run(self, model: Any = None, data: Any = None, *, baseline: Baseline | None = None,
            resources: Resources | None = None, echo: Any = None) -> GateResult:
        """:meth:`prepare` then :meth:`evaluate`."""
        return self.evaluate(self.prepare(model, data, resources=resources), baseline=baseline,
                             echo=echo)

    def setup(self) -> dict[str, Any]:
        """What the figures depend on; stored with a baseline to spot incomparable runs."""
        return {"attacks": list(self.attack_specs), "n": self.sample_size, "seed": self.seed,
                "budget": self.budget if self.attacks is None else None,
                "data": self.data if isinstance(self.data, str) else None}

    def _error(self, message: str) -> GateConfigError:
        return GateConfigError(f"Robustness gate '{self.name}' is misconfigured: {message}")


@dataclass(frozen=True, eq=False)
class PreparedGate:
    """A gate's model and its data sample, checked to fit each other."""

    model: nn.Module
    data: Dataset | tuple[torch.Tensor, torch.Tensor]  # what evaluate() is given
    x: torch.Tensor  # (n, C, H, W): the sample evaluated, the first n test images
    y: torch.Tensor  # (n,)
    model_info: dict[str, Any]


class Resources:
    """Loads checkpoints and datasets once for several gates (they are never mutated)."""

    def __init__(self) -> None:
        self._checkpoints: dict[Path, tuple[nn.Module, CheckpointMeta]] = {}
        self._datasets: dict[tuple[str, int], Dataset] = {}

    def checkpoint(self, path: Path) -> tuple[nn.Module, CheckpointMeta]:
        """``load_checkpoint(path)``, cached."""
        from robustness.checkpoint import load_checkpoint, resolve_path

        key = resolve_path(path).resolve()
        if key not in self._checkpoints:
            self._checkpoints[key] = load_checkpoint(key)
        return self._checkpoints[key]

    def dataset(self, name: str, seed: int) -> Dataset:
        """``load_dataset(name, seed=seed)``, cached."""
        from robustness.data import load_dataset

        if (name, seed) not in self._datasets:
            self._datasets[(name, seed)] = load_dataset(name, seed=seed)
        return self._datasets[(name, seed)]


def _same_dataset(name: str, trained_on: str) -> bool:
    if name.strip().lower() == trained_on.strip().lower():
        return True
    key = name.strip()
    if key.lower().startswith("idx:"):
        key = "idx:" + str(Path(key[4:]).expanduser().resolve())
    elif key.lower().endswith(".npz"):
        key = str(Path(key).expanduser().resolve())
    return key == trained_on


def _prepare(gate: Gate, model: Any, data: Any, resources: Resources) -> PreparedGate:
    import torch
    from torch import nn

    from robustness.checkpoint import CheckpointError
    from robustness.data import Dataset, DatasetNotFoundError

    meta = None
    if model is None:
        raise gate._error("no model was given. Name a trained checkpoint (model='run/model."
                          "safetensors', written by `robustness train --out run`) or pass a "
                          "trained torch.nn.Module.")
    model_info: dict[str, Any] = {}
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        try:
            model, meta = resources.checkpoint(path)
        except CheckpointError as e:
            raise gate._error(f"the model is not a usable trained checkpoint: {e}") from None
        model_info = {"checkpoint": str(path), **meta.to_dict()}
    elif not isinstance(model, nn.Module):
        raise gate._error(str(invalid("Gate", "model", "a checkpoint path or a trained "
                                      "torch.nn.Module", type(model).__name__, raw=True)))

    if data is None:
        if meta is None or not meta.dataset:
            raise gate._error("no data was given, and the model is not a checkpoint that names "
                              "its dataset. Give data='mnist' (or another dataset name) or a "
                              "Dataset.")
        data = meta.dataset
    if isinstance(data, str):
        # The held-out split of the dataset the checkpoint was trained on is the one its
        # training seed made; any other seed would mix training images into the test.
        seed = meta.seed if meta is not None and meta.seed is not None and \
            _same_dataset(data, meta.dataset) else 0
        try:
            data = resources.dataset(data, seed)
        except (DatasetNotFoundError, ParameterError) as e:
            raise gate._error(f"the data cannot be loaded: {e}") from None
    if isinstance(data, Dataset):
        x, y = data.x_test, data.y_test
    elif isinstance(data, tuple | list) and len(data) == 2 and \
            all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        data = (x, y)
    else:
        raise gate._error(str(invalid("Gate", "data", "a dataset name, a Dataset or an (x, y) "
                                      "pair of tensors", type(data).__name__, raw=True)))
    x, y = x[:gate.sample_size], y[:gate.sample_size]
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or not len(x):
        raise gate._error(f"the data must be images (N, C, H, W) with labels (N,); got x of "
                          f"shape {tuple(x.shape)} and y of shape {tuple(y.shape)}.")
    shape = tuple(int(d) for d in x.shape[1:])
    if meta is not None:
        if shape != tuple(meta.input_shape):
            raise gate._error(f"the data does not match the model: its images have shape "
                              f"{shape} but the checkpoint expects {tuple(meta.input_shape)} "
                              f"(trained on {meta.dataset or 'unknown data'}).")
        if int(y.max()) >= meta.num_classes:
            raise gate._error(f"the data has labels up to {int(y.max())} but the model has "
                              f"{meta.num_classes} classes.")
    _check_trained(gate, model, x, y, shape)
    return PreparedGate(model=model, data=data, x=x, y=y, model_info=model_info)


def _check_trained(gate: Gate, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   shape: tuple[int, ...]) -> None:
    """Refuse a model no better than always answering the most frequent class.

    Its robust accuracy would be near zero for reasons that have nothing to do with
    robustness; the gate would report a misleading "robustness failure".
    """
    from robustness.core.modes import predict

    try:
        logits = predict(model, x)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise gate._error(f"the model cannot process the data's images of shape {shape}: "
                          f"{first}") from None
    if logits.dim() != 2 or logits.shape[0] != len(x):
        raise gate._error(f"the model must map images (N, C, H, W) to logits (N, K); for "
                          f"{len(x)} images it returned shape {tuple(logits.shape)}.")
    if int(y.max()) >= logits.shape[1]:
        raise gate._error(f"the data has labels up to {int(y.max())} but the model has "
                          f"{logits.shape[1]} outputs.")
    n = len(y)
    correct = int((logits.argmax(1) == y).sum())
    majority = int(y.bincount().max()) / n
    low, _ = wilson_interval(correct, n)
    if low <= majority:
        raise gate._error(
            f"the model looks untrained: clean accuracy {correct / n:.3f} on {n} images (95% "
            f"CI lower bound {low:.3f}) is no better than always predicting the most frequent "
            f"class ({majority:.3f}). Train it first (`robustness train ... --out DIR`) or "
            f"point the gate at the trained checkpoint; a robustness verdict on it would be "
            f"meaningless.")


@dataclass
class GateResult:
    """A gate's evaluation: the report, a verdict per threshold, regressions, or an error."""

    gate: Gate
    report: RobustnessReport | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    compared: bool = False  # the baseline had an entry for this gate

    @property
    def status(self) -> str:
        """``"error"``, ``"failed"`` (a minimum), ``"regressed"`` (baseline) or ``"passed"``."""
        if self.error is not None:
            return "error"
        if any(not v.passed for v in self.verdicts):
            return "failed"
        if self.regressions:
            return "regressed"
        return "passed"

    @property
    def failed_verdicts(self) -> list[Verdict]:
        """Verdicts whose threshold failed."""
        return [v for v in self.verdicts if not v.passed]

    def explain(self) -> str:
        """Every failing verdict explained (or the error); empty if it passed."""
        if self.error is not None:
            return self.error
        parts = [v.explain(f"Robustness gate '{self.gate.name}' FAILED: threshold "
                           f"{v.threshold.describe()}") for v in self.failed_verdicts]
        parts += [r.message() for r in self.regressions]
        return "\n\n".join(parts)

    def summary(self) -> str:
        """One line with the gate's figures (or its error)."""
        if self.error is not None:
            prefix = f"Robustness gate '{self.gate.name}' is misconfigured: "
            return f"configuration error: {self.error.removeprefix(prefix)}"
        parts = [v.summary() for v in self.verdicts]
        if not parts and self.report is not None:
            figs = [figure_of(self.report, t.eps, t.attack) for t in self.gate.thresholds]
            parts = [f"{f.attack} @ eps {f.eps:g}: {f.robust_accuracy:.3f} [{f.ci_low:.3f}, "
                     f"{f.ci_high:.3f}]" for f in figs]
        parts += [f"REGRESSED {r.attack} @ eps {r.eps:g}: {r.baseline:.3f} -> "
                  f"{r.robust_accuracy:.3f} (max_drop {r.max_drop:.3f})"
                  for r in self.regressions]
        n = f"n={self.report.n_samples}, clean {self.report.clean_accuracy:.3f}, " \
            if self.report is not None else ""
        return f"{'; '.join(parts)} ({n}{self.seconds:.1f} s)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: setup, status, figures, verdicts, regressions, full report."""
        figures = _figures(self.report) if self.report is not None else []
        return {
            "name": self.gate.name,
            "status": self.status,
            "error": self.error,
            "seconds": self.seconds,
            "setup": self.gate.setup(),
            "eps": self.gate.eps,
            "clean_accuracy": self.report.clean_accuracy if self.report else None,
            "n": self.report.n_samples if self.report else None,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "regressions": [r.to_dict() for r in self.regressions],
            "compared_with_baseline": self.compared,
            "figures": figures,
            "findings": [dataclasses.asdict(f) for f in self.report.findings]
            if self.report else [],
            "report": self.report.to_dict() if self.report else None,
        }


def _figures(report: RobustnessReport) -> list[dict[str, Any]]:
    """Every attack x eps and the worst case per eps, as baseline/JSON records."""
    out = [{"attack": w_attack, "eps": e, "robust_accuracy": ra, "ci_low": lo, "ci_high": hi,
            "n": n} for w_attack, e, ra, lo, hi, n in
           [(WORST, w.eps, w.robust_accuracy, w.ci_low, w.ci_high, w.n)
            for w in report.worst_case]
           + [(r.attack, r.eps, r.robust_accuracy, r.ci_low, r.ci_high, r.n)
              for r in report.results]]
    return out


def error_result(gate: Gate, error: Exception) -> GateResult:
    """A :class:`GateResult` for a gate that could not be evaluated."""
    return GateResult(gate=gate, error=str(error))


# -- building gates from user input ---------------------------------------------------------


def unknown_key(owner: str, key: str, known: Iterable[str]) -> GateConfigError:
    """The error for a key ``owner`` does not know, suggesting the closest known one."""
    known = list(known)
    hint = did_you_mean(key, known, n=1)
    return GateConfigError(f"{owner} got an unknown key '{key}'{hint}. Known keys: "
                           f"{', '.join(known)}.")


def _resolve_path(value: str, base_dir: Path) -> Path:
    p = Path(os.path.expandvars(value)).expanduser()
    return p if p.is_absolute() else base_dir / p


def _resolve_data(value: str, base_dir: Path) -> str:
    key = value.strip()
    if key.lower().startswith("idx:"):
        return "idx:" + str(_resolve_path(key[4:].strip(), base_dir))
    if key.lower().endswith(".npz"):
        return str(_resolve_path(key, base_dir))
    return key


def _threshold(owner: str, values: Mapping[str, Any], defaults: GateDefaults,
               *, regression_only_ok: bool) -> Threshold:
    eps = values.get("eps")
    if eps is None:
        raise invalid(owner, "eps", "a float: the budget the threshold applies at", None)
    if isinstance(eps, list | tuple):
        raise invalid(owner, "eps", "a single float (give further budgets as separate "
                      "thresholds)", eps)
    eps = check_float(owner, "eps", eps, low=0.0)
    ra = values.get("robust_accuracy")
    if ra is not None:
        ra = check_float(owner, "robust_accuracy", ra, low=0.0, high=1.0)
    max_drop = values.get("max_drop")
    if max_drop is not None:
        max_drop = check_float(owner, "max_drop", max_drop, low=0.0, high=1.0)
    if ra is None and max_drop is None:
        if not regression_only_ok:
            raise invalid(owner, "robust_accuracy", "given (or max_drop): a threshold needs "
                          "something to check", None)
        max_drop = defaults.max_drop  # record figures; compare with the baseline only
    attack = values.get("attack")
    if attack is not None and (not isinstance(attack, str) or not attack.strip()):
        raise invalid(owner, "attack", "an attack label such as 'pgd', or absent for the worst "
                      "case across attacks", attack)
    rule = check_choice(owner, "rule", values.get("rule", defaults.rule), tuple(RULES))
    return Threshold(robust_accuracy=ra, eps=eps, attack=attack, max_drop=max_drop, rule=rule)


def _attack_list(owner: str, value: Any) -> tuple[str, ...]:
    from attacks.registry import parse_attack_specs

    if isinstance(value, str):
        specs = parse_attack_specs(value)
    elif isinstance(value, list | tuple) and value and all(isinstance(v, str) and v.strip()
                                                           for v in value):
        specs = [v.strip() for v in value]
    else:
        raise invalid(owner, "attacks", "a non-empty list of attack specs such as ['fgsm', "
                      "'pgd(steps=20)'] or one comma-separated string", value)
    if len(set(specs)) != len(specs):
        raise invalid(owner, "attacks", "a list without duplicates", specs)
    return tuple(specs)


def check_attack_specs(owner: str, specs: Sequence[str], eps: float) -> None:
    """Build every attack once so a typo fails at configuration time, before any work.

    Uses the same parsing and construction as :func:`robustness.evaluate`.
    """
    from attacks.registry import parse_attack_spec

    for spec in specs:
        try:
            parsed = parse_attack_spec(spec)
            parsed.build(eps if parsed.bounded() else None)
        except ParameterError as e:
            raise GateConfigError(f"{owner}: attack {spec!r} is invalid: {e}") from None


def gate_from_mapping(values: Mapping[str, Any], *, owner: str, default_name: str | None,
                      defaults: GateDefaults, base_dir: Path) -> Gate:
    """Validate user gate settings (a pytest marker's kwargs, a TOML table) into a :class:`Gate`.

    Parameters
    ----------
    values
        Keys of :data:`GATE_KEYS`.
    owner
        How to name the source in messages, e.g. ``"@pytest.mark.robustness on test_x"``.
    default_name
        The gate's name when ``values`` has none; None makes ``name`` required.
    defaults
        Inherited settings.
    base_dir
        Relative checkpoint and data paths are resolved against it.

    Returns
    -------
    Gate

    Raises
    ------
    GateConfigError
        Naming the key, what was expected and what was received.
    """
    try:
        return _gate_from_mapping(values, owner, default_name, defaults, base_dir)
    except GateConfigError:
        raise
    except ParameterError as e:
        raise GateConfigError(str(e)) from None


def _gate_from_mapping(values: Mapping[str, Any], owner: str, default_name: str | None,
                       defaults: GateDefaults, base_dir: Path) -> Gate:
    from torch import nn

    for key in values:
        if key not in GATE_KEYS:
            raise unknown_key(owner, key, GATE_KEYS)
    name = values.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise invalid(owner, "name", "a non-empty string identifying the gate", name)

    model = values.get("model")
    if isinstance(model, str | os.PathLike):
        model = _resolve_path(os.fspath(model), base_dir)
    elif model is not None and not isinstance(model, nn.Module):
        raise invalid(owner, "model", "a checkpoint path or a torch.nn.Module",
                      type(model).__name__, raw=True)
    data = values.get("data")
    if isinstance(data, str):
        if not data.strip():
            raise invalid(owner, "data", "a dataset name such as 'mnist'", data)
        data = _resolve_data(data, base_dir)

    budget = check_choice(owner, "budget", values.get("budget", defaults.budget), tuple(BUDGETS))
    n = values.get("n", defaults.n)
    if n is not None:
        n = check_int(owner, "n", n, low=1)
    seed = check_int(owner, "seed", values.get("seed", defaults.seed), low=0)
    attacks = _attack_list(owner, values["attacks"]) if values.get("attacks") is not None \
        else None

    thresholds: list[Threshold] = []
    extra = values.get("thresholds", [])
    if not isinstance(extra, list | tuple):
        raise invalid(owner, "thresholds", "a list of Threshold objects or tables", extra)
    top = {k: values[k] for k in _THRESHOLD_KEYS if k in values and k != "rule"}
    if top or not extra:
        thresholds.append(_threshold(owner, {**top, **({"rule": values["rule"]}
                                                        if "rule" in values else {})},
                                     defaults, regression_only_ok=True))
    elif "rule" in values:
        check_choice(owner, "rule", values["rule"], tuple(RULES))
    for i, t in enumerate(extra):
        where = f"{owner} thresholds[{i}]"
        if isinstance(t, Threshold):
            if t.eps is None:
                raise invalid(where, "eps", "a float: the budget the threshold applies at", None)
            thresholds.append(t)
        elif isinstance(t, Mapping):
            for key in t:
                if key not in _THRESHOLD_KEYS:
                    raise unknown_key(where, key, _THRESHOLD_KEYS)
            inherited = {"rule": values["rule"]} if "rule" in values else {}
            thresholds.append(_threshold(where, {**inherited, **t}, defaults,
                                         regression_only_ok=False))
        else:
            raise invalid(where, "thresholds", "Threshold objects or tables", t)
    gate = Gate(name=name.strip(), thresholds=tuple(thresholds), model=model, data=data,
                attacks=attacks, budget=budget, n=n, seed=seed,
                tolerance=check_float(owner, "max_drop (default)", defaults.max_drop,
                                      low=0.0, high=1.0))
    check_attack_specs(owner, gate.attack_specs, gate.eps[0])
    return gate


# -- baseline -------------------------------------------------------------------------------

BASELINE_FORMAT = "robustness-baseline"
BASELINE_VERSION = 1


@dataclass(frozen=True)
class BaselineEntry:
    """One gate's stored figures."""

    figures: tuple[dict[str, Any], ...]
    setup: dict[str, Any]
    updated: str

    def get(self, attack: str, eps: float) -> float | None:
        """Stored robust accuracy of ``attack`` (or :data:`WORST`) at ``eps``."""
        for f in self.figures:
            if f.get("attack") == attack and abs(float(f.get("eps", math.nan)) - eps) < _TOL:
                return float(f["robust_accuracy"])
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
            "figures": _figures(result.report),
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


# -- the session artifact -------------------------------------------------------------------

RESULTS_FORMAT = "robustness-gates"
RESULTS_VERSION = 1


def results_document(results: Sequence[GateResult], *, baseline: Baseline | None = None,
                     baseline_updated: bool = False, source: str = "") -> dict[str, Any]:
    """The JSON artifact written by the plugin (``--robustness-json``) and ``robustness gate``.

    Parameters
    ----------
    results
        Every gate of the run.
    baseline
        The baseline compared with (or updated), if any.
    baseline_updated
        Whether this run rewrote the baseline.
    source
        What ran the gates (``"pytest"`` or the TOML file's path).

    Returns
    -------
    dict
        ``format``, ``version``, ``created``, ``source``, ``passed``, ``summary`` (counts
        per status), ``baseline``, ``gates`` (:meth:`GateResult.to_dict` each) and
        ``regressions``.
    """
    counts = {s: sum(r.status == s for r in results)
              for s in ("passed", "failed", "regressed", "error")}
    return {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "passed": counts["passed"] == len(results),
        "summary": {"gates": len(results), **counts},
        "baseline": None if baseline is None else {
            "path": str(baseline.path), "exists": baseline.exists, "updated": baseline_updated},
        "gates": [r.to_dict() for r in results],
        "regressions": [g.to_dict() for r in results for g in r.regressions],
    }


__all__ = [
    "BUDGETS",
    "DEFAULT_BUDGET",
    "DEFAULT_RULE",
    "GATE_KEYS",
    "RULES",
    "WORST",
    "Baseline",
    "BaselineEntry",
    "Budget",
    "Criterion",
    "Figure",
    "Gate",
    "GateConfigError",
    "GateDefaults",
    "GateFailure",
    "GateResult",
    "PreparedGate",
    "Regression",
    "Resources",
    "RobustnessRegression",
    "Threshold",
    "Verdict",
    "check_attack_specs",
    "error_result",
    "figure_of",
    "gate_from_mapping",
    "results_document",
    "unknown_key",
    "worst_attack",
]
