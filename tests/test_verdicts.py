"""Verdicts that can be trusted (issue 11): gates respect their own sanity checks and their
sample size, and every attack must be seen to work before its number counts."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from attacks.base import Attack, RunResult
from attacks.registry import AttackSpec
from robustness.core.validation import ParameterError
from robustness.data import Dataset
from robustness.evaluation import evaluate
from robustness.gates import Gate, GateConfigError, Threshold, results_document
from robustness.gates.artifacts import junit_xml

N = 100


class Quantised(nn.Module):
    """``model(round(x * 4) / 4)``: zero input gradient almost everywhere (gradient masking)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


@pytest.fixture(scope="module")
def quantised(trained_convnet: nn.Module) -> nn.Module:
    return Quantised(trained_convnet).eval()


def test_a_gate_whose_checks_raise_findings_is_unverified_not_passed(
        quantised: nn.Module, mnist: Dataset) -> None:
    gate = Gate("quantised", (Threshold(robust_accuracy=0.9, eps=0.3),), n=N)
    result = gate.run(quantised, mnist)
    assert all(v.passed for v in result.verdicts)  # the number alone would pass...
    assert result.status == "unverified"  # ...but the checks say it cannot be trusted
    checks = {f.check for f in result.blocking_findings}
    assert {"input-gradients", "large-eps"} <= checks
    assert "UNVERIFIED by findings: " in result.summary()
    assert "is UNVERIFIED" in result.explain() and "input-gradients" in result.explain()
    doc = results_document([result])
    assert doc["passed"] is False and doc["summary"]["unverified"] == 1
    assert set(doc["gates"][0]["blocking_findings"]) == checks
    failure = junit_xml([result], suite="s").find("testsuite/testcase/failure")
    assert failure is not None and failure.attrib["type"] == "UnverifiedGate"
    assert "large-eps" in (failure.text or "")

    # Accepting the findings by name is explicit, and printed.
    accepted = Gate("quantised", (Threshold(robust_accuracy=0.9, eps=0.3),), n=N,
                    allow_findings=tuple(sorted(checks))).run(quantised, mnist)
    assert accepted.status == "passed"
    assert "accepted findings: " in accepted.summary()
    assert "(allow_findings)" in accepted.findings_text()


def test_allow_findings_names_must_be_real_checks() -> None:
    from robustness.gates import GateDefaults, gate_from_mapping

    with pytest.raises(GateConfigError, match=r"'allow_findings' parameter of g must be check "
                                              r"names among .*did you mean 'input-gradients'"):
        gate_from_mapping({"eps": 0.1, "robust_accuracy": 0.5,
                           "allow_findings": ["input-gradient"]}, owner="g", default_name="g",
                          defaults=GateDefaults(), base_dir=__import__("pathlib").Path("."))


@pytest.mark.parametrize(("threshold", "n", "need"), [
    (Threshold(robust_accuracy=0.4, eps=0.1), 5, 6),
    (Threshold(robust_accuracy=0.1, eps=0.1), 30, 35),
    (Threshold(robust_accuracy=0.9, eps=0.1, rule="point"), 30, 35),
])
def test_a_sample_too_small_for_the_threshold_is_a_configuration_error(
        trained_convnet: nn.Module, mnist: Dataset, threshold: Threshold, n: int,
        need: int) -> None:
    gate = Gate("small", (threshold,), n=n)
    with pytest.raises(GateConfigError) as info:
        gate.prepare(trained_convnet, mnist)
    text = str(info.value)
    assert f"n = {n} cannot show robust accuracy >= " in text
    assert f"need at least n = {need}" in text
    Gate("enough", (threshold,), n=need).prepare(trained_convnet, mnist)  # no error


def test_a_tiny_sample_is_not_called_an_untrained_model(trained_convnet: nn.Module,
                                                        mnist: Dataset) -> None:
    gate = Gate("tiny", (Threshold(max_drop=0.05, eps=0.1),), n=1)
    with pytest.raises(GateConfigError) as info:
        gate.prepare(trained_convnet, mnist)
    assert "n = 1 is too small to tell a trained model" in str(info.value)
    assert "looks untrained" not in str(info.value)


