"""A conformance suite every attack must pass, ours and adapted alike.

``check_attack(attack, model, x, y)`` runs the attack as a user would and checks
the contract of :class:`~attacks.base.AdversarialBatch` from the outside: shapes
and dtypes, valid images within the budget, success and norms that the model and
the inputs confirm, determinism under the seed, no side effects on the inputs or
the model, no output, and bad inputs rejected with a :class:`ParameterError`.

Each check has a name (:func:`conformance_checks`), so a test suite can run them
as separate cases, in the spirit of scikit-learn's ``parametrize_with_checks``::

    @pytest.mark.parametrize("check", conformance_checks())
    def test_pgd_conforms(check, model, x, y):
        check_attack(PGD(eps=0.3, steps=10), model, x, y, checks=[check])

Checks work through the public call only, so they also catch objects that bypass
the :class:`~attacks.base.Attack` template.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attacks.base import NORMS, AdversarialBatch, AttackError, budget_ok, perturbation_norm
from robustness.core.modes import eval_mode, predict
from robustness.core.validation import ParameterError, invalid

# Two float32 computations of the same norm may differ in the last bits.
_NORM_RTOL = 1e-5
_NORM_ATOL = 1e-6


@dataclass(frozen=True)
class _Run:
    """One call of the attack and what it changed."""

    batch: Any  # AdversarialBatch if the attack conforms
    output: str  # everything written to stdout and stderr
    modes_before: list[bool]  # training flag of every submodule, in modules() order
    modes_after: list[bool]


@dataclass
class _Trial:
    """The attack under test and its inputs; runs the attack lazily, at most twice."""

    attack: Callable[..., Any]
    model: nn.Module
    x: torch.Tensor  # (N, C, H, W)
    y: torch.Tensor  # (N,)
    eps: float | None
    x_copy: torch.Tensor = field(init=False)
    y_copy: torch.Tensor = field(init=False)
    state: dict[str, torch.Tensor] = field(init=False)
    grads: list[torch.Tensor | None] = field(init=False)

    def __post_init__(self) -> None:
        self.x_copy = self.x.detach().clone()
        self.y_copy = self.y.detach().clone()
        self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.grads = [None if p.grad is None else p.grad.detach().clone()
                      for p in self.model.parameters()]

    @functools.cached_property
    def first(self) -> _Run:
        return self._run(self.x, start_in_train=True)

    @functools.cached_property
    def refusal(self) -> AttackError | None:
        """The :class:`~attacks.base.AttackError` the first run raised, if any."""
        try:
            self.first  # noqa: B018 (runs the attack once, cached)
        except AttackError as err:
            return err
        return None

    @functools.cached_property
    def second(self) -> _Run:
        # On a fresh copy, so that an attack that mutates its input fails only that check.
        return self._run(self.x_copy.clone(), start_in_train=False)

    def _run(self, x: torch.Tensor, *, start_in_train: bool) -> _Run:
        # Alternate train/eval over the submodules, so that a blanket model.train()
        # or model.eval() left behind changes some flag whichever way it goes. The two
        # runs use opposite patterns, so that single-module models are covered too.
        modules = list(self.model.modules())
        for i, m in enumerate(modules):
            m.training = (i % 2 == 0) == start_in_train
        before = [m.training for m in modules]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            batch = self.attack(self.model, x, self.y)
        return _Run(batch, out.getvalue() + err.getvalue(), before,
                    [m.training for m in modules])

    @property
    def bound(self) -> float | None:
        """The budget to check against: ``eps`` if given, else the attack's own."""
        if self.eps is not None:
            return self.eps
        return getattr(self.attack, "eps", getattr(self.first.batch, "eps", None))

    def predictions(self, x_adv: torch.Tensor) -> torch.Tensor:
        """The model's eval-mode predictions on ``x_adv`` (N, C, H, W) -> (N,)."""
        return predict(self.model, x_adv).argmax(1)


