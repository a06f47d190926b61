"""torchattacks / foolbox adapters: oracles for our attacks and honest wrappers of theirs.

Everything runs on the really trained reference ConvNet (``trained_convnet``).
The libraries serve as oracles for our FGSM and PGD (as micrograd checks itself
against torch), and our template keeps their results honest.

foolbox is a declared dependency; torchattacks is optional, so the tests that need it
are marked ``torchattacks`` and skipped one by one (with the reason) without it.
Attacks in parameter lists are built inside the tests, never at collection time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from attacks.adapters import FoolboxAttack, QueryCounter, TorchattacksAttack
from attacks.base import AdversarialBatch, perturbation_norm
from attacks.gradient import FGSM, PGD
from robustness.core.modes import fast_layout
from robustness.core.validation import ParameterError

needs_torchattacks = pytest.mark.torchattacks
ADAPTERS: dict[str, type[TorchattacksAttack | FoolboxAttack]] = {
    "torchattacks": TorchattacksAttack, "foolbox": FoolboxAttack}

Build = Callable[[], TorchattacksAttack | FoolboxAttack]


def _built(spec: str, *expected: object, **kwargs: Any) -> pytest.ParameterSet:
    """A parameter set ``(build, *expected)``: ``build()`` makes the ``"library:Name"``
    adapter with ``kwargs`` inside the test (so a missing library cannot break collection);
    torchattacks cases carry the ``torchattacks`` marker."""
    library, name = spec.split(":")
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return pytest.param(lambda: ADAPTERS[library](name, **kwargs), *expected,
                        marks=[needs_torchattacks] if library == "torchattacks" else [],
                        id=f"{spec}({args})" if args else spec)


@pytest.fixture(scope="module")
def batch64(attack_batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 64 test images and labels."""
    x, y = attack_batch
    return x[:64], y[:64]


