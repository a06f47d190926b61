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

Regressions (``max_drop``) compare like with like: the new point estimate with the
baseline's point estimate, never one run's interval bound with the other's point. When
both runs stored per-sample outcomes on the same samples the comparison is **paired**:
the drop is (samples lost - samples gained) / n, and under ``rule="upper"`` a drop above
``max_drop`` fails only if the losses are significant (one-sided exact sign test on the
samples where the runs disagree, p < 0.05), so a retrained model's noise does not fail
CI while a real drop does. Without per-sample outcomes, and under ``rule="point"``, a drop
above ``max_drop`` fails.

Every verdict names the rule it used. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
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
ALPHA = 0.05  # significance of a paired regression under rule "upper"


@dataclass(frozen=True)
class Figure:
    """The measured robust accuracy a threshold looks at: one attack, or the worst case."""

    attack: str  # an attack label, or WORST
    eps: float
    robust_accuracy: float
    ci_low: float
    ci_high: float
    n: int
    norm: str = ""  # the norm eps is measured in

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
    paired: Paired | None = None  # max_drop judged per sample against the baseline

    @property
    def shortfall(self) -> float:
        """By how much it failed (0 when it passed)."""
        if self.passed:
            return 0.0
        return self.required - self.statistic if self.name == "robust_accuracy" \
            else self.statistic - self.required


@dataclass(frozen=True)
class Paired:
    """A per-sample comparison with a baseline run on the same samples."""

    n: int
    lost: int  # robust in the baseline, broken now
    gained: int  # broken in the baseline, robust now
    p_value: float  # one-sided exact sign test: are losses more likely than gains?

    def describe(self) -> str:
        """``paired on the same 100 samples: 9 lost, 0 gained (sign test p = 0.002)``."""
        return (f"paired on the same {self.n} samples: {self.lost} lost, {self.gained} gained "
                f"(one-sided exact sign test p = {self.p_value:.3g})")


def drop_criterion(baseline: float, current: float, max_drop: float, rule: str, *,
                   baseline_mask: list[bool] | None = None,
                   current_mask: list[bool] | None = None) -> Criterion:
    """Judge a drop from ``baseline`` to ``current`` robust accuracy (see the module docs).

    Parameters
    ----------
    baseline, current
        Point estimates of the same figure.
    max_drop
        Largest allowed drop.
    rule
        ``"upper"``: with per-sample outcomes, a drop fails only if it is significant;
        ``"point"``: any drop above ``max_drop`` fails.
    baseline_mask, current_mask
        Per-sample robustness of the two runs on the same samples, when both stored it.

    Returns
    -------
    Criterion
        Named ``"max_drop"``; ``statistic`` is the drop.
    """
    from robustness.core.stats import sign_test  # scipy: not at import time

    paired = None
    drop = baseline - current
    if baseline_mask is not None and current_mask is not None \
            and len(baseline_mask) == len(current_mask) and baseline_mask:
        lost = sum(b and not c for b, c in zip(baseline_mask, current_mask, strict=True))
        gained = sum(c and not b for b, c in zip(baseline_mask, current_mask, strict=True))
        paired = Paired(len(current_mask), lost, gained,
                        sign_test(lost, gained, alternative="greater"))
        drop = (lost - gained) / paired.n
    failed = drop > max_drop + TOL
    if failed and paired is not None and rule == "upper":
        failed = paired.p_value < ALPHA
    return Criterion("max_drop", not failed, max_drop, drop, baseline=baseline, paired=paired)


Z95 = 1.959963984540054  # two-sided 95% normal quantile, as in the Wilson interval


def minimum_n(robust_accuracy: float, rule: str) -> int | None:
    """The smallest sample for which a minimum ``robust_accuracy`` means something.

    Under ``rule="upper"`` a gate fails only when the 95% CI upper bound is below the
    threshold; with too few images even 0 robust out of n keeps the bound above it, and
    the gate can never fail. Under ``rule="point"`` a pass should show the threshold is
    met; with too few images even n robust out of n leaves the lower bound below it.

    Returns
    -------
    int or None
        The minimum n (1 when any n works), or None when no n can (``"point"`` at 1.0).
    """
    t = robust_accuracy
    z2 = Z95 * Z95
    if rule == "upper":
        # Wilson upper bound at 0 successes: z^2 / (n + z^2) < t. A threshold of 0 always
        # holds, at any n.
        return 1 if t <= 0 else int(z2 * (1 - t) / t) + 1
    # Wilson lower bound at n successes: n / (n + z^2) >= t.
    if t >= 1.0:
        return None
    return max(1, math.ceil(z2 * t / (1 - t) - 1e-9))


