"""RobustnessReport: the plain-data result every gate, report and DADC round reads.

It round-trips through JSON exactly (``RobustnessReport.from_dict(r.to_dict()) == r``),
carries a schema version, stores numbers as numbers, and validates against
:data:`REPORT_SCHEMA` (JSON Schema draft 2020-12).
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from robustness.core.io import read_json, write_json
from robustness.core.text import markdown_table
from robustness.core.validation import check_json_schema

# 2 added per-sample outcomes (``robust_samples``); 3 groups the worst case by (norm, eps)
# (``WorstCase.norm``) and records clean correctness per sample (``clean_samples``); 4 adds
# cascade rows (``AttackResult.cascade_after``). Versions 1 to 3 still load.
SCHEMA_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
SEVERITIES = ("info", "warning", "error")
SAMPLES_FILE = "samples.safetensors"
CHECKS = ("non-determinism", "probability-outputs", "input-gradients",
          "iterative-vs-single-step", "gradient-free-beats-gradient", "monotone-eps",
          "large-eps", "attack-inactive", "attack-no-effect", "weaker-than-reference",
          "cascade")
"""The names of the sanity checks (:mod:`robustness.evaluation.checks`) a finding can have."""


@dataclass(frozen=True)
class AttackResult:
    """One attack at one budget.

    ``robust_accuracy`` is over all ``n`` samples (a sample misclassified before the
    attack is not robust); ``success_rate`` is over the ``n_attacked`` samples that
    were correctly classified and therefore attacked. ``median_perturbation`` is the
    median norm of the successful adversarial examples (None if there were none);
    ``queries`` the median model evaluations per attacked sample.

    ``cascade_after`` is empty for the attack's own result. A **cascade row**
    (``evaluate(cascade=True)``) lists the attacks that ran before it: it attacked only
    the samples they left robust, so ``robust_accuracy`` is against all of them together
    and ``n_attacked`` / ``success_rate`` / ``queries`` describe its share of the work.
    """

    attack: str
    eps: float
    norm: str
    threat_model: str
    robust_accuracy: float
    ci_low: float
    ci_high: float
    success_rate: float
    median_perturbation: float | None
    queries: float
    seconds: float
    n: int
    n_attacked: int
    gradient_evaluations: int
    description: str
    robust_samples: str = ""  # per sample in data order: "1" robust, "0" not ("" if unknown)
    cascade_after: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The attack, marked as a cascade row when it is one."""
        return f"{self.attack} (cascade after {', '.join(self.cascade_after)})" \
            if self.cascade_after else self.attack


@dataclass(frozen=True)
class WorstCase:
    """Per-sample worst case across every attack of one norm at one budget.

    A sample counts as robust only if every attack failed on it. ``broken_by`` counts,
    per attack in the order run, the samples it was first to break. Budgets in different
    norms are different threat models (L2 0.3 is far smaller than L-inf 0.3), so each
    norm has its own worst case; ``norm`` is ``""`` only in reports read from schema
    version 1 or 2 whose attacks at that eps mixed norms.
    """

    eps: float
    robust_accuracy: float
    ci_low: float
    ci_high: float
    n: int
    attacks: list[str]
    broken_by: dict[str, int]
    robust_samples: str = ""  # per sample in data order: "1" robust, "0" not ("" if unknown)
    norm: str = ""


@dataclass(frozen=True)
class Finding:
    """A sanity-check result: what was seen, why it matters, what to do."""

    check: str
    severity: str
    message: str


