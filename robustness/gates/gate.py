"""Gates: a named, configured evaluation (model, data, attacks, eps, n, seed) and its result.

:meth:`Gate.prepare` resolves the model and data and refuses to judge robustness when the
configuration is wrong (no model, an untrained model, data of the wrong shape): that is a
:class:`~robustness.gates.errors.GateConfigError`, never a robustness failure.
:meth:`Gate.evaluate` runs the attacks and judges every threshold, comparing with a
:class:`~robustness.gates.baseline.Baseline` when given one; the outcome is a
:class:`GateResult`. torch and the evaluation engine are imported on first use.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.core.validation import ParameterError, invalid
from robustness.gates.baseline import Regression
from robustness.gates.errors import GateConfigError
from robustness.gates.threshold import (
    DEFAULT_RULE,
    Threshold,
    Verdict,
    drop_criterion,
    figure_of,
    figure_records,
    resolution,
    sample_size_problem,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from robustness.data import Dataset
    from robustness.evaluation.report import Finding, RobustnessReport
    from robustness.gates.baseline import Baseline
    from robustness.model_source import LoadedModel


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
REFERENCE_ATTACKS: dict[str, str] = {"linf": "pgd(steps=20)", "l2": "pgd-l2(steps=20)"}
"""The PGD every gate's worst case includes in each norm its attacks use: an attack that
is broken (or configured to do nothing) then cannot make a model look robust."""


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
    allow_findings
        Sanity-check findings (by check name, e.g. ``"input-gradients"``) accepted for
        this gate. Any other finding of severity warning or error makes the gate
        ``"unverified"``: its numbers cannot be trusted, so it does not pass. Accepted
        findings are still printed.
    reference_attack
        Add the reference PGD (:data:`REFERENCE_ATTACKS`) to the worst case in every norm
        the gate's attacks use, unless they already include our PGD (default True). Set
        False to remove it explicitly.
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
    allow_findings: tuple[str, ...] = ()
    reference_attack: bool = True
    weights: Any = None  # safetensors weights of a 'pkg.module:factory' model
    aggregation: str | None = None  # an ensemble directory's aggregation (default mean)
    members: int | None = None  # the first N members of an ensemble directory

    @property
    def eps(self) -> list[float]:
        """The budgets evaluated: every threshold's eps."""
        return sorted({float(t.eps) for t in self.thresholds if t.eps is not None})

    @property
    def attack_specs(self) -> tuple[str, ...]:
        """The attacks run: the gate's own, else the budget's, then the reference PGD of
        every norm they use without our PGD (unless ``reference_attack`` is False)."""
        specs = self.attacks if self.attacks is not None else BUDGETS[self.budget].attacks
        if not self.reference_attack or not self.eps:
            return specs
        from attacks.registry import parse_attack_spec

        have: set[str] = set()  # norms where our own PGD already runs
        norms: list[str] = []
        for spec in specs:
            parsed = parse_attack_spec(spec)
            attack = parsed.build(self.eps[0] if parsed.bounded() else None)
            norms.append(attack.norm)
            if parsed.factory is None and parsed.name in ("pgd", "pgd-l2"):
                have.add(attack.norm)
        extra = tuple(REFERENCE_ATTACKS[n] for n in dict.fromkeys(norms)
                      if n in REFERENCE_ATTACKS and n not in have
                      and REFERENCE_ATTACKS[n] not in specs)
        return (*specs, *extra)

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
                 echo: Any = None, backend: Any = "local") -> GateResult:
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
        backend
            Where the attack x eps x shard tasks run: ``"local"``, ``"ray"`` or a
            :class:`~robustness.core.backend.Backend` (see :func:`robustness.evaluate`).

        Returns
        -------
        GateResult
        """
        from robustness.evaluation import evaluate

        started = time.perf_counter()
        try:
            report = evaluate(prepared.model, prepared.data, list(self.attack_specs), self.eps,
                              n=len(prepared.x), seed=self.seed, checks=True,
                              model_info=prepared.model_info, echo=echo, backend=backend)
        except ParameterError as e:
            raise self._error(str(e)) from None
        # A threshold's minimum is judged here; its max_drop only against the baseline file,
        # where a failure is a regression (reported per session), not a failed minimum.
        verdicts = [dataclasses.replace(t, max_drop=None).check(report)
                    for t in self.thresholds if t.robust_accuracy is not None]
        entry = baseline.entry(self.name) if baseline is not None else None
        regressions = []
        notes: list[str] = []
        for t in self.thresholds:
            if entry is None:
                break
            fig = figure_of(report, t.eps, t.attack, t.norm)
            stored = entry.get(fig.attack, fig.eps, fig.norm)
            if stored is None:
                continue
            max_drop = t.max_drop if t.max_drop is not None else self.tolerance
            # Per-sample pairing needs the very same samples: same data, n, seed, attacks.
            same = entry.setup == self.setup()
            base_mask = entry.samples(fig.attack, fig.eps, fig.norm) if same else None
            mask = report.robust_mask(fig.attack, fig.eps, fig.norm or None) \
                if base_mask is not None else None
            drop = drop_criterion(stored, fig.robust_accuracy, max_drop, t.rule,
                                  baseline_mask=base_mask, current_mask=mask)
            if drop.passed and drop.statistic > max_drop + 1e-9 and drop.paired is not None:
                # Passed only because the paired losses are not significant (rule 'upper'):
                # said, never silent.
                notes.append(f"{fig.attack} @ eps {fig.eps:g}: dropped {drop.statistic:.3f} "
                             f"from the baseline {stored:.3f}, beyond max_drop {max_drop:.3f}, "
                             f"but not significantly ({drop.paired.describe()}): rule "
                             f"'{t.rule}' passes it; rule 'point' would fail it")
            if not drop.passed:
                compared = drop.paired.describe() if drop.paired is not None else \
                    "by point estimates (the baseline has no per-sample outcomes for this setup)"
                regressions.append(Regression(
                    self.name, fig.attack, fig.eps, stored, fig.robust_accuracy, fig.ci_low,
                    fig.ci_high, drop.statistic, max_drop, t.rule,
                    note=entry.setup_note(self.setup()), compared=compared, norm=fig.norm))
        return GateResult(gate=self, report=report, verdicts=verdicts, regressions=regressions,
                          seconds=time.perf_counter() - started, compared=entry is not None,
                          notes=notes)

    def run(self, model: Any = None, data: Any = None, *, baseline: Baseline | None = None,
            resources: Resources | None = None, echo: Any = None,
            backend: Any = "local") -> GateResult:
        """:meth:`prepare` then :meth:`evaluate`."""
        return self.evaluate(self.prepare(model, data, resources=resources), baseline=baseline,
                             echo=echo, backend=backend)

    def setup(self) -> dict[str, Any]:
        """What the figures depend on; stored with a baseline to spot incomparable runs
        (and to pair per-sample outcomes only between runs on the same samples)."""
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
        self._models: dict[tuple[str, str, str | None, int | None], LoadedModel] = {}
        self._datasets: dict[tuple[str, int], Dataset] = {}

    def model(self, spec: str | os.PathLike[str], *, weights: Any = None,
              aggregation: str | None = None, members: int | None = None) -> LoadedModel:
        """``load_model(...)`` (checkpoint, ensemble directory or factory), cached."""
        from robustness.checkpoint import resolve_path
        from robustness.model_source import is_factory, load_model

        text = os.fspath(spec)
        if is_factory(text):
            name = text
        elif Path(text).is_dir() and not (Path(text) / "model.safetensors").exists():
            name = str(Path(text).resolve())  # an ensemble directory
        else:
            name = str(resolve_path(text).resolve())
        key = (name, str(weights), aggregation, members)
        if key not in self._models:
            self._models[key] = load_model(name, weights=weights, aggregation=aggregation,
                                           members=members, owner="Gate", option="model")
        return self._models[key]

    def dataset(self, name: str, seed: int) -> Dataset:
        """``load_dataset(name, seed=seed)``, cached under the dataset's canonical name."""
        from robustness.data import canonical_dataset_name, load_dataset

        key = (canonical_dataset_name(name), seed)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(name, seed=seed)
        return self._datasets[key]