def resolution(n: int, robust_accuracy: float) -> float:
    """Half-width of the 95% Wilson interval at ``robust_accuracy`` for ``n`` images."""
    from robustness.core.stats import wilson_interval  # scipy: not at import time

    low, high = wilson_interval(round(robust_accuracy * n), n)
    return (high - low) / 2


def sample_size_problem(n: int, robust_accuracy: float, rule: str) -> str | None:
    """Why ``n`` images cannot support a minimum ``robust_accuracy`` under ``rule`` (or None)."""
    need = minimum_n(robust_accuracy, rule)
    t = f"{robust_accuracy:.2f}" if round(robust_accuracy, 2) == robust_accuracy \
        else f"{robust_accuracy:g}"
    if need is None:
        return (f"no sample can show robust accuracy >= {t} at 95% confidence under rule "
                f"'point' (the interval's lower bound never reaches 1); use a lower "
                f"threshold or rule 'upper'")
    if n >= need:
        return None
    if rule == "upper":
        why = (f"even with every image broken, the 95% CI upper bound would be "
               f"{Z95 ** 2 / (n + Z95 ** 2):.3f}, so the gate could never fail")
    else:
        why = (f"even with every image robust, the 95% CI lower bound would be "
               f"{n / (n + Z95 ** 2):.3f}, so a pass would not show it")
    return (f"n = {n} cannot show robust accuracy >= {t} at 95% confidence under rule "
            f"'{rule}' ({why}): need at least n = {need}")


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
              attack: str | None = None, norm: str | None = None) -> Figure:
    """The robust accuracy of ``attack`` (None: per-sample worst case) at ``eps``.

    Parameters
    ----------
    report
        An evaluation result.
    eps
        A budget the report evaluated; None if it evaluated only one.
    attack
        An attack label (``"pgd(steps=10)"``), a unique attack name (``"pgd"``), or None
        for the worst case across every attack of ``norm``.
    norm
        ``"linf"`` or ``"l2"``: whose worst case, when the report evaluated attacks in
        several norms at ``eps`` (a budget in one norm says nothing about another).

    Returns
    -------
    Figure
    """
    e = _resolve_eps(report, eps)
    if attack is None:
        norms = report.norms_at(e)
        if norm is None and len(norms) > 1:
            raise GateConfigError(
                f"The 'norm' parameter of Threshold must be given for the worst case at eps "
                f"{e:g}: the report has attacks in several norms there ({', '.join(norms)}), "
                f"and budgets in different norms are different threat models. Got None "
                f"instead.")
        if norm is not None and norm not in norms:
            raise GateConfigError(
                f"The 'norm' parameter of Threshold must be a norm the report evaluated at "
                f"eps {e:g} ({', '.join(norms)}). Got {norm!r} instead.")
        w = report.worst(e, norm if norm is not None else None)
        return Figure(WORST, e, w.robust_accuracy, w.ci_low, w.ci_high, w.n, w.norm)
    r = _resolve_attack(report, attack, e)
    if norm is not None and r.norm != norm:
        raise GateConfigError(f"The 'norm' parameter of Threshold must match attack "
                              f"{r.attack!r}, which is {r.norm}. Got {norm!r} instead.")
    return Figure(r.attack, e, r.robust_accuracy, r.ci_low, r.ci_high, r.n, r.norm)


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
    norm
        ``"linf"`` or ``"l2"``: the norm ``eps`` is in. Needed for the worst case only
        when the report has attacks in several norms at ``eps``.

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
    norm: str | None = None

    def __post_init__(self) -> None:
        owner = "Threshold"
        if self.norm is not None:
            check_choice(owner, "norm", self.norm, ("linf", "l2", "none"))
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
        where = f" at {self.norm + ' ' if self.norm else ''}eps {self.eps:g}" \
            if self.eps is not None else ""
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
        fig = figure_of(report, self.eps, self.attack, self.norm)
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
                masks = _paired_masks(base, report, fig)
                criteria.append(drop_criterion(
                    value, fig.robust_accuracy, self.max_drop, self.rule,
                    baseline_mask=masks[0], current_mask=masks[1]))
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
        return figure_of(base, fig.eps, attack, fig.norm or None).robust_accuracy
    except GateConfigError as e:
        raise GateConfigError(f"The baseline report has no matching figure: {e}") from None


