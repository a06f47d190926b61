"""pytest plugin: robustness gates in a test suite.

Registered through the ``pytest11`` entry point ``robustness`` (disable it with
``-p no:robustness``). Importing it imports :mod:`robustness.gates` but neither torch nor
the evaluation engine: those load on first use, when a test declares a gate, so suites
without gates pay nothing.

Declare a gate with the marker and run it with the fixture::

    @pytest.mark.robustness(model="model/model.safetensors", data="mnist", eps=0.1,
                            robust_accuracy=0.5, max_drop=0.05)
    def test_model_is_robust(robustness_gate):
        robustness_gate.check()          # or .check(my_model) for an nn.Module

Every ``robustness`` marker on the test (function, class, module) is merged, the
closest one winning per key, over the ``--robustness-*`` options, which therefore act as
defaults. Plain assertions explain themselves too::

    assert report >= Threshold(robust_accuracy=0.6, eps=0.1)

After the session: a "robustness gates" section lists every gate with its figures;
``--robustness-json`` writes them all; with ``--robustness-baseline``, drops beyond
``max_drop`` are collected and fail the session together as a ``RobustnessRegression``.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from robustness.core.argtypes import fraction, positive_int, seed
from robustness.core.backend import BACKENDS, Backend, get_backend
from robustness.core.validation import ParameterError
from robustness.gates.artifacts import results_document
from robustness.gates.baseline import Baseline, RobustnessRegression
from robustness.gates.config import GATE_KEYS, gate_from_mapping
from robustness.gates.errors import GateConfigError, GateFailure
from robustness.gates.gate import (
    BUDGETS,
    DEFAULT_BUDGET,
    Gate,
    GateDefaults,
    GateResult,
    PreparedGate,
    Resources,
    error_result,
)
from robustness.gates.threshold import DEFAULT_RULE, RULES, Threshold

if TYPE_CHECKING:
    from torch import nn

    from robustness.evaluation.report import RobustnessReport

MARKER = "robustness"
FIXTURE = "robustness_gate"

_gate_key = pytest.StashKey["Gate"]()
_call_key = pytest.StashKey[pytest.TestReport]()
_session_key = pytest.StashKey["GateSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--robustness-*`` options (defaults for every gate that does not set its own)."""
    group = parser.getgroup("robustness", "robustness gates (robustness_gate fixture, "
                                          "@pytest.mark.robustness)")
    group.addoption("--robustness-budget", choices=tuple(BUDGETS), default=DEFAULT_BUDGET,
                    help="attack preset of gates that name no attacks: 'fast' (FGSM + 10-step "
                         "PGD, 500 images) or 'standard' (FGSM + 40-step PGD x2 restarts + "
                         "genetic, 1000 images) (default: %(default)s)")
    group.addoption("--robustness-n", type=positive_int, default=None, metavar="N",
                    help="test images per gate (default: the budget's)")
    group.addoption("--robustness-seed", type=seed, default=0, metavar="SEED",
                    help="seed of the attacks (default: %(default)s)")
    group.addoption("--robustness-rule", choices=tuple(RULES), default=DEFAULT_RULE,
                    help="'upper': fail only when even the 95%% CI upper bound is below the "
                         "threshold; 'point': fail when the point estimate is (default: "
                         "%(default)s)")
    group.addoption("--robustness-json", type=Path, default=None, metavar="PATH",
                    help="write every gate's figures and verdict to this JSON file")
    group.addoption("--robustness-baseline", type=Path, default=None, metavar="PATH",
                    help="baseline JSON file: drops beyond max_drop fail the session as a "
                         "RobustnessRegression")
    group.addoption("--robustness-update-baseline", action="store_true",
                    help="record this run's figures in --robustness-baseline instead of "
                         "comparing with it")
    group.addoption("--robustness-max-drop", type=fraction, default=0.0, metavar="DROP",
                    help="allowed drop from the baseline for gates without max_drop, judged "
                         "under the rule (default: %(default)s)")
    group.addoption("--robustness-skip", action="store_true",
                    help="skip every robustness gate")
    group.addoption("--robustness-only", action="store_true",
                    help="run only robustness gates (deselect other tests)")
    group.addoption("--robustness-backend", choices=BACKENDS, default="local",
                    help="where each gate's attack x eps x shard tasks run: this process "
                         "(default), worker processes on this machine (one per CPU), or "
                         "Ray workers (pip install '.[ray]')")
    group.addoption("--robustness-ray-address", default=None, metavar="ADDRESS",
                    help="an existing Ray cluster for --robustness-backend ray (default: "
                         "RAY_ADDRESS, else a local instance)")
    group.addoption("--robustness-ray-cpus-per-task", type=positive_int, default=None,
                    metavar="N", help="CPUs (and torch threads) per Ray task (default: 1)")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; check option combinations."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**gate): declare a robustness gate run by the {FIXTURE} fixture; keys: "
        f"{', '.join(GATE_KEYS)}")
    opt = config.option
    if getattr(opt, "robustness_update_baseline", False) and opt.robustness_baseline is None:
        raise pytest.UsageError("--robustness-update-baseline needs --robustness-baseline PATH "
                                "(the file to write).")
    if getattr(opt, "robustness_skip", False) and opt.robustness_only:
        raise pytest.UsageError("--robustness-skip and --robustness-only exclude each other.")
    config.stash[_session_key] = GateSession(config)


