"""Gates: thresholds with the CI rule, self-explaining verdicts, configuration errors that
are never reported as robustness failures, baselines and regressions, `robustness gate`."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from torch import nn

from robustness.checkpoint import CheckpointMeta, save_checkpoint
from robustness.cli import main
from robustness.core.stats import wilson_interval
from robustness.core.validation import ParameterError
from robustness.data import Dataset, canonical_dataset_name, load_dataset
from robustness.evaluation.report import AttackResult, RobustnessReport, WorstCase
from robustness.gates import (
    BUDGETS,
    WORST,
    Baseline,
    Gate,
    GateConfigError,
    GateDefaults,
    RobustnessRegression,
    Threshold,
    gate_from_mapping,
    results_document,
)
from robustness.models import build_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ci-gate"
N = 100  # images per real evaluation here: enough for a trained model's figures, fast


def _result(attack: str, eps: float, robust: int, n: int, attacked: int) -> AttackResult:
    lo, hi = wilson_interval(robust, n)
    return AttackResult(attack=attack, eps=eps, norm="linf", threat_model="white-box",
                        robust_accuracy=robust / n, ci_low=lo, ci_high=hi,
                        success_rate=(attacked - robust) / attacked, median_perturbation=eps,
                        queries=1.0, seconds=0.1, n=n, n_attacked=attacked,
                        gradient_evaluations=attacked, description=attack)


def make_report(robust: dict[str, int], *, worst: int, n: int = 100, eps: float = 0.1,
                clean: int = 90) -> RobustnessReport:
    """A report with exact counts: ``robust`` maps attack label -> robust samples at eps."""
    results = [_result(a, eps, k, n, clean) for a, k in robust.items()]
    lo, hi = wilson_interval(worst, n)
    broken_by, left = {}, clean
    for a, k in robust.items():
        broken_by[a] = max(0, left - max(k, worst))
        left -= broken_by[a]
    wc = WorstCase(eps=eps, robust_accuracy=worst / n, ci_low=lo, ci_high=hi, n=n,
                   attacks=list(robust), broken_by=broken_by)
    return RobustnessReport(clean_accuracy=clean / n, n_samples=n, results=results,
                            worst_case=[wc], provenance={"attacks": list(robust)})


REPORT = make_report({"fgsm": 70, "pgd(steps=10)": 55}, worst=55)  # worst CI [0.452, 0.644]


# -- thresholds and verdicts ----------------------------------------------------------------


def test_report_ge_threshold_uses_the_upper_ci_rule_by_default() -> None:
    verdict = REPORT >= Threshold(robust_accuracy=0.6, eps=0.1)
    # 0.55 is below 0.6 but the upper bound 0.644 is not: the sample cannot show the
    # model is below the threshold, so the default rule passes and says why.
    assert verdict
    assert verdict.threshold.rule == "upper"
    text = verdict.explain()
    assert "rule 'upper': fail only when even the upper bound" in text
    assert "the point estimate 0.550 is below it" in text


def test_point_rule_fails_on_the_point_estimate() -> None:
    verdict = REPORT >= Threshold(robust_accuracy=0.6, eps=0.1, rule="point")
    assert not verdict
    assert verdict.below_minimum and not verdict.regressed
    assert "failed by 0.050: point estimate 0.550 < 0.600" in verdict.explain()


def test_failed_verdict_explains_table_eps_n_ci_worst_attack_and_shortfall() -> None:
    verdict = REPORT >= Threshold(robust_accuracy=0.7, eps=0.1)
    assert not verdict
    text = verdict.explain()
    lo, hi = wilson_interval(55, 100)
    assert f"failed by {0.7 - hi:.3f}: 95% CI upper bound {hi:.3f} < 0.700" in text
    assert f"95% CI [{lo:.3f}, {hi:.3f}] at eps 0.1 (worst case over fgsm, pgd(steps=10))" in text
    assert "n = 100" in text and "clean accuracy 0.900" in text
    assert "worst attack at eps 0.1: pgd(steps=10)" in text
    assert "rule 'upper'" in text
    assert REPORT.table() in text  # the per-attack table, worst case included


def test_threshold_on_one_attack_by_label_or_unique_name() -> None:
    assert REPORT >= Threshold(robust_accuracy=0.6, eps=0.1, attack="fgsm", rule="point")
    by_name = REPORT >= Threshold(robust_accuracy=0.6, eps=0.1, attack="pgd", rule="point")
    assert by_name.figure.attack == "pgd(steps=10)" and not by_name
    # eps None is fine when the report has only one budget
    assert (REPORT >= Threshold(robust_accuracy=0.5)).figure.attack == WORST


@pytest.mark.parametrize(("threshold", "message"), [
    (Threshold(robust_accuracy=0.5, eps=0.3), "a budget the report evaluated (0.1). Got 0.3"),
    (Threshold(robust_accuracy=0.5, eps=0.1, attack="cw"),
     "an attack the report evaluated at eps 0.1 ('fgsm', 'pgd(steps=10)')"),
    (Threshold(max_drop=0.05, eps=0.1), "The 'baseline' parameter of Threshold must be given"),
])
def test_threshold_that_cannot_apply_is_a_config_error(threshold: Threshold, message: str) -> None:
    with pytest.raises(GateConfigError) as info:
        _ = REPORT >= threshold
    assert message in str(info.value)


def test_ambiguous_attack_name_and_missing_eps_are_config_errors() -> None:
    report = make_report({"pgd(steps=10)": 60, "pgd(steps=40)": 55}, worst=55)
    with pytest.raises(GateConfigError, match="a unique attack name"):
        _ = report >= Threshold(robust_accuracy=0.5, eps=0.1, attack="pgd")
    two = RobustnessReport(clean_accuracy=0.9, n_samples=100,
                           results=[*REPORT.results, *make_report({"fgsm": 20}, worst=20,
                                                                  eps=0.3).results],
                           worst_case=[*REPORT.worst_case,
                                       *make_report({"fgsm": 20}, worst=20, eps=0.3).worst_case])
    with pytest.raises(GateConfigError, match=r"must be given when the report has several "
                                              r"budgets \(0.1, 0.3\)"):
        _ = two >= Threshold(robust_accuracy=0.5)


def test_max_drop_compares_point_estimates_not_an_interval_bound() -> None:
    """Issue 11.3: a drop hidden inside the new run's CI is still a drop."""
    now = make_report({"fgsm": 70, "pgd(steps=10)": 60}, worst=60)  # n = 100
    verdict = now >= Threshold(eps=0.1, max_drop=0.05, baseline=0.69)
    assert not verdict and verdict.regressed
    assert verdict.criteria[0].statistic == pytest.approx(0.09)
    assert "baseline 0.690, drop 0.090, point estimates" in verdict.explain()
    noise = now >= Threshold(eps=0.1, max_drop=0.05, baseline=0.62)  # within max_drop
    assert noise and noise.criteria[0].statistic == pytest.approx(0.02)
    older = make_report({"fgsm": 90, "pgd(steps=10)": 80}, worst=80)
    assert not (now >= Threshold(eps=0.1, max_drop=0.05, baseline=older))


