"""Thresholds on a :class:`~robustness.evaluation.report.RobustnessReport`, and their verdicts.

:class:`Threshold` is one criterion: "the robust accuracy at eps, for one attack or the
per-sample worst case across attacks, is at least X" and/or "it dropped by at most Y from
a baseline". ``report >= threshold`` returns a :class:`Verdict`, which is truthy when the
threshold holds and explains itself (:meth:`Verdict.explain`). :func:`figure_of` picks
the :class:`Figure` a threshold looks at.

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

Every verdict names the rule it used. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from robustness.core.validation import check_choice, check_float, invalid
from robustness.gates.errors import GateConfigError

if TYPE_CHECKING:
    from robustness.evaluation.report import AttackResult, RobustnessReport

RULES: dict[str, str] = {
    "upper": "fail only when even the upper bound of the 95% Wilson CI is below the threshold",
    "point": "fail when the point estimate is below the threshold",
}
DEFAULT_RULE = "upper"
WORST = "worst case"  # how the per-sample worst case across attacks is labelled
TOL = 1e-12  # float slack in comparisons: 0.6 measured as 300/500 meets 0.6


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
        if abs(e - eps) < TOL:
            return e
    raise GateConfigError(
        f"The 'eps' parameter of Threshold must be a budget the report evaluated "
        f"({', '.join(map(_fmt_eps, have))}). Got {eps:g} instead.")


def _resolve_attack(report: RobustnessReport, attack: str, eps: float) -> AttackResult:
    """The result for ``attack`` at ``eps``: exact label, or a unique name before '('."""
    rows = [r for r in report.results if abs(r.eps - eps) < TOL]
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
            criteria.append(Criterion("robust_accuracy", stat >= self.robust_accuracy - TOL,
                                      self.robust_accuracy, stat))
        if self.max_drop is not None:
            base = self.baseline if baseline is None else baseline
            value = _baseline_value(base, fig)
            if value is None:
                criteria.append(Criterion("max_drop", True, self.max_drop, 0.0, checked=False))
            else:
                drop = value - stat
                criteria.append(Criterion("max_drop", drop <= self.max_drop + TOL,
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
                if rule == "upper" and f.robust_accuracy < c.required - TOL:
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
    rows = [r for r in report.results if abs(r.eps - eps) < TOL]
    return min(rows, key=lambda r: r.robust_accuracy) if rows else None


def figure_records(report: RobustnessReport) -> list[dict[str, Any]]:
    """Every attack x eps and the worst case per eps, as baseline/JSON records."""
    rows = [(WORST, w.eps, w.robust_accuracy, w.ci_low, w.ci_high, w.n)
            for w in report.worst_case]
    rows += [(r.attack, r.eps, r.robust_accuracy, r.ci_low, r.ci_high, r.n)
             for r in report.results]
    keys = ("attack", "eps", "robust_accuracy", "ci_low", "ci_high", "n")
    return [dict(zip(keys, row, strict=True)) for row in rows]


__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "TOL",
    "WORST",
    "Criterion",
    "Figure",
    "Threshold",
    "Verdict",
    "figure_of",
    "figure_records",
    "worst_attack",
]