class GateSession:
    """Every gate of the session: options, baseline, results, regressions."""

    def __init__(self, config: pytest.Config) -> None:
        opt = config.option
        self.rootpath = config.rootpath
        self.budget: str = getattr(opt, "robustness_budget", DEFAULT_BUDGET)
        self.n: int | None = getattr(opt, "robustness_n", None)
        self.seed: int = getattr(opt, "robustness_seed", 0)
        self.rule: str = getattr(opt, "robustness_rule", DEFAULT_RULE)
        self.max_drop: float = getattr(opt, "robustness_max_drop", 0.0)
        self.json_path: Path | None = getattr(opt, "robustness_json", None)
        self.baseline_path: Path | None = getattr(opt, "robustness_baseline", None)
        self.update_baseline: bool = getattr(opt, "robustness_update_baseline", False)
        self.baseline: Baseline | None = None
        try:  # Ray missing or a Ray option without the Ray backend: a usage error, now
            self.backend: Backend = get_backend(
                getattr(opt, "robustness_backend", "local"), owner="pytest",
                ray_address=getattr(opt, "robustness_ray_address", None),
                ray_cpus_per_task=getattr(opt, "robustness_ray_cpus_per_task", None),
                cli_names=True)
        except ParameterError as e:  # named as this plugin spells its options
            raise pytest.UsageError(str(e).replace("--", "--robustness-")) from None
        self.results: list[GateResult] = []
        self.regression: RobustnessRegression | None = None
        self.json_written: Path | None = None
        self._resources: Resources | None = None

    @property
    def resources(self) -> Resources:
        """Checkpoints and datasets loaded once per session."""
        if self._resources is None:
            self._resources = Resources()
        return self._resources

    def defaults(self) -> GateDefaults:
        """The options as :class:`~robustness.gates.GateDefaults`."""
        return GateDefaults(budget=self.budget, n=self.n, seed=self.seed, rule=self.rule,
                            max_drop=self.max_drop)

    def load_baseline(self) -> None:
        """Read the baseline file (an absent file is an empty baseline)."""
        if self.baseline_path is None or self.baseline is not None:
            return
        try:
            self.baseline = Baseline(self.baseline_path)
        except GateConfigError as e:
            raise pytest.UsageError(str(e)) from None

    def record(self, result: GateResult) -> None:
        """Keep a gate's result for the summary, the JSON file and the baseline."""
        self.results.append(result)