def _paired_report(bits: str) -> RobustnessReport:
    """One attack whose per-sample outcomes are ``bits`` ("1" robust), worst case equal."""
    n, k = len(bits), bits.count("1")
    row = dataclasses.replace(_result("pgd", 0.1, k, n, n), robust_samples=bits)
    wc = WorstCase(eps=0.1, robust_accuracy=k / n, ci_low=row.ci_low, ci_high=row.ci_high,
                   n=n, attacks=["pgd"], broken_by={"pgd": n - k}, robust_samples=bits,
                   norm="linf")
    return RobustnessReport(clean_accuracy=1.0, n_samples=n, results=[row], worst_case=[wc],
                            provenance={"dataset": {"name": "mnist"}})


@pytest.mark.parametrize(("lost", "gained", "rule", "passes"), [
    (9, 0, "upper", False),  # 0.69 -> 0.60, every loss real: p = 0.002
    (9, 0, "point", False),
    (12, 5, "upper", True),  # 0.69 -> 0.62: drop 0.07, but p = 0.07: churn, not a trend
    (12, 5, "point", False),
    (3, 1, "upper", True),  # drop 0.02 <= max_drop
    (0, 0, "point", True),
])
def test_paired_regression_judges_the_samples_that_changed(lost: int, gained: int, rule: str,
                                                           passes: bool) -> None:
    base_bits = ["1"] * 69 + ["0"] * 31
    now_bits = list(base_bits)
    for i in range(lost):
        now_bits[i] = "0"
    for i in range(gained):
        now_bits[69 + i] = "1"
    base, now = _paired_report("".join(base_bits)), _paired_report("".join(now_bits))
    verdict = now >= Threshold(eps=0.1, max_drop=0.05, baseline=base, rule=rule)
    assert bool(verdict) is passes
    paired = verdict.criteria[0].paired
    assert paired is not None and (paired.lost, paired.gained, paired.n) == (lost, gained, 100)
    assert verdict.criteria[0].statistic == pytest.approx((lost - gained) / 100)
    assert f"paired on the same 100 samples: {lost} lost, {gained} gained" in verdict.explain()