def _check_returns_adversarial_batch(t: _Trial) -> None:
    """An AdversarialBatch with per-sample fields of the right shape and dtype."""
    b, n = t.first.batch, t.x.shape[0]
    assert isinstance(b, AdversarialBatch), f"returned {type(b).__name__}, not AdversarialBatch"
    assert isinstance(b.x_adv, torch.Tensor) and b.x_adv.shape == t.x.shape, (
        f"x_adv has shape {_shape(b.x_adv)}, expected {tuple(t.x.shape)}")
    assert b.x_adv.dtype == t.x.dtype, f"x_adv has dtype {b.x_adv.dtype}, expected {t.x.dtype}"
    assert b.x_adv.grad_fn is None and not b.x_adv.requires_grad, (
        "x_adv is attached to an autograd graph; return it detached")
    for name, dtypes in (("success", (torch.bool,)), ("predictions", (torch.int64,)),
                         ("queries", (torch.int64,)), ("gradient_evaluations", (torch.int64,)),
                         ("perturbation_norm", (torch.float32, torch.float64))):
        value = getattr(b, name)
        assert isinstance(value, torch.Tensor) and value.shape == (n,), (
            f"{name} has shape {_shape(value)}, expected ({n},)")
        assert value.dtype in dtypes, f"{name} has dtype {value.dtype}, expected {dtypes[0]}"
    assert bool((b.queries >= 0).all()) and bool((b.gradient_evaluations >= 0).all()), (
        "negative query or gradient counts")
    assert isinstance(b.wall_time_s, float) and b.wall_time_s >= 0.0, (
        f"wall_time_s is {b.wall_time_s!r}, expected a float >= 0")
    assert isinstance(b.attack, str) and b.attack, "the 'attack' description is empty"
    assert b.norm in NORMS, f"norm is {b.norm!r}, expected one of {NORMS}"
    for name in ("norm", "eps", "targeted"):
        if hasattr(t.attack, name):
            reported = getattr(b, name) if name != "targeted" else b.targets is not None
            assert reported == getattr(t.attack, name), (
                f"the batch reports {name}={reported!r}, the attack has "
                f"{name}={getattr(t.attack, name)!r}")
    if b.targets is not None:
        assert isinstance(b.targets, torch.Tensor) and b.targets.shape == (n,), (
            f"targets has shape {_shape(b.targets)}, expected ({n},)")


def _check_outputs_valid_images(t: _Trial) -> None:
    """x_adv is finite and inside the pixel range [0, 1]."""
    x_adv = t.first.batch.x_adv
    assert bool(torch.isfinite(x_adv).all()), (
        f"x_adv has {int((~torch.isfinite(x_adv)).sum())} non-finite values")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    assert lo >= 0.0 and hi <= 1.0, f"x_adv has values in [{lo:.6g}, {hi:.6g}], not in [0, 1]"


def _check_respects_budget(t: _Trial) -> None:
    """Every perturbation is within eps in the attack's norm (bounded L-inf / L2 attacks)."""
    b, eps = t.first.batch, t.bound
    if eps is None or b.norm == "none":
        return
    norms = perturbation_norm(b.x_adv - t.x_copy, b.norm)  # (N,)
    over = ~budget_ok(norms, eps)
    assert not bool(over.any()), (
        f"{int(over.sum())} of {over.numel()} perturbations exceed eps={eps} in {b.norm}; "
        f"the largest is {float(norms.max()):.6g}")


def _check_success_is_honest(t: _Trial) -> None:
    """``success`` and ``predictions`` match the model re-run on ``x_adv``."""
    b = t.first.batch
    pred = t.predictions(b.x_adv)  # (N,)
    wrong = pred != b.predictions
    assert not bool(wrong.any()), (
        f"predictions differ from the model's on x_adv for {int(wrong.sum())} samples")
    expected = pred == b.targets if b.targets is not None else pred != t.y_copy
    lies = expected != b.success
    assert not bool(lies.any()), (
        f"success disagrees with the model on {int(lies.sum())} samples "
        f"({int((b.success & ~expected).sum())} claimed successes the model does not confirm)")


def _check_norm_is_honest(t: _Trial) -> None:
    """``perturbation_norm`` equals ``||x_adv - x||`` in the reported norm."""
    b = t.first.batch
    norms = perturbation_norm(b.x_adv - t.x_copy, b.norm).to(b.perturbation_norm.dtype)
    close = torch.isclose(b.perturbation_norm, norms, rtol=_NORM_RTOL, atol=_NORM_ATOL)
    assert bool(close.all()), (
        f"perturbation_norm differs from ||x_adv - x||_{b.norm} on {int((~close).sum())} "
        f"samples (max abs diff {float((b.perturbation_norm - norms).abs().max()):.3g})")


def _check_deterministic(t: _Trial) -> None:
    """Two calls give identical ``x_adv``, unless the attack sets ``deterministic = False``."""
    if not getattr(t.attack, "deterministic", True):
        return
    a, b = t.first.batch.x_adv, t.second.batch.x_adv
    assert torch.equal(a, b), (
        f"two calls differ on {int((a != b).flatten(1).any(1).sum())} samples although the "
        "attack is seeded; derive every random draw from its seed or declare "
        "deterministic = False")


def _check_input_unchanged(t: _Trial) -> None:
    """The caller's ``x`` and ``y`` are not modified."""
    t.first  # noqa: B018 - run the attack
    assert torch.equal(t.x, t.x_copy), "the attack modified its input x in place"
    assert torch.equal(t.y, t.y_copy), "the attack modified its labels y in place"