def _gate_for(item: pytest.Item, session: GateSession) -> Gate | None:
    markers = list(item.iter_markers(MARKER))
    if not markers:
        return None
    values: dict[str, Any] = {}
    for mark in reversed(markers):  # farthest first, so the closest marker wins per key
        if mark.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.{MARKER} takes keyword arguments only "
                f"(e.g. eps=0.1, robust_accuracy=0.6); got positional {mark.args!r}.")
        values.update(mark.kwargs)
    try:
        return gate_from_mapping(values, owner=f"@pytest.mark.{MARKER} on {item.nodeid}",
                                 default_name=item.nodeid, defaults=session.defaults(),
                                 base_dir=session.rootpath)
    except GateConfigError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every gate marker (a bad one is a usage error); apply skip/only."""
    session = config.stash[_session_key]
    gates, others = [], []
    names: dict[str, str] = {}
    for item in items:
        gate = _gate_for(item, session)
        uses_fixture = FIXTURE in getattr(item, "fixturenames", ())
        if gate is None:
            if uses_fixture:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the {FIXTURE} fixture but declares no gate: add "
                    f"@pytest.mark.{MARKER}(eps=..., robust_accuracy=...).")
            others.append(item)
            continue
        if not uses_fixture:
            raise pytest.UsageError(
                f"{item.nodeid} has @pytest.mark.{MARKER} but does not request the {FIXTURE} "
                f"fixture that runs the gate: add it as an argument and call "
                f"{FIXTURE}.check().")
        if gate.name in names:
            raise pytest.UsageError(
                f"{item.nodeid} and {names[gate.name]} both declare the gate "
                f"'{gate.name}': gate names key the baseline and must be unique.")
        names[gate.name] = item.nodeid
        item.stash[_gate_key] = gate
        gates.append(item)
    if config.option.robustness_skip:
        for item in gates:
            item.add_marker(pytest.mark.skip(reason="robustness gates skipped "
                                                    "(--robustness-skip)"))
    elif config.option.robustness_only and others:
        config.hook.pytest_deselected(items=others)
        items[:] = gates
    if gates and not config.option.robustness_skip:
        session.load_baseline()  # a corrupt file is a usage error before anything runs


class GateFixture:
    """The value of the ``robustness_gate`` fixture: this test's gate, ready to run."""

    def __init__(self, gate: Gate, session: GateSession, prepared: PreparedGate | None) -> None:
        self.gate = gate
        self._session = session
        self._prepared = prepared
        self.result: GateResult | None = None

    def check(self, model: nn.Module | str | None = None, data: Any = None) -> RobustnessReport:
        """Evaluate the gate, record its figures, and fail the test if a threshold fails.

        Parameters
        ----------
        model
            A trained ``nn.Module`` or checkpoint path; default the marker's ``model``.
        data
            A dataset name, a Dataset or an ``(x, y)`` pair; default the marker's ``data``,
            else the checkpoint's dataset.

        Returns
        -------
        RobustnessReport
            For further assertions, e.g. ``assert report >= Threshold(...)``.

        Raises
        ------
        GateFailure
            A threshold failed; the message explains it (table, eps, n, CI, worst attack,
            rule, shortfall).
        GateConfigError
            The gate cannot judge robustness (no model, untrained model, mismatched data).
        """
        __tracebackhide__ = True
        if self.result is not None:
            raise GateConfigError(f"{FIXTURE}.check() already ran for gate "
                                  f"'{self.gate.name}'; call it once per test.")
        session = self._session
        try:
            prepared = self._prepared if model is None and data is None and self._prepared \
                else self.gate.prepare(model, data, resources=session.resources)
            baseline = None if session.update_baseline else session.baseline
            self.result = self.gate.evaluate(prepared, baseline=baseline,
                                             backend=session.backend)
        except GateConfigError as e:
            self.result = error_result(self.gate, e)
            session.record(self.result)
            raise GateConfigError(str(e)) from None
        session.record(self.result)
        if self.result.failed_verdicts or self.result.blocking_findings:
            raise GateFailure(self.result.explain())
        assert self.result.report is not None  # evaluate() always sets it
        return self.result.report