def test_threshold_with_the_reflected_operator_only() -> None:
    threshold = Threshold(robust_accuracy=0.5, eps=0.1)
    assert (threshold <= REPORT).passed
    with pytest.raises(TypeError):
        _ = REPORT >= 0.5  # type: ignore[operator]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"robust_accuracy": 1.5}, "The 'robust_accuracy' parameter of Threshold must be a finite "
                               "float in the range [0, 1]. Got 1.5 instead."),
    ({"robust_accuracy": 0.5, "rule": "lower"},
     "The 'rule' parameter of Threshold must be one of 'upper', 'point'. Got 'lower'"),
    ({"eps": 0.1}, "The 'robust_accuracy' parameter of Threshold must be given (or max_drop"),
    ({"robust_accuracy": 0.5, "eps": -0.1}, "The 'eps' parameter of Threshold must be"),
    ({"max_drop": 0.1, "baseline": "0.7"}, "The 'baseline' parameter of Threshold must be a "
                                           "robust accuracy or a RobustnessReport. Got str"),
])
def test_threshold_validates_its_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        Threshold(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


# -- building gates from user input ---------------------------------------------------------


def _gate(values: dict[str, object], **defaults: object) -> Gate:
    return gate_from_mapping(values, owner="the marker", default_name="g",
                             defaults=GateDefaults(**defaults),  # type: ignore[arg-type]
                             base_dir=Path("/project"))


@pytest.mark.parametrize(("values", "message"), [
    ({"eps": 0.1, "robust_acc": 0.5},
     "the marker got an unknown key 'robust_acc' (did you mean 'robust_accuracy'?)"),
    ({"eps": [0.1, 0.2], "robust_accuracy": 0.5},
     "The 'eps' parameter of the marker must be a single float"),
    ({"robust_accuracy": 0.5}, "The 'eps' parameter of the marker must be a float"),
    ({"eps": 0.1, "robust_accuracy": 0.5, "rule": "strict"},
     "The 'rule' parameter of the marker must be one of 'upper', 'point'"),
    ({"eps": 0.1, "robust_accuracy": 0.5, "budget": "huge"},
     "The 'budget' parameter of the marker must be one of 'fast', 'standard'"),
    ({"eps": 0.1, "robust_accuracy": 0.5, "n": 0},
     "The 'n' parameter of the marker must be an int in the range [1, inf). Got 0"),
    ({"eps": 0.1, "robust_accuracy": 0.5, "attacks": ["pgd(stepz=3)"]},
     "attack 'pgd(stepz=3)' is invalid: The 'stepz' parameter of PGD"),
    ({"eps": 0.1, "robust_accuracy": 0.5, "attacks": ["fgsm", "fgsm"]},
     "a list without duplicates"),
    ({"thresholds": [{"eps": 0.1, "robust": 0.5}]},
     "the marker thresholds[0] got an unknown key 'robust' (did you mean 'robust_accuracy'?)"),
    ({"eps": 0.1, "robust_accuracy": 0.5, "model": 3},
     "The 'model' parameter of the marker must be a checkpoint path, an ensemble directory, "
     "'pkg.module:factory' or a torch.nn.Module. Got int instead."),
])
def test_bad_gate_settings_name_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(GateConfigError) as info:
        _gate(values)
    assert message in str(info.value)


def test_gate_settings_merge_defaults_and_resolve_paths() -> None:
    gate = _gate({"model": "model/m.safetensors", "data": "data/x.npz", "eps": 0.1,
                  "thresholds": [Threshold(robust_accuracy=0.2, eps=0.3, attack="fgsm"),
                                 {"eps": 0.2, "robust_accuracy": 0.3}]},
                 budget="standard", seed=3, max_drop=0.02)
    assert gate.model == Path("/project/model/m.safetensors")
    assert gate.data == "/project/data/x.npz"
    assert gate.eps == [0.1, 0.2, 0.3]
    assert gate.attack_specs == BUDGETS["standard"].attacks
    assert gate.sample_size == BUDGETS["standard"].n and gate.seed == 3
    # eps alone records figures and compares them with the baseline at the tolerance
    assert gate.thresholds[0].robust_accuracy is None and gate.thresholds[0].max_drop == 0.02


@pytest.mark.parametrize(("name", "canonical"), [
    (" MNIST ", "mnist"),
    ("Fashion-MNIST", "fashion-mnist"),
    ("idx:data/full", "idx:/project/data/full"),
    ("IDX: /abs/dir ", "idx:/abs/dir"),
    ("idx:", "idx:"),
    ("sets/x.NPZ", "/project/sets/x.NPZ"),
    ("/abs/y.npz", "/abs/y.npz"),
    (" cifar ", "cifar"),  # unknown: load_dataset rejects it
])
def test_dataset_names_have_one_spelling(name: str, canonical: str) -> None:
    assert canonical_dataset_name(name, Path("/project")) == canonical
    assert _gate({"data": name, "eps": 0.1, "robust_accuracy": 0.5}).data == canonical


def test_relative_dataset_paths_default_to_the_working_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert canonical_dataset_name("idx:sub") == f"idx:{tmp_path.resolve() / 'sub'}"
    assert canonical_dataset_name("x.npz") == str(tmp_path.resolve() / "x.npz")


# -- running gates on a real trained model --------------------------------------------------


@pytest.fixture(scope="session")
def checkpoint(trained_convnet: nn.Module, mnist: Dataset,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's trained ConvNet saved as a checkpoint, as `robustness train` would."""
    path = tmp_path_factory.mktemp("gate-model") / "model.safetensors"
    return save_checkpoint(trained_convnet, path, CheckpointMeta(
        architecture="convnet", input_shape=mnist.input_shape, num_classes=mnist.num_classes,
        classes=mnist.classes, dataset="mnist", seed=0))


def test_gate_on_a_trained_checkpoint_passes_and_records_figures(checkpoint: Path) -> None:
    gate = _gate({"model": str(checkpoint), "eps": 0.1, "robust_accuracy": 0.3, "n": N,
                  "thresholds": [{"eps": 0.1, "attack": "fgsm", "robust_accuracy": 0.99}]})
    result = gate.run()
    assert result.report is not None and result.report.n_samples == N
    assert result.report.provenance["dataset"]["name"] == "mnist"
    assert [v.passed for v in result.verdicts] == [True, False]
    assert result.status == "failed"
    assert "Robustness gate 'g' FAILED: threshold robust_accuracy >= 0.990 at eps 0.1 (fgsm)" \
        in result.explain()
    doc = results_document([result])
    json.dumps(doc, allow_nan=False)  # the artifact is strict JSON
    assert doc["summary"] == {"gates": 1, "passed": 0, "failed": 1, "regressed": 0,
                              "unverified": 0, "error": 0}
    assert {f["attack"] for f in doc["gates"][0]["figures"]} == {WORST, "fgsm", "pgd(steps=10)"}


def test_data_named_like_the_checkpoints_uses_its_training_split(
        trained_convnet: nn.Module, mnist: Dataset, tmp_path: Path) -> None:
    # Any spelling of the training dataset gets the split of the training seed (another
    # seed would put training images in the test sample); other data gets seed 0.
    path = save_checkpoint(trained_convnet, tmp_path / "model.safetensors", CheckpointMeta(
        architecture="convnet", input_shape=mnist.input_shape, num_classes=mnist.num_classes,
        classes=mnist.classes, dataset="mnist", seed=3))
    held_out = load_dataset("mnist", seed=3).x_test[:50]
    assert not held_out.equal(mnist.x_test[:50])
    for data in (None, " MNIST "):
        gate = Gate(name="g", thresholds=(Threshold(robust_accuracy=0.5, eps=0.1),),
                    model=path, data=data, n=50)
        assert gate.prepare().x.equal(held_out), data


def test_untrained_model_is_a_config_error_not_a_robustness_failure(mnist: Dataset) -> None:
    gate = _gate({"eps": 0.1, "robust_accuracy": 0.5, "n": 200})
    untrained = build_model("convnet", mnist.input_shape, mnist.num_classes, seed=0)
    with pytest.raises(GateConfigError, match="the model looks untrained: clean accuracy"):
        gate.run(untrained, mnist)


def test_data_that_does_not_fit_the_model_is_a_config_error(checkpoint: Path,
                                                            trained_convnet: nn.Module) -> None:
    gate = _gate({"model": str(checkpoint), "data": "digits", "eps": 0.1,
                  "robust_accuracy": 0.5})
    with pytest.raises(GateConfigError, match=r"its images have shape \(1, 8, 8\) but the "
                                              r"checkpoint expects \(1, 28, 28\)"):
        gate.prepare()
    # A bare module has no declared shape: the forward pass itself refuses the images.
    bare = _gate({"eps": 0.1, "robust_accuracy": 0.5})
    with pytest.raises(GateConfigError, match=r"cannot process the data's images of shape "
                                              r"\(1, 8, 8\)"):
        bare.prepare(trained_convnet, load_dataset("digits"))


@pytest.mark.parametrize(("values", "message"), [
    ({}, "no model was given"),
    ({"model": "/nonexistent/model.safetensors"},
     "the model is not a usable trained checkpoint: No checkpoint at"),
    ({"model": str(EXAMPLE / "gates.toml")}, "is not a readable safetensors checkpoint"),
])
def test_missing_or_unreadable_model_is_a_config_error(values: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(GateConfigError) as info:
        _gate({**values, "eps": 0.1, "robust_accuracy": 0.5}).prepare()
    assert "Robustness gate 'g' is misconfigured" in str(info.value)
    assert message in str(info.value)


def test_baseline_round_trip_and_regressions(checkpoint: Path, tmp_path: Path) -> None:
    gate = _gate({"model": str(checkpoint), "eps": 0.1, "robust_accuracy": 0.3, "n": N,
                  "thresholds": [{"eps": 0.1, "attack": "fgsm", "max_drop": 0.05}]})
    prepared = gate.prepare()
    baseline = Baseline(tmp_path / "baseline.json")
    assert not baseline.exists and gate.evaluate(prepared, baseline=baseline).compared is False
    first = gate.evaluate(prepared, baseline=baseline)
    baseline.record(first)
    baseline.save()

    stored = Baseline(tmp_path / "baseline.json")
    same = gate.evaluate(prepared, baseline=stored)  # seeded: the same figures again
    assert same.compared and same.status == "passed" and not same.regressions

    doc = json.loads((tmp_path / "baseline.json").read_text())
    for fig in doc["gates"]["g"]["figures"]:
        fig["robust_accuracy"] = min(1.0, fig["robust_accuracy"] + 0.3)
    doc["gates"]["g"]["setup"]["n"] = 1000
    (tmp_path / "baseline.json").write_text(json.dumps(doc))
    result = gate.evaluate(prepared, baseline=Baseline(tmp_path / "baseline.json"))
    assert result.status == "regressed"
    assert [(r.attack, r.max_drop) for r in result.regressions] == [(WORST, 0.0), ("fgsm", 0.05)]
    error = RobustnessRegression(result.regressions, tmp_path / "baseline.json")
    text = str(error)
    assert text.startswith("2 robustness regression(s) against the baseline")
    assert "g: fgsm robust accuracy at linf eps 0.1 dropped from" in text
    assert "baseline recorded with a different setup (n 1000 -> 100)" in text
    assert "by point estimates" in text

    # Same setup: the stored per-sample outcomes make the comparison paired. Nine samples
    # that were robust in the baseline are broken now, none gained: a real regression.
    fresh = Baseline(tmp_path / "fresh.json")
    fresh.record(first)
    doc = json.loads(fresh.save().read_text())
    worst = next(f for f in doc["gates"]["g"]["figures"] if f["attack"] == WORST)
    bits = list(worst["robust_samples"])
    flipped = [i for i, b in enumerate(bits) if b == "0"][:9]
    for i in flipped:
        bits[i] = "1"
    worst["robust_samples"] = "".join(bits)
    worst["robust_accuracy"] += len(flipped) / len(bits)
    (tmp_path / "baseline.json").write_text(json.dumps(doc))
    paired = gate.evaluate(prepared, baseline=Baseline(tmp_path / "baseline.json"))
    assert paired.status == "regressed"
    assert [r.attack for r in paired.regressions] == [WORST]
    assert f"paired on the same {N} samples: 9 lost, 0 gained" in paired.regressions[0].message()

    # The same net drop with churn (20 lost, 11 gained: p = 0.07) passes under rule
    # 'upper', and the result says so instead of passing silently.
    assert first.report is not None
    bits = list(first.report.worst(0.1).robust_samples)
    ones = [i for i, b in enumerate(bits) if b == "1"][:11]
    zeros = [i for i, b in enumerate(bits) if b == "0"][:20]
    assert len(ones) == 11 and len(zeros) == 20
    for i in ones:
        bits[i] = "0"
    for i in zeros:
        bits[i] = "1"
    worst["robust_samples"] = "".join(bits)
    worst["robust_accuracy"] = bits.count("1") / len(bits)
    (tmp_path / "baseline.json").write_text(json.dumps(doc))
    churn = gate.evaluate(prepared, baseline=Baseline(tmp_path / "baseline.json"))
    assert churn.status == "passed" and not churn.regressions
    assert "unconfirmed drop:" in churn.findings_text()
    assert "20 lost, 11 gained" in churn.findings_text()
    assert "rule 'point' would fail it" in churn.findings_text()


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot be read as JSON"),
    ('{"gates": {}}', "is not a robustness baseline"),
    ('{"format": "robustness-baseline", "version": 9, "gates": {}}', "has version 9"),
])
def test_corrupt_baseline_is_a_config_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(GateConfigError, match=message):
        Baseline(path)


# -- import cost ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["robustness.gates", "robustness.gates.pytest_plugin",
                                    "robustness.gates.cli", "robustness.cli"])