def _paired_masks(base: object, report: RobustnessReport, fig: Figure
                  ) -> tuple[list[bool] | None, list[bool] | None]:
    """Per-sample outcomes of the figure in both reports, if they describe the same samples."""
    from robustness.evaluation.report import RobustnessReport

    if not isinstance(base, RobustnessReport) or base.n_samples != report.n_samples:
        return None, None
    if base.provenance.get("dataset") != report.provenance.get("dataset"):
        return None, None
    attack = WORST if fig.attack == WORST else fig.attack
    try:
        return (base.robust_mask(attack, fig.eps, fig.norm or None),
                report.robust_mask(attack, fig.eps, fig.norm or None))
    except KeyError:  # a report written before per-sample outcomes were stored
        return None, None


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
        return drop_line(c)

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
        worst = worst_attack(r, f.eps, f.norm or None)
        if worst is not None:
            broke = r.worst(f.eps, worst.norm).broken_by.get(worst.attack)
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
                          "norm": self.figure.norm, "attack": t.attack,
                          "max_drop": t.max_drop},
            "figure": dataclasses.asdict(self.figure),
            "criteria": [dataclasses.asdict(c) | {"shortfall": c.shortfall}
                         for c in self.criteria],
        }


def drop_line(c: Criterion) -> str:
    """How a ``max_drop`` criterion was judged, in one line."""
    verb = "passed" if c.passed else f"failed by {c.shortfall:.3f}"
    how = c.paired.describe() if c.paired is not None else \
        "point estimates (no per-sample outcomes to pair)"
    line = (f"threshold max_drop {c.required:.3f} {verb}: baseline {c.baseline:.3f}, drop "
            f"{c.statistic:.3f}, {how}")
    if c.passed and c.paired is not None and c.statistic > c.required + TOL:
        line += f"; not significant at {ALPHA:g}, so within noise under rule 'upper'"
    return line


def worst_attack(report: RobustnessReport, eps: float,
                 norm: str | None = None) -> AttackResult | None:
    """The single attack (of ``norm``, if given) with the lowest robust accuracy at ``eps``
    (first on ties)."""
    rows = [r for r in report.results if abs(r.eps - eps) < TOL
            and (norm is None or r.norm == norm)]
    return min(rows, key=lambda r: r.robust_accuracy) if rows else None


def figure_records(report: RobustnessReport, *, samples: bool = False) -> list[dict[str, Any]]:
    """Every attack x eps and the worst case per (norm, eps), as baseline/JSON records.

    With ``samples`` each record also carries its per-sample outcomes (``robust_samples``,
    "1" robust / "0" not, in data order), which baselines store for paired comparisons.
    """
    rows = [(WORST, w.eps, w.norm, w.robust_accuracy, w.ci_low, w.ci_high, w.n,
             w.robust_samples) for w in report.worst_case]
    rows += [(r.attack, r.eps, r.norm, r.robust_accuracy, r.ci_low, r.ci_high, r.n,
              r.robust_samples) for r in report.results]
    keys = ("attack", "eps", "norm", "robust_accuracy", "ci_low", "ci_high", "n",
            "robust_samples")
    records = [dict(zip(keys, row, strict=True)) for row in rows]
    for rec in records:
        if not samples or not rec["robust_samples"]:
            del rec["robust_samples"]
    return records


__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "TOL",
    "WORST",
    "Criterion",
    "Figure",
    "Paired",
    "Threshold",
    "Verdict",
    "drop_criterion",
    "drop_line",
    "figure_of",
    "figure_records",
    "minimum_n",
    "resolution",
    "sample_size_problem",
    "worst_attack",
]
