"""Robustness gates: thresholds on a :class:`~robustness.evaluation.report.RobustnessReport` for CI.

One module per job:

:mod:`~robustness.gates.threshold`
    :class:`Threshold`, the :class:`Verdict` of ``report >= threshold``, the statistical
    rule (``"upper"``/``"point"``) and the :class:`Figure` a threshold looks at.
:mod:`~robustness.gates.gate`
    :class:`Gate`, a named, configured evaluation (model, data, attack budget, eps,
    sample size, seed, thresholds), its checks of the setup and its :class:`GateResult`.
:mod:`~robustness.gates.config`
    User input (pytest marker kwargs, TOML gate files) -> :class:`Gate`.
:mod:`~robustness.gates.baseline`
    Stored figures of earlier runs, :class:`Regression` and :class:`RobustnessRegression`.
:mod:`~robustness.gates.artifacts`
    The JSON document and the JUnit XML tree written for the CI system.
:mod:`~robustness.gates.cli`
    The ``robustness gate`` command.
:mod:`~robustness.gates.pytest_plugin`
    The pytest plugin (``robustness_gate`` fixture, ``@pytest.mark.robustness``).
:mod:`~robustness.gates.errors`
    :class:`GateConfigError` (a broken setup, never a robustness failure) and
    :class:`GateFailure`.

Importing this package (or its pytest plugin, loaded in every pytest run) does not import
torch, scipy or the evaluation engine: they load when a gate first runs.
"""

from __future__ import annotations

from robustness.gates.artifacts import RESULTS_FORMAT, RESULTS_VERSION, junit_xml, results_document
from robustness.gates.baseline import (
    BASELINE_FORMAT,
    BASELINE_VERSION,
    Baseline,
    BaselineEntry,
    Regression,
    RobustnessRegression,
)
from robustness.gates.config import (
    GATE_KEYS,
    GateFile,
    check_attack_specs,
    gate_from_mapping,
    load_gate_file,
    unknown_key,
)
from robustness.gates.errors import GateConfigError, GateFailure
from robustness.gates.gate import (
    BUDGETS,
    DEFAULT_BUDGET,
    Budget,
    Gate,
    GateDefaults,
    GateResult,
    PreparedGate,
    Resources,
    error_result,
)
from robustness.gates.threshold import (
    DEFAULT_RULE,
    RULES,
    WORST,
    Criterion,
    Figure,
    Threshold,
    Verdict,
    figure_of,
    worst_attack,
)

__all__ = [
    "BASELINE_FORMAT",
    "BASELINE_VERSION",
    "BUDGETS",
    "DEFAULT_BUDGET",
    "DEFAULT_RULE",
    "GATE_KEYS",
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
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
    "GateFile",
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
    "junit_xml",
    "load_gate_file",
    "results_document",
    "unknown_key",
    "worst_attack",
]