def test_gates_plugin_and_cli_import_without_torch(module: str) -> None:
    # The plugin is loaded in every pytest run of every project that installs the harness.
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'scipy', 'numpy') "
            "if m in sys.modules]; assert not heavy, f'imported {heavy}'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


# -- robustness gate ------------------------------------------------------------------------


@pytest.fixture
def project(checkpoint: Path, tmp_path: Path) -> Path:
    """The example project with the session's trained model in place."""
    shutil.copytree(EXAMPLE, tmp_path / "project")
    (tmp_path / "project" / "model").mkdir()
    shutil.copy(checkpoint, tmp_path / "project" / "model" / "model.safetensors")
    return tmp_path / "project"


def _run_gate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["gate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_gate_command_passes_and_writes_junit_and_json(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_gate([str(project / "gates.toml"), "--n", str(N), "--json",
                                str(project / "g.json"), "--junit-xml",
                                str(project / "g.xml")], capsys)
    assert code == 0, out + err
    assert "PASSED: convnet-mnist: worst case @ eps 0.1" in out
    assert "robustness-baseline.json does not exist; nothing compared" in out
    suite = ET.parse(project / "g.xml").getroot().find("testsuite")
    assert suite is not None
    assert suite.attrib["tests"] == "1" and suite.attrib["failures"] == "0"
    case = suite.find("testcase")
    assert case is not None and case.attrib["name"] == "convnet-mnist"
    doc = json.loads((project / "g.json").read_text())
    assert doc["passed"] and doc["gates"][0]["n"] == N
    assert [v["rule"] for v in doc["gates"][0]["verdicts"]] == ["upper", "upper"]