class _Idle(Attack):
    """Returns its inputs without ever calling the model."""

    name = "idle"

    def __init__(self, *, eps: float = 0.3, seed: int = 0) -> None:
        self._init_common(norm="linf", eps=eps, targeted=False, seed=seed)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        zeros = torch.zeros(len(x), dtype=torch.int64)
        return RunResult(x_adv=x.clone(), queries=zeros, gradient_evaluations=zeros)


def test_an_attack_that_never_queries_the_model_is_an_error(trained_convnet: nn.Module,
                                                            mnist: Dataset) -> None:
    report = evaluate(trained_convnet, mnist, [AttackSpec("idle", factory=_Idle)], [0.3], n=N)
    assert report.result("idle", 0.3).robust_accuracy == report.clean_accuracy
    errors = [f for f in report.problems("error") if f.check == "attack-inactive"]
    assert len(errors) == 1 and "idle made no model queries" in errors[0].message


@pytest.mark.torchattacks
@pytest.mark.parametrize(("spec", "check"), [
    ("torchattacks:PGD(alpha=0.0,random_start=False,steps=5)", "attack-no-effect"),
    ("torchattacks:PGD(alpha=0.0,steps=5)", "weaker-than-reference"),
    # One step that moves (so not "no effect") but by nothing: judged against FGSM.
    ("torchattacks:PGD(alpha=1e-09,random_start=False,steps=1)", "weaker-than-reference"),
])
def test_a_library_attack_that_does_nothing_is_an_error_and_cannot_pass_a_gate(
        trained_convnet: nn.Module, mnist: Dataset, spec: str, check: str) -> None:
    report = evaluate(trained_convnet, mnist, [spec], [0.3], n=N)
    assert report.result(spec, 0.3).robust_accuracy > 0.9  # reads as robust...
    assert check in {f.check for f in report.problems("error")}, report.findings
    # ...and a gate adds the reference PGD to the worst case, which breaks the model.
    gate = Gate("lib", (Threshold(robust_accuracy=0.5, eps=0.3),), attacks=(spec,), n=N)
    assert gate.attack_specs == (spec, "pgd(steps=20)")
    result = gate.run(trained_convnet, mnist)
    assert result.status == "failed"
    assert result.report is not None and result.report.worst(0.3).robust_accuracy < 0.2
    removed = Gate("lib", (Threshold(robust_accuracy=0.5, eps=0.3),), attacks=(spec,), n=N,
                   reference_attack=False)
    assert removed.attack_specs == (spec,)


@pytest.mark.parametrize(("spec", "key"), [
    ("torchattacks:PGD(steps=-1)", "steps"),
    ("foolbox:LinfPGD(steps=-1)", "steps"),
    ("torchattacks:CW(c=-1,steps=10)", "c"),
    ("torchattacks:Square(n_queries=-5)", "n_queries"),
    ("foolbox:L2CarliniWagnerAttack(binary_search_steps=0)", "binary_search_steps"),
])
def test_library_arguments_outside_their_documented_range_are_refused(spec: str,
                                                                      key: str) -> None:
    from attacks.registry import parse_attack_spec

    if spec.startswith("torchattacks:"):
        pytest.importorskip("torchattacks")
    with pytest.raises(ParameterError, match=rf"The '{key}' parameter of \w+\.\w+ must be"):
        parsed = parse_attack_spec(spec)
        parsed.build(0.3 if parsed.bounded() else None)


def test_the_gate_reference_attack_covers_every_norm_its_attacks_use() -> None:
    both = Gate("g", (Threshold(robust_accuracy=0.5, eps=0.3, norm="linf"),),
                attacks=("fgsm", "fgsm(norm='l2')"))
    assert both.attack_specs == ("fgsm", "fgsm(norm='l2')", "pgd(steps=20)",
                                 "pgd-l2(steps=20)")
    own = Gate("g", (Threshold(robust_accuracy=0.5, eps=0.3),), attacks=("pgd(steps=5)",))
    assert own.attack_specs == ("pgd(steps=5)",)  # our PGD is the reference already
    assert json.dumps(own.setup())  # the setup a baseline stores names every attack