def _prepare(gate: Gate, model: Any, data: Any, resources: Resources) -> PreparedGate:
    import torch
    from torch import nn

    from robustness.checkpoint import CheckpointError, held_out_seed
    from robustness.data import Dataset, DatasetNotFoundError

    meta = None
    if model is None:
        raise gate._error("no model was given. Name a trained checkpoint (model='run/model."
                          "safetensors', written by `robustness train --out run`) or pass a "
                          "trained torch.nn.Module.")
    model_info: dict[str, Any] = {}
    loaded = None
    if isinstance(model, str | os.PathLike):
        try:
            loaded = resources.model(model, weights=gate.weights, aggregation=gate.aggregation,
                                     members=gate.members)
        except CheckpointError as e:
            raise gate._error(f"the model is not a usable trained checkpoint: {e}") from None
        except ParameterError as e:
            raise gate._error(f"the model cannot be loaded: {e}") from None
        model, model_info = loaded.model, loaded.info
        meta = loaded.meta
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
        from robustness.model_source import check_training_split, for_data

        split_meta = for_data(loaded, data) if loaded is not None else meta
        seed = held_out_seed(data, split_meta)
        try:
            data = resources.dataset(data, seed)
            if loaded is not None:
                check_training_split(loaded, data.x_train, data.y_train, owner="Gate", seed=seed)
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
    if gate.n is not None and gate.n > len(x):  # an explicit n is never silently reduced
        raise gate._error(f"n = {gate.n} is more than the {len(x)} test images of the data; "
                          f"lower n (a budget's default n uses what there is).")
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
    for t in gate.thresholds:
        problem = None if t.robust_accuracy is None else \
            sample_size_problem(len(x), t.robust_accuracy, t.rule)
        if problem is not None:
            raise gate._error(f"{problem}. Raise n (the gate evaluates "
                              f"{len(x)} image{'s' if len(x) != 1 else ''}).")
    _check_trained(gate, model, x, y, shape)
    return PreparedGate(model=model, data=data, x=x, y=y, model_info=model_info)


