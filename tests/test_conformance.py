"""The conformance suite: every attack passes it, and each check catches what it names.

Good attacks (ours and adapted) run every check as a separate test case. Each
deliberately broken attack must fail exactly the check it violates; most of them
bypass the :class:`Attack` template, which would otherwise repair the flaw.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from collections.abc import Iterator
from typing import ClassVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attacks.base import AdversarialBatch, Attack, RunResult
from attacks.conformance import check_attack, conformance_checks
from attacks.gradient import FGSM, PGD
from attacks.registry import make_attack
from robustness.core.validation import ParameterError

GOOD = {
    "fgsm": {"eps": 0.2},
    "pgd": {"eps": 0.2, "steps": 10},
    "pgd-l2": {"eps": 1.5, "steps": 10},
    "torchattacks:PGD": {"eps": 0.2, "alpha": 0.05, "steps": 10},
    "foolbox:LinfPGD": {"eps": 0.2, "abs_stepsize": 0.05, "steps": 10},
    "genetic": {"eps": 0.2, "generations": 20, "population": 6},
}
# Only the torchattacks adapter needs the optional library; every other attack runs always.
GOOD_SPECS = [pytest.param(spec, marks=pytest.mark.torchattacks)
              if spec.startswith("torchattacks:") else spec for spec in GOOD]


@pytest.fixture(scope="module")
def batch32(attack_batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 32 test images and labels."""
    x, y = attack_batch
    return x[:32], y[:32]


@pytest.fixture
def scratch_model(trained_convnet: nn.Module) -> nn.Module:
    """A private copy of the trained model, for attacks that damage what they are given."""
    return copy.deepcopy(trained_convnet)


def test_conformance_checks_are_named() -> None:
    assert conformance_checks() == [
        "returns_adversarial_batch", "outputs_valid_images", "respects_budget",
        "success_is_honest", "norm_is_honest", "input_unchanged", "deterministic",
        "model_restored", "silent", "rejects_invalid_input"]


@pytest.mark.parametrize("check", conformance_checks())
@pytest.mark.parametrize("spec", GOOD_SPECS)
def test_attack_conforms(trained_convnet: nn.Module, batch32: tuple[torch.Tensor, torch.Tensor],
                         spec: str, check: str) -> None:
    check_attack(make_attack(spec, **GOOD[spec]), trained_convnet, *batch32, checks=[check])


def test_targeted_attack_conforms(trained_convnet: nn.Module,
                                  batch32: tuple[torch.Tensor, torch.Tensor]) -> None:
    check_attack(PGD(eps=0.3, steps=10, targeted=True), trained_convnet, *batch32)