def test_gate_command_fails_with_exit_1_and_explains(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = project / "gates.toml"
    toml.write_text(toml.read_text().replace("robust_accuracy = 0.45", "robust_accuracy = 0.95"))
    code, out, _ = _run_gate([str(toml), "--n", str(N), "--rule", "point", "--junit-xml",
                              str(project / "g.xml")], capsys)
    assert code == 1
    assert "FAILED: convnet-mnist" in out
    assert "threshold robust_accuracy >= 0.950 failed by" in out
    assert "rule 'point': fail when the point estimate is below the threshold" in out
    failure = ET.parse(project / "g.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.attrib["type"] == "GateFailure"
    assert "| worst case" in (failure.text or "")


def test_gate_command_regression_against_the_baseline_exits_1(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(project / "gates.toml")
    assert _run_gate([toml, "--n", str(N), "--update-baseline"], capsys)[0] == 0
    path = project / "robustness-baseline.json"
    doc = json.loads(path.read_text())
    for fig in doc["gates"]["convnet-mnist"]["figures"]:
        fig["robust_accuracy"] = min(1.0, fig["robust_accuracy"] + 0.3)
    path.write_text(json.dumps(doc))
    code, out, _ = _run_gate([toml, "--n", str(N), "--junit-xml", str(project / "g.xml")],
                             capsys)
    assert code == 1
    assert "RobustnessRegression: 2 robustness regression(s)" in out
    failure = ET.parse(project / "g.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.attrib["type"] == "RobustnessRegression"


@pytest.mark.parametrize(("edit", "message"), [
    (("eps = 0.1\nrobust_accuracy = 0.45", "eps = 0.1\nrobust_acuracy = 0.45"),
     "got an unknown key 'robust_acuracy' (did you mean 'robust_accuracy'?)"),
    (('model = "model/model.safetensors"', 'model = "missing/model.safetensors"'),
     "the model is not a usable trained checkpoint: No checkpoint at"),
    (('data = "mnist"', 'data = "digits"'), "the data does not match the model"),
    (("[defaults]", "[defaults]\nn = 0"),
     "The 'n' parameter of {toml} [defaults] must be an int in the range [1, inf). Got 0"),
    (("[[gate]]", "[[gate]\n"), "is not valid TOML"),
])
def test_gate_command_config_errors_exit_2(project: Path, capsys: pytest.CaptureFixture[str],
                                           edit: tuple[str, str], message: str) -> None:
    toml = project / "gates.toml"
    assert edit[0] in toml.read_text()
    toml.write_text(toml.read_text().replace(*edit, 1))
    code, _, err = _run_gate([str(toml), "--junit-xml", str(project / "g.xml")], capsys)
    assert code == 2
    assert message.format(toml=toml) in err
    assert "Traceback" not in err
    error = ET.parse(project / "g.xml").getroot().find("testsuite/testcase/error")
    assert error is not None and error.attrib["type"] == "GateConfigError"


def test_gate_command_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["gate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--json", "--junit-xml", "--budget", "--n", "--seed", "--rule",
                   "--max-drop", "--baseline", "--update-baseline", "--gate"):
        assert option in out


def test_thresholds_on_the_worst_case_name_the_norm_when_attacks_mix_norms() -> None:
    """Issue 11.6: an L2 and an L-inf attack at "0.3" have separate worst cases."""
    linf, l2 = _result("genetic", 0.3, 10, 100, 90), _result("pgd-l2", 0.3, 80, 100, 90)
    l2 = dataclasses.replace(l2, norm="l2")

    def wc(row: AttackResult) -> WorstCase:
        return WorstCase(eps=0.3, robust_accuracy=row.robust_accuracy, ci_low=row.ci_low,
                         ci_high=row.ci_high, n=100, attacks=[row.attack],
                         broken_by={row.attack: 90 - round(row.robust_accuracy * 100)},
                         norm=row.norm)

    report = RobustnessReport(clean_accuracy=0.9, n_samples=100, results=[linf, l2],
                              worst_case=[wc(linf), wc(l2)])
    with pytest.raises(GateConfigError, match=r"'norm' parameter of Threshold must be given"
                                              r".*several norms there \(linf, l2\)"):
        _ = report >= Threshold(robust_accuracy=0.5, eps=0.3)
    assert report >= Threshold(robust_accuracy=0.5, eps=0.3, norm="l2")
    verdict = report >= Threshold(robust_accuracy=0.5, eps=0.3, norm="linf")
    assert not verdict and verdict.figure.robust_accuracy == 0.1
    assert "at linf eps 0.3" in verdict.explain()


@pytest.mark.parametrize("n", [1, 5])
def test_gate_command_refuses_a_sample_too_small_for_its_threshold(
        project: Path, capsys: pytest.CaptureFixture[str], n: int) -> None:
    """Issue 11.2: n = 5 used to pass with every image broken (upper bound 0.434 >= 0.40)."""
    toml = project / "gates.toml"
    text = toml.read_text().replace("eps = 0.1\nrobust_accuracy = 0.45",
                                    "eps = 0.3\nrobust_accuracy = 0.40")
    text = text.split("[[gate.thresholds]]")[0]
    toml.write_text(text)
    code, out, err = _run_gate([str(toml), "--n", str(n)], capsys)
    assert code == 2, out + err
    assert f"n = {n} cannot show robust accuracy >= 0.40 at 95% confidence" in out + err
    assert "need at least n = 6" in out + err
    assert "looks untrained" not in out + err


@pytest.mark.parametrize(("key", "option", "value"), [("n", "--n", "50"), ("seed", "--seed", "3")])
def test_a_command_line_override_that_a_gate_would_silently_beat_is_a_conflict(
        project: Path, capsys: pytest.CaptureFixture[str], key: str, option: str,
        value: str) -> None:
    """Issue 12.4: `--n 100000` with a gate's own `n = 100` used to run 100 images, exit 0."""
    toml = project / "gates.toml"
    toml.write_text(toml.read_text().replace('name = "convnet-mnist"\n',
                                             f'name = "convnet-mnist"\n{key} = 7\n', 1))
    code, out, err = _run_gate([str(toml), option, value, "--json", str(project / "g.json")],
                               capsys)
    assert code == 2, out + err
    assert f"sets {key} = 7, which conflicts with {option} {value}" in out + err
    code, out, err = _run_gate([str(toml), option, "7", "--gate", "nosuch"], capsys)
    assert "conflicts with" not in out + err and "names no gate" in out + err  # agreeing: fine