def _check_trained(gate: Gate, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   shape: tuple[int, ...]) -> None:
    """Refuse a model no better than always answering the most frequent class.

    Its robust accuracy would be near zero for reasons that have nothing to do with
    robustness; the gate would report a misleading "robustness failure".
    """
    from robustness.core.modes import predict
    from robustness.core.stats import wilson_interval  # scipy: not at import time

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
    if wilson_interval(n, n)[0] <= majority:
        # Even n of n correct could not show the model beats the majority class: the
        # sample, not the model, is the problem.
        k = logits.shape[1]  # with balanced labels, the majority of m images is ceil(m / k)
        need = next(m for m in range(n + 1, n + 10_000)
                    if wilson_interval(m, m)[0] > math.ceil(m / k) / m)
        raise gate._error(
            f"n = {n} is too small to tell a trained model from one that always predicts the "
            f"most frequent class ({majority:.3f} of these {n} images): even {n} of {n} "
            f"correct would not show it at 95% confidence. Evaluate at least n = {need} "
            f"images.")
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
    notes: list[str] = field(default_factory=list)  # drops beyond max_drop not significant

    @property
    def status(self) -> str:
        """``"error"``, ``"failed"`` (a minimum), ``"regressed"`` (baseline),
        ``"unverified"`` (the thresholds held but a sanity check says the numbers cannot
        be trusted) or ``"passed"``."""
        if self.error is not None:
            return "error"
        if any(not v.passed for v in self.verdicts):
            return "failed"
        if self.regressions:
            return "regressed"
        if self.blocking_findings:
            return "unverified"
        return "passed"

    @property
    def blocking_findings(self) -> list[Finding]:
        """Findings of severity warning or error the gate did not accept."""
        if self.report is None:
            return []
        return [f for f in self.report.problems("warning")
                if f.check not in self.gate.allow_findings]

    @property
    def accepted_findings(self) -> list[Finding]:
        """Findings of severity warning or error accepted with ``allow_findings``."""
        if self.report is None:
            return []
        return [f for f in self.report.problems("warning") if f.check in self.gate.allow_findings]

    def findings_text(self) -> str:
        """The blocking and the accepted findings, one per line (empty if none)."""
        lines = [f"finding ({f.severity}) {f.check}: {f.message}"
                 for f in self.blocking_findings]
        lines += [f"accepted finding ({f.severity}) {f.check} (allow_findings): {f.message}"
                  for f in self.accepted_findings]
        lines += [f"unconfirmed drop: {note}" for note in self.notes]
        return "\n".join(lines)

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
        if self.blocking_findings:
            names = ", ".join(dict.fromkeys(f.check for f in self.blocking_findings))
            parts.append(
                f"Robustness gate '{self.gate.name}' is UNVERIFIED: its sanity checks say the "
                f"robust accuracy cannot be trusted ({names}). Fix the cause, or accept a "
                f"finding explicitly with allow_findings = [\"{names.split(', ')[0]}\"].")
        if self.blocking_findings or self.accepted_findings:
            parts.append(self.findings_text())
        return "\n\n".join(parts)

    def summary(self) -> str:
        """One line with the gate's figures (or its error)."""
        if self.error is not None:
            prefix = f"Robustness gate '{self.gate.name}' is misconfigured: "
            return f"configuration error: {self.error.removeprefix(prefix)}"
        parts = [v.summary() for v in self.verdicts]
        if not parts and self.report is not None:
            figs = [figure_of(self.report, t.eps, t.attack, t.norm)
                    for t in self.gate.thresholds]
            parts = [f"{f.attack} @ eps {f.eps:g}: {f.robust_accuracy:.3f} [{f.ci_low:.3f}, "
                     f"{f.ci_high:.3f}]" for f in figs]
        parts += [f"REGRESSED {r.attack} @ eps {r.eps:g}: {r.baseline:.3f} -> "
                  f"{r.robust_accuracy:.3f} (max_drop {r.max_drop:.3f})"
                  for r in self.regressions]
        if self.blocking_findings:
            parts.append("UNVERIFIED by findings: " + ", ".join(
                dict.fromkeys(f.check for f in self.blocking_findings)))
        if self.accepted_findings:
            parts.append("accepted findings: " + ", ".join(
                dict.fromkeys(f.check for f in self.accepted_findings)))
        n = ""
        if self.report is not None:
            n = (f"n={self.report.n_samples}, resolution "
                 f"+-{self.resolution(self.report.n_samples):.3f}, clean "
                 f"{self.report.clean_accuracy:.3f}, ")
        return f"{'; '.join(parts)} ({n}{self.seconds:.1f} s)"

    def resolution(self, n: int) -> float:
        """The 95% CI half-width at the gate's strictest minimum (0.5 without one) for
        ``n`` images: differences smaller than this are invisible to the gate."""
        minimums = [t.robust_accuracy for t in self.gate.thresholds
                    if t.robust_accuracy is not None]
        return resolution(n, max(minimums) if minimums else 0.5)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: setup, status, figures, verdicts, regressions, full report."""
        figures = figure_records(self.report) if self.report is not None else []
        return {
            "name": self.gate.name,
            "status": self.status,
            "error": self.error,
            "seconds": self.seconds,
            "setup": self.gate.setup(),
            "eps": self.gate.eps,
            "clean_accuracy": self.report.clean_accuracy if self.report else None,
            "n": self.report.n_samples if self.report else None,
            "resolution": self.resolution(self.report.n_samples) if self.report else None,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "regressions": [r.to_dict() for r in self.regressions],
            "compared_with_baseline": self.compared,
            "figures": figures,
            "findings": [dataclasses.asdict(f) for f in self.report.findings]
            if self.report else [],
            "blocking_findings": [f.check for f in self.blocking_findings],
            "accepted_findings": [f.check for f in self.accepted_findings],
            "allow_findings": list(self.gate.allow_findings),
            "report": self.report.to_dict() if self.report else None,
        }


def error_result(gate: Gate, error: Exception) -> GateResult:
    """A :class:`GateResult` for a gate that could not be evaluated."""
    return GateResult(gate=gate, error=str(error))


__all__ = [
    "BUDGETS",
    "DEFAULT_BUDGET",
    "Budget",
    "Gate",
    "GateDefaults",
    "GateResult",
    "PreparedGate",
    "Resources",
    "error_result",
]