@pytest.fixture
def robustness_gate(request: pytest.FixtureRequest) -> Generator[GateFixture]:
    """This test's robustness gate (declared with ``@pytest.mark.robustness``).

    A gate that names its model is loaded and checked here, so a missing checkpoint,
    an untrained model or mismatched data errors at setup, never as a robustness failure.
    Call ``robustness_gate.check()`` in the test to run it; a test that passes without
    calling it errors at teardown, since its gate never ran.
    """
    __tracebackhide__ = True
    session = request.config.stash[_session_key]
    gate = request.node.stash[_gate_key]
    prepared = None
    if gate.model is not None:
        try:
            prepared = gate.prepare(resources=session.resources)
        except GateConfigError as e:
            session.record(error_result(gate, e))
            raise GateConfigError(str(e)) from None
    fixture = GateFixture(gate, session, prepared)
    yield fixture
    call = request.node.stash.get(_call_key, None)
    if fixture.result is None and call is not None and call.passed:
        pytest.fail(f"{request.node.nodeid} declares the robustness gate '{gate.name}' but "
                    f"never called {FIXTURE}.check(): the gate did not run.", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                         pytest.TestReport]:
    """Keep a gate test's call outcome for the fixture's teardown check."""
    report = yield
    if report.when == "call" and _gate_key in item.stash:
        item.stash[_call_key] = report
    return report


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: object,
                              right: object) -> list[str] | None:
    """Explain a failed ``report >= Threshold(...)``: figures, rule, worst attack, table."""
    report_mod = sys.modules.get("robustness.evaluation.report")
    if report_mod is None:
        return None  # no report can exist yet
    if op == ">=" and isinstance(right, Threshold):
        report, threshold = left, right
    elif op == "<=" and isinstance(left, Threshold):
        threshold, report = left, right
    else:
        return None
    if not isinstance(report, report_mod.RobustnessReport):
        return None
    try:
        verdict = threshold.check(report)
    except GateConfigError as e:
        return [f"report >= {threshold!r}", str(e)]
    # Most telling lines first: pytest truncates long explanations unless -vv or on CI.
    lines = verdict.explain().splitlines()
    return [f"report >= {threshold!r}", *(line if line else " " for line in lines)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Update the baseline, write the JSON file, fail the session on regressions."""
    gs = session.config.stash.get(_session_key, None)
    if gs is not None:
        gs.backend.close()  # a local Ray instance started for the gates
    if gs is None or (not gs.results and gs.json_path is None):
        return
    if gs.update_baseline and gs.baseline is not None:
        for result in gs.results:
            gs.baseline.record(result)
        gs.baseline.save()
    if gs.json_path is not None:
        from robustness.core.io import write_json

        doc = results_document(gs.results, baseline=gs.baseline,
                               baseline_updated=gs.update_baseline, source="pytest")
        gs.json_written = write_json(gs.json_path, doc)
    regressions = [r for result in gs.results for r in result.regressions]
    if regressions and gs.baseline is not None:
        gs.regression = RobustnessRegression(regressions, gs.baseline.path)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


_STATUS_MARKUP = {"passed": {"green": True}, "failed": {"red": True}, "regressed": {"red": True},
                  "unverified": {"yellow": True, "bold": True},
                  "error": {"red": True, "bold": True}}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    """The "robustness gates" section: every gate with its figures, then any regressions."""
    gs = config.stash.get(_session_key, None)
    if gs is None or not gs.results:
        return
    tr = terminalreporter
    tr.write_sep("=", "robustness gates")
    width = max(len(r.gate.name) for r in gs.results)
    for result in gs.results:
        tr.write(f"{result.status.upper():<9} ", **_STATUS_MARKUP[result.status])
        tr.write_line(f"{result.gate.name:<{width}}  {result.summary()}")
        for line in result.findings_text().splitlines():
            tr.write_line(f"{'':<10}{line}")
    if gs.baseline_path is not None:
        if gs.update_baseline:
            tr.write_line(f"baseline: recorded {sum(r.report is not None for r in gs.results)} "
                          f"gate(s) in {gs.baseline_path}")
        elif gs.baseline is not None and not gs.baseline.exists:
            tr.write_line(f"baseline: {gs.baseline_path} does not exist; nothing compared "
                          f"(create it with --robustness-update-baseline)")
        elif gs.baseline is not None:
            compared = sum(r.compared for r in gs.results)
            tr.write_line(f"baseline: {gs.baseline_path}: {compared} of {len(gs.results)} "
                          f"gate(s) compared")
    if gs.json_written is not None:
        tr.write_line(f"json: {gs.json_written}")
    if gs.regression is not None:
        tr.write_sep("=", "RobustnessRegression", red=True, bold=True)
        for line in str(gs.regression).splitlines():
            tr.write_line(line, red=True)
