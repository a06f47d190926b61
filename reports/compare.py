"""Comparisons between evaluated runs: paired per sample where that is honest.

Two runs that evaluated the same samples of the same data with the same attacks at the
same budgets are compared **per sample**: for each attack (and the worst case) at each
(norm, eps), only the samples where the two runs disagree carry information, and an exact
two-sided sign test (McNemar's exact test) on them says whether one is more robust.
Overlapping confidence intervals are not used: they miss real paired differences.
Runs that differ in data, samples, attacks or budgets are not paired; the reason is kept
so the page can say why.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from reports.runs import Run

ALPHA = 0.05  # significance of a paired difference


@dataclass(frozen=True)
class PairedComparison:
    """Run ``b`` against run ``a`` on one row (an attack or the worst case at one budget)."""

    a: str
    b: str
    attack: str
    eps: float
    norm: str
    n: int
    a_only: int  # samples robust in a only
    b_only: int  # samples robust in b only
    accuracy_a: float
    accuracy_b: float
    p_value: float  # exact two-sided sign test on the a_only + b_only discordant samples

    @property
    def significant(self) -> bool:
        """The difference is unlikely to be chance (p < 0.05)."""
        return self.p_value < ALPHA and self.a_only != self.b_only

    def sentence(self) -> str:
        """``b is more robust than a (0.62 vs 0.41; 25 vs 4 samples, p = 1e-04)``."""
        where = f"{self.attack} at {self.norm} eps {self.eps:g}"
        counts = (f"robust only in {self.a}: {self.a_only}, only in {self.b}: {self.b_only} of "
                  f"{self.n} samples; exact sign test p = {self.p_value:.3g}")
        if not self.significant:
            return (f"{where}: no difference between {self.a} ({self.accuracy_a:.3f}) and "
                    f"{self.b} ({self.accuracy_b:.3f}) ({counts})")
        better, worse = (self.b, self.a) if self.b_only > self.a_only else (self.a, self.b)
        hi, lo = max(self.accuracy_a, self.accuracy_b), min(self.accuracy_a, self.accuracy_b)
        return (f"{where}: {better} is more robust than {worse} ({hi:.3f} vs {lo:.3f}; "
                f"{counts})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with the verdict."""
        return {**asdict(self), "significant": self.significant, "sentence": self.sentence()}


@dataclass(frozen=True)
class Unpaired:
    """Two runs shown side by side but not compared per sample, and why."""

    a: str
    b: str
    reason: str


def pairing_problem(a: Run, b: Run) -> str:
    """Why ``a`` and ``b`` cannot be compared per sample (empty if they can)."""
    if a.report is None or b.report is None:
        return "one of them has no evaluation report (only evaluate and demo runs are paired)"
    if not a.masks or not b.masks:
        return "one of them stored no per-sample outcomes"
    ra, rb = a.report, b.report
    da, db = ra.provenance.get("dataset"), rb.provenance.get("dataset")
    if not isinstance(da, dict) or not isinstance(db, dict):
        return "one of them does not say which data it evaluated"
    same_name = all(da.get(k) == db.get(k) for k in ("name", "split", "part"))
    if not same_name:
        return f"different data ({_data_name(da)} vs {_data_name(db)})"
    if ra.n_samples != rb.n_samples:
        return f"different samples (n = {ra.n_samples} vs {rb.n_samples})"
    if da.get("digest") != db.get("digest"):
        # Same name, split and n, yet other images: e.g. another --data-root or a report
        # written before the digest existed (then nothing proves the samples are equal).
        why = ("the evaluated images differ" if da.get("digest") and db.get("digest")
               else "one of them does not record which images it evaluated")
        return f"different or unverifiable samples ({why})"
    if ra.eps_values != rb.eps_values:
        return f"different eps ({ra.eps_values} vs {rb.eps_values})"
    attacks_a = sorted({r.attack for r in ra.results})
    attacks_b = sorted({r.attack for r in rb.results})
    if attacks_a != attacks_b:
        return f"different attacks ({', '.join(attacks_a)} vs {', '.join(attacks_b)})"
    cascade_a, cascade_b = (any(r.cascade_after for r in r_.results) for r_ in (ra, rb))
    if cascade_a != cascade_b:
        return ("one of them is a cascade evaluation (each attack only on what the earlier ones "
                "left robust) and the other is not: their per-attack rows measure different "
                "things")
    if {r.label for r in ra.results} != {r.label for r in rb.results}:
        return "cascade evaluations with the attacks in a different order"
    return ""


def _data_name(meta: Any) -> str:
    if not isinstance(meta, dict):
        return "unknown data"
    return f"{meta.get('name', '?')}, {meta.get('split', '')}, n = {meta.get('n_used', '?')}"


def compare_pair(a: Run, b: Run) -> list[PairedComparison]:
    """Every shared row of two pairable runs, compared per sample."""
    from robustness.core.stats import sign_test  # scipy: only when comparing

    rows = []
    for key in sorted(set(a.masks) & set(b.masks), key=lambda k: (k[1], k[2], k[0])):
        ma, mb = a.masks[key], b.masks[key]
        a_only = sum(x and not y for x, y in zip(ma, mb, strict=True))
        b_only = sum(y and not x for x, y in zip(ma, mb, strict=True))
        n = len(ma)
        rows.append(PairedComparison(
            a=a.title, b=b.title, attack=key[0], eps=key[1], norm=key[2], n=n, a_only=a_only,
            b_only=b_only, accuracy_a=sum(ma) / n, accuracy_b=sum(mb) / n,
            p_value=sign_test(a_only, b_only)))
    return rows


def compare(runs: list[Run]) -> tuple[list[PairedComparison], list[Unpaired]]:
    """Compare every pair of evaluated runs: paired where honest, else the reason why not."""
    evaluated = [r for r in runs if r.report is not None]
    paired: list[PairedComparison] = []
    unpaired: list[Unpaired] = []
    for a, b in itertools.combinations(evaluated, 2):
        problem = pairing_problem(a, b)
        if problem:
            unpaired.append(Unpaired(a.title, b.title, problem))
        else:
            paired += compare_pair(a, b)
    return paired, unpaired


__all__ = ["ALPHA", "PairedComparison", "Unpaired", "compare", "compare_pair",
           "pairing_problem"]