def test_minimisation_attack_conforms_without_a_budget(
        trained_convnet: nn.Module, batch32: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch32[0][:8], batch32[1][:8]
    check_attack(make_attack("foolbox:LinfDeepFoolAttack", steps=10), trained_convnet, x, y)


@settings(max_examples=8, deadline=None)
@given(eps=st.floats(0.0, 0.5), norm=st.sampled_from(["linf", "l2"]))
def test_fgsm_conforms_for_any_eps(trained_convnet: nn.Module,
                                   batch32: tuple[torch.Tensor, torch.Tensor], eps: float,
                                   norm: str) -> None:
    check_attack(FGSM(eps=eps, norm=norm), trained_convnet, batch32[0][:8], batch32[1][:8],
                 checks=["respects_budget", "norm_is_honest", "success_is_honest"])


def test_check_attack_leaves_the_model_as_it_found_it(
        scratch_model: nn.Module, batch32: tuple[torch.Tensor, torch.Tensor]) -> None:
    scratch_model.train()
    scratch_model.classifier.eval()
    modes = [m.training for m in scratch_model.modules()]
    check_attack(FGSM(eps=0.1), scratch_model, *batch32, checks=["model_restored"])
    assert [m.training for m in scratch_model.modules()] == modes


def test_check_attack_rejects_unknown_check_names(
        trained_convnet: nn.Module, batch32: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(ParameterError, match=r"'checks' parameter of check_attack"):
        check_attack(FGSM(eps=0.1), trained_convnet, *batch32, checks=["honest"])


# --- deliberately broken attacks --------------------------------------------------


class _Wrapper:
    """Calls FGSM honestly, then misbehaves: bypasses the template's protections."""

    eps = 0.1
    norm = "linf"
    targeted = False

    def __init__(self) -> None:
        self.inner = FGSM(eps=self.eps)

    def __repr__(self) -> str:
        return type(self).__name__

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdversarialBatch:
        return self.inner(model, x, y)


class LiesAboutSuccess(_Wrapper):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdversarialBatch:
        batch = super().__call__(model, x, y)
        return dataclasses.replace(batch, success=torch.ones_like(batch.success))


class UnderstatesNorm(_Wrapper):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdversarialBatch:
        batch = super().__call__(model, x, y)
        return dataclasses.replace(batch, perturbation_norm=batch.perturbation_norm / 2)


class MutatesInput(_Wrapper):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdversarialBatch:
        batch = super().__call__(model, x, y)
        x[0].zero_()
        return batch


class LeavesTrainMode(_Wrapper):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdversarialBatch:
        batch = super().__call__(model, x, y)
        model.train()
        return batch


class ReturnsTuple(_Wrapper):
    def __call__(self, model: nn.Module, x: torch.Tensor,  # type: ignore[override]
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = super().__call__(model, x, y)
        return batch.x_adv, batch.success


class SkipsValidation(_Wrapper):
    """Clamps bad pixels silently instead of rejecting them."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdversarialBatch:
        x = torch.nan_to_num(x).clamp(0, 1)
        return super().__call__(model, x, y[: x.shape[0]].clamp(0, 9))


class ExceedsBudget(Attack):
    """Goes through the template (which does not clip): steps 2 * eps."""

    def __init__(self) -> None:
        self._init_common(norm="linf", eps=0.1, targeted=False, seed=0)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        return RunResult((x + 0.2 * torch.randn_like(x).sign()).clamp(0, 1), zeros, zeros)


class LeavesRange(ExceedsBudget):
    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        return RunResult(x + 0.05, zeros, zeros)


class Unseeded(ExceedsBudget):
    """Draws from a source the template cannot seed."""

    _draws: ClassVar[Iterator[int]] = itertools.count()

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        shift = 0.01 * (next(self._draws) % 5 + 1)
        return RunResult((x + shift).clamp(0, 1), zeros, zeros)


class DeclaredRandom(Unseeded):
    deterministic: ClassVar[bool] = False


class Prints(ExceedsBudget):
    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        print("attacking...")
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        return RunResult(x, zeros, zeros)


class ChangesWeights(ExceedsBudget):
    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        with torch.no_grad():
            next(model.parameters()).add_(1e-3)
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        return RunResult(x, zeros, zeros)


class AccumulatesGradients(ExceedsBudget):
    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        model(x).sum().backward()
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        return RunResult(x, zeros, zeros)


@pytest.mark.parametrize(("broken", "check"), [
    (ReturnsTuple(), "returns_adversarial_batch"),
    (LeavesRange(), "outputs_valid_images"),
    (ExceedsBudget(), "respects_budget"),
    (LiesAboutSuccess(), "success_is_honest"),
    (UnderstatesNorm(), "norm_is_honest"),
    (Unseeded(), "deterministic"),
    (MutatesInput(), "input_unchanged"),
    (LeavesTrainMode(), "model_restored"),
    (ChangesWeights(), "model_restored"),
    (AccumulatesGradients(), "model_restored"),
    (Prints(), "silent"),
    (SkipsValidation(), "rejects_invalid_input"),
], ids=repr)
def test_broken_attack_fails_its_check(scratch_model: nn.Module,
                                       batch32: tuple[torch.Tensor, torch.Tensor],
                                       broken: object, check: str) -> None:
    x, y = batch32[0].clone(), batch32[1].clone()
    with pytest.raises(AssertionError, match=re.escape(f"check '{check}' failed for {broken!r}")):
        check_attack(broken, scratch_model, x, y)  # type: ignore[arg-type]


@pytest.mark.parametrize("broken", [LiesAboutSuccess(), UnderstatesNorm(), LeavesTrainMode()],
                         ids=repr)
def test_broken_attack_passes_the_other_checks(trained_convnet: nn.Module,
                                               batch32: tuple[torch.Tensor, torch.Tensor],
                                               broken: _Wrapper) -> None:
    # The checks are specific: a flaw trips its own check and no other.
    flawed = {"LiesAboutSuccess": "success_is_honest", "UnderstatesNorm": "norm_is_honest",
              "LeavesTrainMode": "model_restored"}[repr(broken)]
    model = copy.deepcopy(trained_convnet)
    others = [c for c in conformance_checks() if c != flawed]
    check_attack(broken, model, *batch32, checks=others)


def test_declared_randomness_is_not_a_failure(scratch_model: nn.Module,
                                              batch32: tuple[torch.Tensor, torch.Tensor]) -> None:
    check_attack(DeclaredRandom(), scratch_model, *batch32, checks=["deterministic"])