def _check_model_restored(t: _Trial) -> None:
    """Every submodule's train/eval mode, the parameters, buffers and grads are unchanged."""
    names = [name or "<root>" for name, _ in t.model.named_modules()]
    for run in (t.first, t.second):
        changed = [n for n, a, b in zip(names, run.modes_before, run.modes_after, strict=True)
                   if a != b]
        assert not changed, (f"the train/eval mode of {len(changed)} submodules was not "
                             f"restored: {', '.join(changed[:5])}")
    state = t.model.state_dict()
    changed = [k for k, v in t.state.items() if not torch.equal(state[k], v)]
    assert not changed, f"the attack changed model parameters or buffers: {', '.join(changed)}"
    for (name, p), before in zip(t.model.named_parameters(), t.grads, strict=True):
        unchanged = (p.grad is None and before is None) or (
            p.grad is not None and before is not None and torch.equal(p.grad, before))
        assert unchanged, f"the attack changed the gradient of parameter {name!r}"


def _check_silent(t: _Trial) -> None:
    """Nothing is written to stdout or stderr (warnings included)."""
    output = t.first.output
    assert not output, f"the attack printed: {output[:200]!r}"


def _check_rejects_invalid_input(t: _Trial) -> None:
    """NaN pixels, pixels outside [0, 1], out-of-range labels and a y/x length mismatch
    raise ParameterError naming the parameter."""
    x_nan = t.x_copy.clone()
    x_nan[0, 0, 0, 0] = float("nan")
    x_big = t.x_copy.clone()
    x_big[0, 0, 0, 0] = 1.5
    y_big = t.y_copy.clone()
    y_big[0] = 10**6
    y_short = t.y_copy[:-1] if t.y_copy.numel() > 1 else t.y_copy.repeat(2)
    cases = [("NaN pixel", x_nan, t.y_copy, "'x'"), ("pixel 1.5", x_big, t.y_copy, "'x'"),
             ("label 10**6", t.x_copy, y_big, "'y'"),
             (f"{y_short.numel()} labels for {t.x.shape[0]} inputs", t.x_copy, y_short, "'y'")]
    for what, x, y, name in cases:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                t.attack(t.model, x, y)
        except ParameterError as err:
            assert name in str(err), f"the error for a {what} does not name {name}: {err}"
        except Exception as err:  # any other type is the failure to report
            raise AssertionError(f"a {what} raised {type(err).__name__} ({err}), "
                                 "not ParameterError") from err
        else:
            raise AssertionError(f"a {what} was accepted; expected ParameterError")


_CHECKS: dict[str, Callable[[_Trial], None]] = {
    "returns_adversarial_batch": _check_returns_adversarial_batch,
    "outputs_valid_images": _check_outputs_valid_images,
    "respects_budget": _check_respects_budget,
    "success_is_honest": _check_success_is_honest,
    "norm_is_honest": _check_norm_is_honest,
    "input_unchanged": _check_input_unchanged,
    "deterministic": _check_deterministic,
    "model_restored": _check_model_restored,
    "silent": _check_silent,
    "rejects_invalid_input": _check_rejects_invalid_input,
}


def conformance_checks() -> list[str]:
    """Names of the individual checks of :func:`check_attack`, in the order they run."""
    return list(_CHECKS)


def check_attack(attack: Callable[..., Any], model: nn.Module, x: torch.Tensor,
                 y: torch.Tensor, *, eps: float | None = None,
                 checks: Iterable[str] | None = None) -> None:
    """Check that ``attack`` honours the attack protocol on ``model`` and ``(x, y)``.

    Parameters
    ----------
    attack
        Anything called as ``attack(model, x, y) -> AdversarialBatch``; normally an
        :class:`~attacks.base.Attack`. It is called twice (once per model-mode
        pattern, which also tests determinism) plus once per invalid input.
    model
        A classifier mapping (N, C, H, W) to logits (N, K). Its modes are perturbed
        during the checks and restored afterwards.
    x
        (N, C, H, W) valid inputs in [0, 1].
    y
        (N,) int64 labels.
    eps
        Budget to check against; default the attack's ``eps`` (``None`` skips the
        budget check, as for minimisation attacks like CW or DeepFool).
    checks
        Names from :func:`conformance_checks` to run; default all.

    Raises
    ------
    AssertionError
        On the first failing check, naming the check and the attack.
    ParameterError
        If ``checks`` names an unknown check.
    """
    selected = list(_CHECKS) if checks is None else list(checks)
    unknown = [c for c in selected if c not in _CHECKS]
    if unknown:
        raise invalid("check_attack", "checks", f"names from conformance_checks() "
                      f"({', '.join(_CHECKS)})", unknown)
    with eval_mode(model, switch=False):
        trial = _Trial(attack, model, x, y, eps)
        for name in selected:
            refused = trial.refusal
            if refused is not None:
                # The template refused the attack's output (an Attack subclass): that is
                # the failure of the check it names; the others have no batch to look at.
                if refused.check == name:
                    raise AssertionError(f"check '{name}' failed for {attack!r}: the template "
                                         f"refused its output: {refused}") from None
                continue
            try:
                _CHECKS[name](trial)
            except AssertionError as err:
                raise AssertionError(f"check '{name}' failed for {attack!r}: {err}") from None


def _shape(value: Any) -> Any:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