@pytest.fixture(scope="module")
def correct64(trained_convnet: nn.Module, batch64: tuple[torch.Tensor, torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Those of the 64 images the model classifies correctly."""
    x, y = batch64
    with torch.no_grad():
        ok = trained_convnet(x).argmax(1) == y
    return x[ok], y[ok]


def _predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


# --- our attacks against the libraries --------------------------------------------


@needs_torchattacks
def test_fgsm_matches_torchattacks(trained_convnet: nn.Module,
                                   correct64: tuple[torch.Tensor, torch.Tensor]) -> None:
    import torchattacks

    x, y = correct64
    ours = FGSM(eps=0.1)(trained_convnet, x, y).x_adv
    theirs = torchattacks.FGSM(trained_convnet, eps=0.1)(x, y)
    with fast_layout(trained_convnet, x) as x_fast:  # the layout our gradient attacks run in
        theirs_fast = torchattacks.FGSM(trained_convnet, eps=0.1)(x_fast, y)
    adapted = TorchattacksAttack("FGSM", eps=0.1)(trained_convnet, x, y).x_adv
    assert float((ours - theirs_fast).abs().max()) <= 1e-6
    assert torch.equal(adapted, theirs)


@needs_torchattacks
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_every_sample_perturbs_misclassified_inputs_like_torchattacks(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor],
        attack: str) -> None:
    """Issue 11.4: a transfer set perturbs every image, also those the source gets wrong."""
    import torchattacks

    x, y = attack_batch
    wrong = _predictions(trained_convnet, x) != y
    assert int(wrong.sum()) >= 3  # the 200 images include some the model gets wrong
    if attack == "fgsm":
        ours = FGSM(eps=0.1)
        theirs = torchattacks.FGSM(trained_convnet, eps=0.1)
    else:
        ours = PGD(eps=0.1, steps=5, step_size=0.02, random_start=False)
        theirs = torchattacks.PGD(trained_convnet, eps=0.1, alpha=0.02, steps=5,
                                  random_start=False)
    direct = ours(trained_convnet, x, y)
    if attack == "fgsm":  # attacking the model itself, a wrong input is already a success
        assert torch.equal(direct.x_adv[wrong], x[wrong])
    assert direct.already_misclassified is None
    batch = ours(trained_convnet, x, y, every_sample=True)
    with fast_layout(trained_convnet, x) as x_fast:  # the layout our gradient attacks run in
        reference = theirs(x_fast, y)
    assert float((batch.x_adv - reference).abs().max()) <= 1e-5
    assert bool((batch.perturbation_norm[wrong] > 0.05).all())
    assert torch.equal(batch.already_misclassified, wrong)
    assert bool((batch.gradient_evaluations == ours.steps).all())


# foolbox back-propagates into the weights too, which in channels_last torch warns about.
@pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")
def test_fgsm_matches_foolbox(trained_convnet: nn.Module,
                              correct64: tuple[torch.Tensor, torch.Tensor]) -> None:
    import foolbox

    x, y = correct64
    ours = FGSM(eps=0.1)(trained_convnet, x, y).x_adv
    fmodel = foolbox.PyTorchModel(trained_convnet, bounds=(0.0, 1.0))
    criterion = foolbox.criteria.Misclassification(y)
    _, theirs, _ = foolbox.attacks.FGSM()(fmodel, x, criterion, epsilons=0.1)
    with fast_layout(trained_convnet, x) as x_fast:  # the layout our gradient attacks run in
        _, theirs_fast, _ = foolbox.attacks.FGSM()(fmodel, x_fast, criterion, epsilons=0.1)
    adapted = FoolboxAttack("FGSM", eps=0.1)(trained_convnet, x, y).x_adv
    assert float((ours - theirs_fast).abs().max()) <= 1e-6
    assert torch.equal(adapted, theirs)


LIBRARY_PGD: dict[str, Callable[[float, float], TorchattacksAttack | FoolboxAttack]] = {
    "torchattacks": lambda eps, step: TorchattacksAttack("PGD", eps=eps, alpha=step, steps=10),
    "foolbox": lambda eps, step: FoolboxAttack("LinfPGD", eps=eps, abs_stepsize=step, steps=10),
}


@pytest.fixture(scope="module")
def our_pgd_accuracy(trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor]
                     ) -> Callable[[float], float]:
    """Robust accuracy of our PGD-10 (step eps / 4) on the 200 images, computed once per eps."""
    x, y = attack_batch

    @functools.cache
    def accuracy(eps: float) -> float:
        return PGD(eps=eps, steps=10, step_size=eps / 4)(trained_convnet, x, y).robust_accuracy(y)

    return accuracy


@pytest.mark.parametrize("eps", [0.1, 0.3])
@pytest.mark.parametrize("library", [pytest.param("torchattacks", marks=needs_torchattacks),
                                     "foolbox"])
def test_pgd_at_least_as_strong_as_libraries(trained_convnet: nn.Module,
                                             attack_batch: tuple[torch.Tensor, torch.Tensor],
                                             our_pgd_accuracy: Callable[[float], float],
                                             library: str, eps: float) -> None:
    # Same eps, steps and step size on 200 images; ours keeps the first successful
    # iterate, the libraries the last, so ours may only be stronger.
    x, y = attack_batch
    theirs = LIBRARY_PGD[library](eps, eps / 4)(trained_convnet, x, y).robust_accuracy(y)
    ours = our_pgd_accuracy(eps)
    assert ours <= theirs + 0.01, {"ours": ours, library: theirs}


def test_pgd40_breaks_the_undefended_model(trained_convnet: nn.Module,
                                           attack_batch: tuple[torch.Tensor, torch.Tensor]
                                           ) -> None:
    x, y = attack_batch
    batch = PGD(eps=0.3, steps=40, step_size=0.01)(trained_convnet, x, y)
    assert batch.robust_accuracy(y) <= 0.02


# --- adapted attacks --------------------------------------------------------------

ADAPTED = [
    pytest.param(TorchattacksAttack, "CW", {"c": 10.0, "steps": 30, "lr": 0.1}, "l2", None,
                 id="torchattacks:CW", marks=needs_torchattacks),
    pytest.param(TorchattacksAttack, "PGDL2", {"eps": 2.0, "alpha": 0.25, "steps": 10}, "l2",
                 2.0, id="torchattacks:PGDL2", marks=needs_torchattacks),
    pytest.param(FoolboxAttack, "LinfDeepFoolAttack", {"steps": 20}, "linf", None,
                 id="foolbox:LinfDeepFoolAttack"),
    pytest.param(FoolboxAttack, "L2CarliniWagnerAttack",
                 {"steps": 20, "binary_search_steps": 3, "stepsize": 0.05}, "l2", None,
                 id="foolbox:L2CarliniWagnerAttack"),
]


@pytest.mark.parametrize(("adapter", "name", "kwargs", "norm", "eps"), ADAPTED)
def test_adapted_attack_returns_honest_batch(
        trained_convnet: nn.Module, correct64: tuple[torch.Tensor, torch.Tensor],
        adapter: type, name: str, kwargs: dict[str, object], norm: str,
        eps: float | None) -> None:
    x, y = correct64[0][:32], correct64[1][:32]
    batch = adapter(name, **kwargs)(trained_convnet, x, y)
    assert isinstance(batch, AdversarialBatch)
    assert (batch.norm, batch.eps) == (norm, eps)
    pred = _predictions(trained_convnet, batch.x_adv)
    assert torch.equal(batch.success, pred != y)
    assert torch.allclose(batch.perturbation_norm, perturbation_norm(batch.x_adv - x, norm))
    assert batch.success_rate >= 0.5, batch.summary()
    assert bool((batch.queries > 0).all()) and bool((batch.gradient_evaluations > 0).all())
    assert float(batch.x_adv.min()) >= 0.0 and float(batch.x_adv.max()) <= 1.0


@pytest.mark.parametrize("build", [
    _built("torchattacks:PGD", eps=0.3, alpha=0.05, steps=10, targeted=True),
    _built("foolbox:LinfPGD", eps=0.3, abs_stepsize=0.05, steps=10, targeted=True),
])
def test_targeted_adapters_reach_the_target(trained_convnet: nn.Module,
                                            correct64: tuple[torch.Tensor, torch.Tensor],
                                            build: Build) -> None:
    x, y = correct64[0][:32], correct64[1][:32]
    target = (y + 3) % 10
    batch = build()(trained_convnet, x, y, target=target)
    pred = _predictions(trained_convnet, batch.x_adv)
    assert torch.equal(batch.success, pred == target)
    assert batch.success_rate >= 0.5, batch.summary()


@needs_torchattacks
def test_torchattacks_query_counts_match_the_steps(
        trained_convnet: nn.Module, correct64: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = correct64[0][:16], correct64[1][:16]
    ta = TorchattacksAttack("PGD", eps=0.1, steps=7)(trained_convnet, x, y)
    assert ta.queries.tolist() == [7] * 16 and ta.gradient_evaluations.tolist() == [7] * 16


def test_foolbox_query_counts_match_the_steps(
        trained_convnet: nn.Module, correct64: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = correct64[0][:16], correct64[1][:16]
    # foolbox adds one forward pass to check success on the clipped result.
    fb = FoolboxAttack("LinfPGD", eps=0.1, steps=7)(trained_convnet, x, y)
    assert fb.queries.tolist() == [8] * 16 and fb.gradient_evaluations.tolist() == [7] * 16


def test_query_counter_counts_rows_and_input_gradients() -> None:
    counter = QueryCounter(nn.Flatten())
    x = torch.rand(4, 1, 2, 2, requires_grad=True)
    counter(x).sum().backward()
    with torch.no_grad():
        counter(x[:2])
    assert (counter.rows, counter.gradient_rows) == (6, 4)
    queries, grads = counter.per_sample(4)
    assert queries.tolist() == [2] * 4 and grads.tolist() == [1] * 4


@pytest.mark.parametrize("build", [
    _built("torchattacks:CW", steps=3, targeted=True),
    _built("foolbox:GenAttack", eps=0.3, steps=3, targeted=True),
])
def test_library_attacks_leave_no_trace(trained_convnet: nn.Module,
                                        correct64: tuple[torch.Tensor, torch.Tensor],
                                        capsys: pytest.CaptureFixture[str], build: Build) -> None:
    # torchattacks' CW calls backward() and prints; foolbox's GenAttack draws from NumPy's
    # global RNG: weight gradients must not accumulate, the caller's NumPy RNG must not
    # move, and nothing may be printed.
    x, y = correct64[0][:8], correct64[1][:8]
    grads = [None if p.grad is None else p.grad.clone() for p in trained_convnet.parameters()]
    numpy_state = np.random.get_state()[1].copy()  # noqa: NPY002 - what the adapters restore
    build()(trained_convnet, x, y)
    for p, before in zip(trained_convnet.parameters(), grads, strict=True):
        assert p.requires_grad
        assert (p.grad is None and before is None) or torch.equal(p.grad, before)
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002
    assert capsys.readouterr() == ("", "")


def test_adapters_are_deterministic_under_their_seed(
        trained_convnet: nn.Module, correct64: tuple[torch.Tensor, torch.Tensor]) -> None:
    # foolbox's GenAttack draws from NumPy's global RNG; the adapter seeds it.
    x, y = correct64[0][:8], correct64[1][:8]
    attack = FoolboxAttack("GenAttack", eps=0.3, steps=3, targeted=True, seed=5)
    assert torch.equal(attack(trained_convnet, x, y).x_adv, attack(trained_convnet, x, y).x_adv)


# --- norms, eps and repr ----------------------------------------------------------


@pytest.mark.parametrize(("build", "norm", "eps"), [
    _built("torchattacks:PGD", "linf", 8 / 255),
    _built("torchattacks:PGDL2", "l2", 1.5, eps=1.5),
    _built("torchattacks:CW", "l2", None),
    _built("torchattacks:DeepFool", "l2", None),
    _built("torchattacks:OnePixel", "none", None),
    _built("torchattacks:APGD", "l2", 1.0, norm="L2", eps=1.0),
    _built("torchattacks:PGD", "l2", 1.0, norm="l2", eps=1.0),
    _built("foolbox:LinfPGD", "linf", 0.3, eps=0.3),
    _built("foolbox:L2CarliniWagnerAttack", "l2", None),
    _built("foolbox:L1PGD", "none", 5.0, eps=5.0),
    _built("foolbox:InversionAttack", "l2", None, distance="l2"),
    _built("foolbox:InversionAttack", "linf", None, norm="linf"),
])
def test_norm_and_eps_are_inferred(build: Build, norm: str, eps: float | None) -> None:
    attack = build()
    assert (attack.norm, attack.eps) == (norm, eps)


@needs_torchattacks
def test_torchattacks_repr_shows_the_library_arguments() -> None:
    assert repr(TorchattacksAttack("CW", c=1.0, steps=50)) == (
        "TorchattacksAttack('CW', c=1.0, steps=50, eps=None, norm='l2', targeted=False, seed=0)")


def test_foolbox_repr_shows_the_library_arguments() -> None:
    assert repr(FoolboxAttack("LinfPGD", eps=0.3, steps=10)) == (
        "FoolboxAttack('LinfPGD', steps=10, eps=0.3, norm='linf', targeted=False, seed=0)")


# --- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(("build", "match"), [
    _built("torchattacks:PDG", r"'name' parameter of TorchattacksAttack.*'PGD'"),
    _built("torchattacks:cw", r"did you mean 'CW'"),
    _built("foolbox:LinfPDG", r"'name' parameter of FoolboxAttack.*'LinfPGD'", eps=0.3),
    _built("torchattacks:PGD", r"'epsilon' parameter of torchattacks\.PGD.*did you mean 'eps'",
           epsilon=0.3),
    _built("torchattacks:PGD", r"'model' .* left out", model=nn.Flatten()),
    _built("foolbox:LinfPGD", r"'step' parameter of foolbox\.LinfPGD.*did you mean 'steps'",
           eps=0.3, step=3),
    _built("foolbox:VirtualAdversarialAttack", r"'steps' .* no default", eps=0.3),
    _built("foolbox:LinfPGD", r"'eps' .* fixed-epsilon"),
    _built("foolbox:InversionAttack", r"'distance' .* given"),
    _built("foolbox:InversionAttack", r"'distance' .* 'l0'", distance="l3"),
    _built("torchattacks:PGD", r"'eps' parameter of TorchattacksAttack", eps=-0.1),
    _built("foolbox:LinfPGD", r"'eps' parameter of FoolboxAttack", eps=float("nan")),
    _built("torchattacks:APGD", r"'norm' .* 'linf', 'l2'", norm="l1"),
    _built("torchattacks:PGD", r"'norm' parameter of TorchattacksAttack", norm="l1"),
])
def test_bad_names_and_kwargs_raise_parameter_error(build: Build, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        build()


@pytest.mark.parametrize(("build", "match"), [
    _built("torchattacks:DeepFool", r"'targeted' .* must be False", targeted=True),
    _built("foolbox:GenAttack", r"'targeted' .* must be True", eps=0.3),
])
def test_unsupported_mode_raises_parameter_error(trained_convnet: nn.Module,
                                                 correct64: tuple[torch.Tensor, torch.Tensor],
                                                 build: Build, match: str) -> None:
    x, y = correct64[0][:4], correct64[1][:4]
    attack = build()
    with pytest.raises(ParameterError, match=match):
        attack(trained_convnet, x, y)
