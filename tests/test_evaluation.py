"""Evaluation engine: honest numbers, sanity checks that catch gradient masking, report schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import robustness
from attacks.registry import parse_attack_specs
from reports.markdown import report_markdown, write_report
from robustness.core.validation import ParameterError
from robustness.data import Dataset
from robustness.evaluation import evaluate, worst_case
from robustness.evaluation.report import (
    SCHEMA_VERSION,
    ReportSchemaError,
    RobustnessReport,
    validate_report,
)

N = 120  # test images per evaluation: enough for the checks, fast on 2 cores


GENETIC = "genetic(generations=200)"  # bounded so that unbreakable samples stay cheap


class SaturatedLogits(nn.Module):
    """A 'defence' that masks gradients: logits pushed through a hard, saturated softmax.

    Its predictions equal the base model's, but the input gradient is exactly zero almost
    everywhere, so gradient attacks stall. Its scores are flat too, so even a score-based
    attack has nothing to climb: only the gradient and large-eps checks can expose it.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.base(x) * 1e4, dim=1) * 50.0


class QuantisedInput(nn.Module):
    """Bit-depth reduction in front of the model (Athalye et al. 2018's 'shattered gradients').

    ``round`` has a zero derivative, so every input gradient is exactly zero; the scores
    still move with the input, so a score-based attack succeeds where gradients stall.
    """

    def __init__(self, base: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.base, self.levels = base, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(torch.round(x * self.levels) / self.levels)


class Noisy(nn.Module):
    """A randomized model: fresh noise on every forward pass."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + 0.01 * torch.randn(x.shape[0], 10)


class Probabilities(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.base(x), dim=1)


@pytest.fixture(scope="module")
def undefended_report(trained_convnet: nn.Module, mnist: Dataset) -> RobustnessReport:
    # eps 0.2 and 0.3: the genetic attack spends its whole budget on every sample it cannot
    # break; at eps 0.1 that was 95 of 116 (68 s), at 0.2 it is 36 of 116 (36 s).
    return evaluate(trained_convnet, mnist, ["fgsm", "pgd(steps=20)", GENETIC],
                    [0.2, 0.3], n=N, seed=0)


def test_undefended_convnet_is_not_flagged(undefended_report: RobustnessReport) -> None:
    report = undefended_report
    assert report.problems("warning") == [], report_markdown(report)
    assert report.clean_accuracy > 0.9
    # PGD-20 at 0.3 breaks an undefended MNIST ConvNet almost completely.
    assert report.result("pgd(steps=20)", 0.3).robust_accuracy <= 0.05
    assert report.result("fgsm", 0.2).robust_accuracy > report.result("fgsm", 0.3).robust_accuracy
    kinds = {r.attack: r.threat_model for r in report.results}
    assert kinds == {"fgsm": "white-box", "pgd(steps=20)": "white-box", GENETIC: "black-box"}


def test_shattered_gradients_are_flagged_and_the_worst_case_exposes_them(
        trained_convnet: nn.Module, mnist: Dataset) -> None:
    masked = QuantisedInput(trained_convnet).eval()
    report = evaluate(masked, mnist, ["fgsm", "pgd(steps=20)", GENETIC], [0.3], n=N, seed=0)
    flagged = {f.check for f in report.problems("warning")}
    assert {"input-gradients", "gradient-free-beats-gradient", "large-eps"} <= flagged, flagged
    # The headline number would have lied: PGD alone says "robust", the worst case does not.
    assert report.result("pgd(steps=20)", 0.3).robust_accuracy > 0.5
    assert report.worst(0.3).robust_accuracy < 0.3


def test_saturated_logits_are_flagged(trained_convnet: nn.Module, mnist: Dataset) -> None:
    report = evaluate(SaturatedLogits(trained_convnet).eval(), mnist, ["fgsm", "pgd(steps=10)"],
                      [0.3], n=N, seed=0)
    flagged = {f.check for f in report.problems("warning")}
    assert {"input-gradients", "large-eps"} <= flagged, flagged


def test_randomized_and_probability_models_are_flagged(trained_convnet: nn.Module,
                                                       mnist: Dataset) -> None:
    noisy = evaluate(Noisy(trained_convnet).eval(), mnist, ["fgsm"], [0.1], n=40)
    assert "non-determinism" in {f.check for f in noisy.problems("error")}
    probs = evaluate(Probabilities(trained_convnet).eval(), mnist, ["fgsm"], [0.1], n=40)
    assert "probability-outputs" in {f.check for f in probs.problems("warning")}


def test_worst_case_is_never_above_any_attack(undefended_report: RobustnessReport) -> None:
    for eps in undefended_report.eps_values:
        worst = undefended_report.worst(eps).robust_accuracy
        for r in undefended_report.results:
            if r.eps == eps:
                assert worst <= r.robust_accuracy
        # Every sample classified correctly but not robust was broken first by exactly one.
        broken = round(undefended_report.clean_accuracy * N) - round(worst * N)
        assert sum(undefended_report.worst(eps).broken_by.values()) == broken


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_worst_case_property(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 40))
    k = data.draw(st.integers(1, 5))
    masks = st.lists(st.booleans(), min_size=n, max_size=n)
    correct = torch.tensor(data.draw(masks))
    robust = [torch.tensor(data.draw(masks)) & correct for _ in range(k)]
    w = worst_case(0.1, correct, [(f"a{i}", r) for i, r in enumerate(robust)])
    for r in robust:
        assert w.robust_accuracy <= int(r.sum()) / n
    assert w.ci_low <= w.robust_accuracy <= w.ci_high
    assert sum(w.broken_by.values()) == int(correct.sum()) - round(w.robust_accuracy * n)


def test_report_json_validates_and_round_trips(undefended_report: RobustnessReport,
                                               tmp_path: Path) -> None:
    path = write_report(undefended_report, tmp_path)
    assert (tmp_path / "report.md").read_text().startswith("# Robustness report")
    data = json.loads(path.read_text())
    validate_report(data)
    for key in ("clean_accuracy", "n_samples", "results", "worst_case", "findings",
                "provenance", "schema_version"):
        assert key in data
    row = data["results"][0]
    for key in ("attack", "eps", "norm", "threat_model", "robust_accuracy", "ci_low", "ci_high",
                "success_rate", "median_perturbation", "queries", "seconds"):
        assert key in row
    assert isinstance(row["eps"], float) and isinstance(row["robust_accuracy"], float)
    assert RobustnessReport.load(tmp_path) == undefended_report
    assert RobustnessReport.load(path) == undefended_report  # the file itself, too
    assert set(data["provenance"]) >= {"model", "dataset", "seed", "versions", "seconds"}


def test_schema_rejects_a_report_with_numbers_as_strings(undefended_report: RobustnessReport
                                                         ) -> None:
    data = undefended_report.to_dict()
    data["results"][0]["eps"] = "8/255"
    with pytest.raises(ReportSchemaError, match=r"results/0/eps"):
        RobustnessReport.from_dict(data)


def test_schema_rejects_unknown_versions_and_fields(undefended_report: RobustnessReport
                                                    ) -> None:
    assert undefended_report.schema_version == SCHEMA_VERSION
    for version in (0, SCHEMA_VERSION + 1, str(SCHEMA_VERSION), None):
        data = undefended_report.to_dict() | {"schema_version": version}
        with pytest.raises(ReportSchemaError, match=r"at schema_version: "):
            RobustnessReport.from_dict(data)
    data = undefended_report.to_dict()
    data["results"][0]["wall_time"] = 1.0
    with pytest.raises(ReportSchemaError, match=r"at results/0: .*'wall_time' was unexpected"):
        validate_report(data)
    data = undefended_report.to_dict()
    del data["worst_case"][0]["broken_by"]
    with pytest.raises(ReportSchemaError, match=r"at worst_case/0: 'broken_by' is a required"):
        validate_report(data)


@pytest.fixture(scope="module")
def weak_source(mnist: Dataset) -> nn.Module:
    """A LeNet trained for 2 epochs: a transfer source that gets some test images wrong."""
    from robustness.models import build_model
    from robustness.train import train

    source = build_model("lenet", mnist.input_shape, mnist.num_classes, seed=1)
    train(source, mnist.x_train, mnist.y_train, epochs=2, seed=1, progress=False)
    return source.eval()


def test_transfer_evaluation_is_labelled_and_weaker_than_white_box(
        trained_convnet: nn.Module, weak_source: nn.Module, mnist: Dataset) -> None:
    report = evaluate(trained_convnet, mnist, ["pgd(steps=10)"], [0.2], n=N,
                      source_model=weak_source, checks=False)
    transfer = report.result("pgd(steps=10)", 0.2)
    assert transfer.threat_model == "transfer"
    white = evaluate(trained_convnet, mnist, ["pgd(steps=10)"], [0.2], n=N, checks=False)
    assert white.result("pgd(steps=10)", 0.2).threat_model == "white-box"
    # Measured: 0.56 transferred from the 2-epoch LeNet, 0.07 white-box. Attacking the
    # target itself while calling it transfer would make the two equal.
    assert transfer.robust_accuracy > white.result("pgd(steps=10)", 0.2).robust_accuracy + 0.2


def test_transfer_set_is_the_textbook_fgsm_of_every_source_image(
        trained_convnet: nn.Module, weak_source: nn.Module, mnist: Dataset) -> None:
    """Issue 11.4: images the source gets wrong are perturbed too, not passed on clean."""
    x, y = mnist.x_test[:N], mnist.y_test[:N]
    x_req = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(weak_source(x_req), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_req)
    x_adv = (x + 0.2 * grad.sign()).clamp(0, 1)
    with torch.no_grad():
        robust = (trained_convnet(x).argmax(1) == y) & (trained_convnet(x_adv).argmax(1) == y)
        source_wrong = weak_source(x).argmax(1) != y
    # The case that used to be wrong: the target is right on an image the source gets
    # wrong; the standard transfer set perturbs it anyway.
    assert int((source_wrong & (trained_convnet(x).argmax(1) == y)).sum()) >= 1
    report = evaluate(trained_convnet, mnist, ["fgsm"], [0.2], n=N,
                      source_model=weak_source, checks=False)
    assert report.robust_mask("fgsm", 0.2) == robust.tolist()


def test_package_level_entry_points() -> None:
    assert robustness.evaluate is evaluate
    assert robustness.RobustnessReport is RobustnessReport


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"attacks": []}, r"'eps' parameter of evaluate must be an empty list when attacks is "
                      r"empty"),
    ({"attacks": "fgsm"}, r"'attacks' parameter of evaluate must be a list of attack specs"),
    ({"attacks": ["nope"]}, r"'spec' parameter of make_attack must be one of"),
    ({"eps": []}, r"'eps' parameter of evaluate must be a non-empty list"),
    ({"eps": [-0.1]}, r"'eps' parameter of evaluate must be a finite budget > 0"),
    ({"eps": [0.0, 0.1]}, r"'eps' parameter of evaluate must be a finite budget > 0 \(eps 0 is "
                          r"no attack"),
    ({"eps": [float("nan")]}, r"'eps' parameter of evaluate must be a finite budget"),
    ({"data": (torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64))},
     r"non-empty batch"),
    ({"data": (torch.rand(4, 1, 28, 28), torch.zeros(3, dtype=torch.int64))},
     r"one label per image \(4\)"),
    ({"data": (torch.rand(4, 1, 28, 28), torch.full((4,), 12))}, r"labels in \[0, 9\]"),
])
def test_bad_input_is_named(trained_convnet: nn.Module, mnist: Dataset, kwargs: dict,
                            match: str) -> None:
    args = {"data": mnist, "attacks": ["fgsm"], "eps": [0.1], **kwargs}
    n = None if "data" in kwargs else 10  # the whole user-given sample
    with pytest.raises(ParameterError, match=match):
        evaluate(trained_convnet, args["data"], args["attacks"], args["eps"], n=n)


def test_a_clean_only_evaluation_has_no_attack_rows(trained_convnet: nn.Module,
                                                   mnist: Dataset) -> None:
    """evaluate(model, data, [], []): clean accuracy (and per-sample correctness) only, e.g.
    on a fixed set of adversarial examples crafted earlier."""
    report = evaluate(trained_convnet, mnist, [], [], n=50)
    correct = (trained_convnet.eval()(mnist.x_test[:50]).argmax(1) == mnist.y_test[:50])
    assert report.results == [] and report.worst_case == [] and report.n_samples == 50
    assert report.clean_samples == "".join("1" if c else "0" for c in correct.tolist())
    assert report.clean_accuracy == pytest.approx(float(correct.float().mean()))


def test_attack_spec_parsing() -> None:
    assert parse_attack_specs("fgsm, pgd(steps=20,step_size=0.01),torchattacks:CW(c=1)") == [
        "fgsm", "pgd(steps=20,step_size=0.01)", "torchattacks:CW(c=1)"]
    with pytest.raises(ParameterError, match="'attacks' parameter"):
        parse_attack_specs("pgd(steps=20")


def test_each_norm_has_its_own_worst_case_and_checks(trained_convnet: nn.Module,
                                                      mnist: Dataset) -> None:
    """Issue 11.6: L2 0.3 and L-inf 0.3 are different threat models, never one worst case."""
    attacks = ["pgd-l2(steps=10)", "genetic(generations=40)"]
    report = evaluate(trained_convnet, mnist, attacks, [0.3], n=60)
    assert [(w.norm, w.attacks) for w in report.worst_case] == [
        ("l2", ["pgd-l2(steps=10)"]), ("linf", ["genetic(generations=40)"])]
    for w in report.worst_case:
        assert w.robust_samples == report.result(w.attacks[0], 0.3).robust_samples
    # The L-inf genetic attack is far stronger than L2 PGD at "0.3" (a tiny L2 budget);
    # that is no sign of gradient masking.
    assert report.result("genetic(generations=40)", 0.3).robust_accuracy < \
        report.result("pgd-l2(steps=10)", 0.3).robust_accuracy - 0.3
    assert not [f for f in report.findings if f.check == "gradient-free-beats-gradient"]
    with pytest.raises(KeyError, match=r"several worst cases at eps 0\.3, one per norm"):
        report.worst(0.3)
    assert report.worst(0.3, "linf").attacks == ["genetic(generations=40)"]
    again = RobustnessReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report


def test_reports_before_schema_3_get_the_norm_of_their_attacks(
        undefended_report: RobustnessReport) -> None:
    data = undefended_report.to_dict()
    data["schema_version"] = 2
    for w in data["worst_case"]:
        del w["norm"]
    loaded = RobustnessReport.from_dict(data)
    assert [w.norm for w in loaded.worst_case] == [w.norm for w in undefended_report.worst_case]
    assert {w.norm for w in loaded.worst_case} == {"linf"}