@dataclass(frozen=True)
class RobustnessReport:
    """Clean accuracy, per attack x eps results, per-sample worst case, findings, provenance."""

    clean_accuracy: float
    n_samples: int
    results: list[AttackResult]
    worst_case: list[WorstCase]
    findings: list[Finding] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    clean_samples: str = ""  # per sample in data order: "1" classified correctly ("" unknown)

    # -- access -------------------------------------------------------------------------
    def result(self, attack: str, eps: float) -> AttackResult:
        """The result of ``attack`` at ``eps`` (KeyError listing what exists if absent)."""
        for r in self.results:
            if r.attack == attack and abs(r.eps - eps) < 1e-12:
                return r
        have = ", ".join(f"{r.attack}@{r.eps:g}" for r in self.results)
        raise KeyError(f"no result for attack {attack!r} at eps {eps:g}; have: {have}")

    def worst(self, eps: float, norm: str | None = None) -> WorstCase:
        """The per-sample worst case at ``eps`` in ``norm``.

        ``norm`` may be left out when the report has one worst case at ``eps``; with
        attacks in several norms at that budget it must be given (KeyError otherwise).
        """
        rows = [w for w in self.worst_case if abs(w.eps - eps) < 1e-12
                and (norm is None or w.norm in (norm, ""))]  # "": recorded without one
        if len(rows) == 1:
            return rows[0]
        have = ", ".join(f"{w.norm or 'mixed'} {w.eps:g}" for w in self.worst_case)
        if rows:
            raise KeyError(f"several worst cases at eps {eps:g}, one per norm; give norm= "
                           f"(have: {have})")
        raise KeyError(f"no worst case at eps {eps:g}{f' in {norm}' if norm else ''}; "
                       f"have: {have}")

    def norms_at(self, eps: float) -> list[str]:
        """The norms of the attacks evaluated at ``eps``, in the order they ran."""
        return list(dict.fromkeys(r.norm for r in self.results if abs(r.eps - eps) < 1e-12))

    def robust_mask(self, attack: str, eps: float, norm: str | None = None) -> list[bool]:
        """Per sample, in data order: robust to ``attack`` at ``eps`` (``attack="worst case"``
        for the worst case across attacks, in ``norm`` if several were evaluated). Paired
        comparisons between runs use these."""
        row = self.worst(eps, norm) if attack == "worst case" else self.result(attack, eps)
        if len(row.robust_samples) != self.n_samples:
            raise KeyError(f"this report has no per-sample outcomes for {attack!r} at eps "
                           f"{eps:g} (written before schema version 2)")
        return [c == "1" for c in row.robust_samples]

    @property
    def eps_values(self) -> list[float]:
        """The budgets evaluated, ascending."""
        return sorted({r.eps for r in self.results})

    def problems(self, severity: str = "warning") -> list[Finding]:
        """Findings at ``severity`` or worse."""
        rank = SEVERITIES.index(severity)
        return [f for f in self.findings if SEVERITIES.index(f.severity) >= rank]

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (numbers as numbers)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobustnessReport:
        """Inverse of :meth:`to_dict`; validates against the schema first."""
        validate_report(data)
        return cls(
            clean_accuracy=data["clean_accuracy"],
            n_samples=data["n_samples"],
            results=[AttackResult(**r) for r in data["results"]],
            worst_case=[_worst_with_norm(w, data["results"]) for w in data["worst_case"]],
            findings=[Finding(**f) for f in data["findings"]],
            provenance=data["provenance"],
            schema_version=SCHEMA_VERSION,
            clean_samples=data.get("clean_samples", ""),
        )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``report.json`` and ``samples.safetensors`` into ``directory``; return the
        JSON's path.

        ``samples.safetensors`` holds the per-sample outcomes as tensors (see
        :meth:`sample_tensors`), so a report can be compared per sample and re-rendered
        without re-running anything; ``report.json`` names it under its top-level
        ``samples_file`` key.
        :func:`reports.markdown.write_report` writes both together with ``report.md``.
        """
        from robustness.core.io import write_tensors

        tensors, names = self.sample_tensors()
        data = self.to_dict()
        if tensors:
            write_tensors(Path(directory) / SAMPLES_FILE, tensors,
                          metadata={"rows": json.dumps(names), "n_samples": str(self.n_samples)})
            data["samples_file"] = SAMPLES_FILE  # beside the document; not part of the report
        return write_json(Path(directory) / "report.json", data)

    def sample_tensors(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Per-sample outcomes as tensors: ``index`` (N,) int64 (position in the evaluated
        data), ``clean_correct`` (N,) bool, and one (N,) bool robust mask per attack x eps
        (``robust/0``, ...) and per worst case (``worst/0``, ...); the second dict says what
        each mask is (attack, eps, norm). Empty for reports without per-sample outcomes."""
        import torch

        def mask(bits: str) -> torch.Tensor:
            return torch.tensor([c == "1" for c in bits], dtype=torch.bool)

        n = self.n_samples
        if len(self.clean_samples) != n:
            return {}, {}
        tensors: dict[str, Any] = {"index": torch.arange(n, dtype=torch.int64),
                                   "clean_correct": mask(self.clean_samples)}
        names: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(self.results):
            if len(r.robust_samples) == n:
                tensors[f"robust/{i}"] = mask(r.robust_samples)
                names[f"robust/{i}"] = {"attack": r.attack, "eps": r.eps, "norm": r.norm}
        for i, w in enumerate(self.worst_case):
            if len(w.robust_samples) == n:
                tensors[f"worst/{i}"] = mask(w.robust_samples)
                names[f"worst/{i}"] = {"attack": "worst case", "eps": w.eps, "norm": w.norm}
        return tensors, names

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RobustnessReport:
        """Read a ``report.json`` (or the directory holding one)."""
        return cls.from_dict(read_json(path, default_name="report.json"))

    # -- rendering ----------------------------------------------------------------------
    def table(self) -> str:
        """Per attack x eps Markdown table, worst case per eps last."""
        rows: list[list[object]] = [
            [r.label, r.threat_model, r.eps, r.robust_accuracy,
             f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", r.success_rate, r.median_perturbation,
             r.queries, r.seconds] for r in sorted(self.results, key=lambda r: (r.eps, r.attack))]
        rows += [[f"worst case ({w.norm})" if w.norm else "worst case", "all", w.eps,
                  w.robust_accuracy,
                  f"[{w.ci_low:.3f}, {w.ci_high:.3f}]", None, None, None, None]
                 for w in self.worst_case]
        return markdown_table(["attack", "threat model", "eps", "robust acc", "95% CI",
                               "success", "median pert.", "queries", "seconds"], rows)


