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
    figure_of,
    figure_records,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from robustness.checkpoint import CheckpointMeta
    from robustness.data import Dataset
    from robustness.evaluation.report import RobustnessReport
    from robustness.gates.baseline import Baseline


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
        try:
            data = resources.dataset(data, held_out_seed(data, meta))
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
            "verdicts": [v.to_dict() for v in self.verdicts],
            "regressions": [r.to_dict() for r in self.regressions],
            "compared_with_baseline": self.compared,
            "figures": figures,
            "findings": [dataclasses.asdict(f) for f in self.report.findings]
            if self.report else [],
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
