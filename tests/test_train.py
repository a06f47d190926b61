"""Training: deterministic under a seed, really learns, adversarial hook, input validation."""

from __future__ import annotations

import pytest
import torch

from attacks.gradient import FGSM
from robustness.core.validation import ParameterError
from robustness.data import Dataset
from robustness.models import build_model
from robustness.train import accuracy, attack_hook, train


def _fit(data: Dataset, seed: int, **kwargs: object) -> torch.nn.Module:
    model = build_model("mlp", data.input_shape, data.num_classes, seed=seed)
    train(model, data.x_train, data.y_train, epochs=2, seed=seed, progress=False,
          **kwargs)  # type: ignore[arg-type]
    return model


def test_same_seed_gives_identical_weights(digits: Dataset) -> None:
    a, b = _fit(digits, 3), _fit(digits, 3)
    c = _fit(digits, 4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_learns_and_leaves_global_rng_alone(digits: Dataset) -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    before = accuracy(model, digits.x_test, digits.y_test)
    history = train(model, digits.x_train, digits.y_train, epochs=10, seed=0, progress=False)
    assert torch.equal(torch.rand(3), expected)
    after = accuracy(model, digits.x_test, digits.y_test)
    assert before < 0.3 < 0.9 < after
    assert history.loss[-1] < history.loss[0]
    assert len(history.seconds) == 10
    assert model.training  # the mode it was handed in


def test_adversarial_hook_is_used_and_makes_fgsm_harder(digits: Dataset) -> None:
    calls = []
    fgsm = FGSM(eps=0.2)

    def adversary(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return attack_hook(fgsm)(model, x, y)

    plain = _fit(digits, 0)
    robust = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    train(robust, digits.x_train, digits.y_train, epochs=6, seed=0, progress=False,
          adversary=adversary)
    assert sum(calls) == 6 * len(digits.x_train)
    x, y = digits.x_test, digits.y_test
    assert fgsm(robust, x, y).robust_accuracy(y) > fgsm(plain, x, y).robust_accuracy(y) + 0.1


def test_adadelta_with_label_smoothing_trains(digits: Dataset) -> None:
    """The original experiment's recipe: Adadelta lr 0.1, label smoothing on the baseline."""
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    history = train(model, digits.x_train, digits.y_train, epochs=14, lr=0.1,
                    optimizer="adadelta", label_smoothing=0.1, seed=0, progress=False)
    assert history.loss[-1] < history.loss[0]
    assert accuracy(model, digits.x_test, digits.y_test) > 0.8
    with pytest.raises(ParameterError, match="'optimizer' parameter of train"):
        train(model, digits.x_train, digits.y_train, optimizer="sgd", progress=False)


def test_adversarial_training_perturbs_inputs_the_model_gets_wrong(digits: Dataset) -> None:
    """Issue 11.4: FGSM training must not train on clean copies of misclassified inputs."""
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0).eval()
    x, y = digits.x_test[:100], digits.y_test[:100]
    with torch.no_grad():
        wrong = model(x).argmax(1) != y  # untrained: most of them
    assert int(wrong.sum()) > 50
    x_adv = attack_hook(FGSM(eps=0.2))(model, x, y)
    moved = (x_adv - x).flatten(1).abs().amax(1)
    assert bool((moved[wrong] > 0.1).all())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epochs": 0}, r"'epochs' parameter of train must be an int in the range \[1, 1000000\]"),
    ({"batch_size": -3}, r"'batch_size' parameter of train"),
    ({"lr": float("nan")}, r"'lr' parameter of train must be a finite float"),
    ({"adversarial_weight": 1.5}, r"'adversarial_weight' parameter of train"),
    ({"adversary": 3}, r"'adversary' parameter of train must be a callable"),
])
def test_bad_training_arguments(digits: Dataset, kwargs: dict, match: str) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    with pytest.raises(ParameterError, match=match):
        train(model, digits.x_train, digits.y_train, progress=False, **kwargs)


def test_bad_training_data(digits: Dataset) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    x, y = digits.x_train, digits.y_train
    with pytest.raises(ParameterError, match=r"'x' parameter of train must be pixel values in"):
        train(model, x * 2, y, progress=False)
    with pytest.raises(ParameterError, match=r"'y' parameter of train must be a 1-d tensor of"):
        train(model, x, y[:-1], progress=False)
    with pytest.raises(ParameterError, match=r"free of NaN"):
        train(model, torch.full_like(x, float("nan")), y, progress=False)