_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_SAMPLES = {"type": "string", "pattern": "^[01]*$"}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "RobustnessReport",
    "type": "object",
    "required": ["schema_version", "clean_accuracy", "n_samples", "results", "worst_case",
                 "findings", "provenance"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"enum": list(READABLE_VERSIONS)},
        "clean_accuracy": _PROB,
        "n_samples": {"type": "integer", "minimum": 1},
        "results": {"type": "array", "items": {
            "type": "object",
            "additionalProperties": False,
            "required": [f.name for f in fields(AttackResult) if f.default is MISSING],
            "properties": {
                "attack": {"type": "string"},
                "eps": {"type": "number", "minimum": 0},
                "norm": {"enum": ["linf", "l2", "none"]},
                "threat_model": {"enum": ["white-box", "black-box", "transfer"]},
                "robust_accuracy": _PROB, "ci_low": _PROB, "ci_high": _PROB,
                "success_rate": _PROB,
                "median_perturbation": _NUM_OR_NULL,
                "queries": _NUM, "seconds": _NUM,
                "n": {"type": "integer", "minimum": 1},
                "n_attacked": {"type": "integer", "minimum": 0},
                "gradient_evaluations": {"type": "integer", "minimum": 0},
                "description": {"type": "string"},
                "robust_samples": _SAMPLES,
                "cascade_after": {"type": "array", "items": {"type": "string"}},
            },
        }},
        "worst_case": {"type": "array", "items": {
            "type": "object",
            "additionalProperties": False,
            "required": [f.name for f in fields(WorstCase) if f.default is MISSING],
            "properties": {
                "eps": {"type": "number", "minimum": 0},
                "robust_accuracy": _PROB, "ci_low": _PROB, "ci_high": _PROB,
                "n": {"type": "integer", "minimum": 1},
                "attacks": {"type": "array", "items": {"type": "string"}},
                "broken_by": {"type": "object", "additionalProperties": {"type": "integer"}},
                "robust_samples": _SAMPLES,
                "norm": {"enum": ["linf", "l2", "none", ""]},
            },
        }},
        "findings": {"type": "array", "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["check", "severity", "message"],
            "properties": {
                "check": {"type": "string"},
                "severity": {"enum": list(SEVERITIES)},
                "message": {"type": "string"},
            },
        }},
        "provenance": {"type": "object"},
        "clean_samples": _SAMPLES,
        "samples_file": {"type": "string"},
    },
}


def _worst_with_norm(w: dict[str, Any], results: list[dict[str, Any]]) -> WorstCase:
    """A worst case as read; before schema 3 its norm is that of its attacks, if they agree."""
    if "norm" in w:
        return WorstCase(**w)
    norms = {r["norm"] for r in results if abs(r["eps"] - w["eps"]) < 1e-12}
    return WorstCase(**w, norm=norms.pop() if len(norms) == 1 else "")


class ReportSchemaError(ValueError):
    """A report dictionary does not match :data:`REPORT_SCHEMA`."""


def validate_report(data: Any) -> None:
    """Raise :class:`ReportSchemaError` naming the first offending field, if any."""
    check_json_schema(data, REPORT_SCHEMA, what="report.json is not a valid RobustnessReport",
                      error=ReportSchemaError)
