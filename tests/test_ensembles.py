"""Ensembles: sampling plans, aggregation rules, the Ensemble module, resumable training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import ensembles.members as members_mod
from attacks.genetic import GeneticAttack
from attacks.gradient import PGD
from ensembles import (
    Ensemble,
    EnsembleMismatchError,
    EnsembleResumeError,
    SamplingPlan,
    adaptive_attack,
    aggregate,
    load_members,
    member_seeds,
    train_members,
)
from robustness.core.validation import ParameterError
from robustness.data import Dataset
from robustness.models import build_model

# --- sampling plans -----------------------------------------------------------------


def test_bootstrap_draws_with_replacement_at_the_requested_size() -> None:
    plan = SamplingPlan("bootstrap")
    idx = plan.indices(5000, seed=3)
    assert idx.shape == (5000,) and idx.min() >= 0 and idx.max() < 5000
    unique = idx.unique().numel() / 5000
    # With replacement: expected unique fraction 1 - 1/e = 0.632.
    assert abs(unique - (1 - math.exp(-1))) < 0.02
    half = SamplingPlan("bootstrap", 0.5).indices(5000, seed=3)
    assert half.shape == (2500,) and half.unique().numel() < 2500


def test_subsample_draws_distinct_indices_and_uniform_takes_everything() -> None:
    idx = SamplingPlan("subsample").indices(1000, seed=1)
    assert idx.shape == (800,) and idx.unique().numel() == 800  # default 0.8, no repeats
    assert SamplingPlan("subsample", 0.25).indices(1001, seed=1).shape == (250,)
    assert torch.equal(SamplingPlan("uniform").indices(7, seed=9), torch.arange(7))


def test_seeds_are_reproducible_independent_of_ensemble_size_and_distinct() -> None:
    assert member_seeds(0, 4) == member_seeds(0, 4)
    seeds = [member_seeds(0, i) for i in range(50)]
    assert len({s.sample for s in seeds}) == 50 and len({s.init for s in seeds}) == 50
    assert member_seeds(1, 0) != member_seeds(0, 0)
    plan = SamplingPlan("bootstrap")
    a = plan.indices(300, member_seeds(7, 2).sample)
    assert torch.equal(a, plan.indices(300, member_seeds(7, 2).sample))
    assert not torch.equal(a, plan.indices(300, member_seeds(7, 3).sample))


@pytest.mark.parametrize("kind, fraction", [("bootstrap", 0.0), ("bootstrap", 1.5),
                                            ("subsample", -0.1), ("subsample", float("nan")),
                                            ("uniform", 0.5)])
def test_fraction_outside_the_unit_interval_is_refused(kind: str, fraction: float) -> None:
    with pytest.raises(ParameterError, match="'fraction' parameter of SamplingPlan"):
        SamplingPlan(kind, fraction)


def test_unknown_plan_and_plan_text() -> None:
    with pytest.raises(ParameterError, match=r"'kind'.*'bootstrap', 'subsample', 'uniform'"):
        SamplingPlan("bagging")
    assert SamplingPlan.parse("subsample:0.5") == SamplingPlan("subsample", 0.5)
    with pytest.raises(ParameterError, match=r"'fraction'.*Got 'half'"):
        SamplingPlan.parse("subsample:half")


# --- aggregation rules ----------------------------------------------------------------


def _logits(probs: list[list[list[float]]]) -> torch.Tensor:
    """Member logits whose softmax is ``probs`` (N, B, K)."""
    return torch.tensor(probs, dtype=torch.float64).log()


def test_mean_max_and_logit_mean_match_hand_computation() -> None:
    z = _logits([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]],
                 [[0.1, 0.1, 0.8], [0.4, 0.4, 0.2]],
                 [[0.3, 0.6, 0.1], [0.1, 0.2, 0.7]]])
    mean = aggregate(z, "mean").exp()
    assert torch.allclose(mean, torch.tensor([[1.0 / 3, 1.0 / 3, 1.0 / 3],
                                              [0.7 / 3, 1.1 / 3, 1.2 / 3]], dtype=z.dtype))
    # Sample 0: member 1 is most confident (0.8); sample 1: member 2 (0.7).
    best = aggregate(z, "max").exp()
    assert torch.allclose(best, torch.tensor([[0.1, 0.1, 0.8], [0.1, 0.2, 0.7]], dtype=z.dtype))
    logit_mean = aggregate(z, "logit_mean")
    assert torch.allclose(logit_mean, z.mean(0))
    expected0 = torch.tensor([0.6 * 0.1 * 0.3, 0.3 * 0.1 * 0.6, 0.1 * 0.8 * 0.1]) ** (1 / 3)
    assert torch.allclose(logit_mean[0].softmax(-1), (expected0 / expected0.sum()).double())


def test_vote_is_the_majority_with_deterministic_ties() -> None:
    z = _logits([[[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.4, 0.35, 0.25]],
                 [[0.1, 0.1, 0.8], [0.1, 0.6, 0.3], [0.2, 0.5, 0.3]],
                 [[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.25, 0.35, 0.4]]])
    vote = aggregate(z, "vote").exp()
    # Sample 0: votes (2, 0, 1) -> class 0 even though member 1 is surest of class 2.
    # Sample 1: votes (1, 1, 1) -> tie, broken by the mean probability: (0.3, 0.433, 0.267).
    # Sample 2: votes (1, 1, 1); mean (0.283, 0.4, 0.317) -> class 1.
    assert vote.argmax(-1).tolist() == [0, 1, 1]
    counts = torch.tensor([[2, 0, 1], [1, 1, 1], [1, 1, 1]], dtype=z.dtype)
    mean = aggregate(z, "mean").exp()
    assert torch.allclose(vote, (counts + 0.5 * mean) / 3.5)
    assert torch.allclose(vote.sum(-1), torch.ones(3, dtype=z.dtype))
    # An exact tie of votes and mean goes to the lowest class index.
    tie = _logits([[[0.5, 0.5, 0.0 + 1e-300]], [[0.5, 0.5, 1e-300]]])
    assert aggregate(tie, "vote").argmax(-1).tolist() == [0]


def test_vote_stays_finite_for_overconfident_members() -> None:
    # float32 probabilities of these classes underflow to exactly 0.
    z = torch.tensor([[[0.0, -200.0, -300.0]], [[0.0, -250.0, -400.0]]])
    x = z.clone().requires_grad_(True)
    out = aggregate(x, "vote")
    assert torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([2])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_max_ties_go_to_the_first_member() -> None:
    z = _logits([[[0.9, 0.1]], [[0.1, 0.9]]])
    assert torch.allclose(aggregate(z, "max").exp(), torch.tensor([[0.9, 0.1]], dtype=z.dtype))


@pytest.mark.parametrize("aggregation", ["mean", "max", "vote", "logit_mean"])
def test_an_ensemble_of_identical_members_equals_the_member(aggregation: str) -> None:
    member = build_model("mlp", (1, 8, 8), 10, seed=1).eval()
    x = torch.rand(32, 1, 8, 8)
    ensemble = Ensemble([member] * 5, aggregation).eval()
    with torch.no_grad():
        expected = member(x).softmax(-1)
        got = ensemble(x).softmax(-1)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    if aggregation != "vote":  # vote returns vote shares, not the member's probabilities
        assert torch.allclose(got, expected, atol=1e-6)


# --- the Ensemble module ------------------------------------------------------------------


def test_bad_ensembles_are_refused_with_the_parameter_named() -> None:
    mlp = build_model("mlp", (1, 8, 8), 10, seed=0)
    with pytest.raises(ParameterError, match=r"'members'.*at least 1 member"):
        Ensemble([])
    with pytest.raises(ParameterError, match=r"'aggregation'.*'mean', 'max', 'vote'"):
        Ensemble([mlp], "median")
    with pytest.raises(EnsembleMismatchError, match="number of classes: member 0 has 10, "
                                                    "member 1 has 5"):
        Ensemble([mlp, build_model("mlp", (1, 8, 8), 5, seed=0)])
    with pytest.raises(EnsembleMismatchError, match=r"shape \(1, 8, 8\). Member 1 takes "
                                                    r"\(1, 28, 28\)"):
        Ensemble([mlp, build_model("mlp", (1, 28, 28), 10, seed=0)])
    with pytest.raises(ParameterError, match="'members\\[1\\]'"):
        Ensemble([mlp, "not a module"])  # type: ignore[list-item]


def test_members_without_declared_shapes_are_checked_on_forward() -> None:
    a = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    b = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    ensemble = Ensemble([a, b])
    with pytest.raises(EnsembleMismatchError, match="member 0 returns 10, member 1 returns 3"):
        ensemble(torch.rand(2, 1, 8, 8))


def test_member_accuracy_and_predictions_agree_with_the_members(digits: Dataset) -> None:
    ensemble = train_members(digits, 3, plan="subsample", architecture="mlp", epochs=3,
                             progress=False, precision="fp32")
    preds = ensemble.member_predictions(digits.x_test)
    assert preds.shape == (3, digits.x_test.shape[0])
    accs = ensemble.member_accuracy(digits.x_test, digits.y_test)
    for m, member, acc in zip(range(3), ensemble.members, accs, strict=True):
        with torch.no_grad():
            own = member(digits.x_test).argmax(-1)
        assert torch.equal(own, preds[m])
        assert acc == pytest.approx(float((own == digits.y_test).float().mean()))
    assert min(accs) > 0.8
    assert [e["resumed"] for e in ensemble.training_log] == [False] * 3
    assert all(e["sample_size"] == round(0.8 * digits.x_train.shape[0])
               for e in ensemble.training_log)


def test_end_to_end_pgd_attacks_the_mean_and_max_ensembles(digits: Dataset) -> None:
    ensemble = train_members(digits, 3, plan="bootstrap", architecture="mlp", epochs=5,
                             progress=False, precision="fp32")
    x, y = digits.x_test[:100], digits.y_test[:100]
    for aggregation in ("mean", "max", "logit_mean"):
        model = ensemble.with_aggregation(aggregation)
        batch = PGD(eps=0.3, steps=20, seed=0)(model, x, y)
        clean = float((model(x).argmax(-1) == y).float().mean())
        assert clean > 0.85 and batch.robust_accuracy(y) < 0.2, aggregation


def test_adaptive_attack_charges_each_sample_with_its_worst_strategy(digits: Dataset) -> None:
    ensemble = train_members(digits, 3, plan="uniform", architecture="mlp", epochs=5,
                             aggregation="max", progress=False, precision="fp32")
    x, y = digits.x_test[:80], digits.y_test[:80]
    attack = PGD(eps=0.1, steps=10, seed=0)
    result = adaptive_attack(attack, ensemble, x, y,
                             strategies=("end_to_end", "logit_mean", "members"))
    assert set(result.by_strategy) == {"end_to_end", "logit_mean", "members"}
    # Per sample, robust only if no strategy broke it: rebuilt from separate runs.
    separate = [adaptive_attack(attack, ensemble, x, y, strategies=[s]).correct
                for s in ("end_to_end", "logit_mean", "members")]
    assert torch.equal(result.correct, torch.stack(separate).all(0))
    assert result.robust_accuracy == pytest.approx(float(result.correct.float().mean()))
    alone = PGD(eps=0.1, steps=10, seed=0)(ensemble, x, y).robust_accuracy(y)
    assert result.by_strategy["end_to_end"] == pytest.approx(alone)
    # The returned inputs are what the verdict says: within budget, and exactly the
    # samples marked robust are still classified correctly.
    assert float((result.x_adv - x).abs().max()) <= 0.1 + 1e-6
    with torch.no_grad():
        assert torch.equal(ensemble(result.x_adv).argmax(-1) == y, result.correct)
    # A score-based attack needs no gradient, so it attacks a vote ensemble too.
    vote = ensemble.with_aggregation("vote")
    genetic = adaptive_attack(GeneticAttack(eps=0.3, generations=30, seed=0), vote, x[:20],
                              y[:20], strategies=["end_to_end"])
    assert genetic.robust_accuracy < 1.0
    with pytest.raises(ParameterError, match="'strategies' parameter of adaptive_attack"):
        adaptive_attack(attack, ensemble, x, y, strategies=["transfer"])


# --- training and resuming ------------------------------------------------------------------


def test_bad_training_arguments_are_named(digits: Dataset) -> None:
    with pytest.raises(ParameterError, match="'n_members' parameter of train_members"):
        train_members(digits, 0, architecture="mlp", progress=False)
    with pytest.raises(ParameterError, match="'fraction'"):
        train_members(digits, 2, plan="bootstrap:1.2", architecture="mlp", progress=False)
    with pytest.raises(ParameterError, match="'precision'"):
        train_members(digits, 2, architecture="mlp", precision="fp8", progress=False)


def _weights(ensemble: Ensemble) -> list[torch.Tensor]:
    return [p.detach().clone() for p in ensemble.parameters()]


def test_an_interrupted_run_resumes_without_training_any_member_twice(
        digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = dict(plan="bootstrap", architecture="mlp", epochs=2, seed=5, progress=False,
                  precision="fp32")
    reference = train_members(digits, 3, **kwargs)  # type: ignore[arg-type]

    real_train = members_mod.train
    calls: list[int] = []

    def killed_on_second_member(*args: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during member 1
        return real_train(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(members_mod, "train", killed_on_second_member)
    with pytest.raises(KeyboardInterrupt):
        train_members(digits, 3, out_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    saved = sorted(p.name for p in (tmp_path / "members").iterdir())
    assert saved == ["member-000.safetensors"]  # nothing half-written

    calls.clear()
    monkeypatch.setattr(members_mod, "train", lambda *a, **k: (calls.append(1),
                                                                real_train(*a, **k))[1])
    resumed = train_members(digits, 3, out_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert len(calls) == 2  # members 1 and 2 only
    assert [e["resumed"] for e in resumed.training_log] == [True, False, False]
    for a, b in zip(_weights(reference), _weights(resumed), strict=True):
        assert torch.equal(a, b)

    calls.clear()
    again = train_members(digits, 2, out_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert calls == [] and len(again) == 2  # a nested prefix costs nothing
    assert len(load_members(tmp_path)) == 3


def test_a_different_configuration_is_not_mixed_into_a_run(digits: Dataset,
                                                           tmp_path: Path) -> None:
    train_members(digits, 1, plan="bootstrap", architecture="mlp", epochs=1, out_dir=tmp_path,
                  progress=False, precision="fp32")
    with pytest.raises(EnsembleResumeError, match="differs in: epochs, plan"):
        train_members(digits, 1, plan="uniform", architecture="mlp", epochs=2,
                      out_dir=tmp_path, progress=False, precision="fp32")
