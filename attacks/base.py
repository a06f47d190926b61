"""The attack protocol: ``attack(model, x, y) -> AdversarialBatch``.

:class:`Attack` owns ``__call__`` (a template method, as in foolbox 3): it
validates inputs, puts the model in eval mode and restores every submodule's
mode afterwards, seeds the attack's randomness without touching the caller's
global RNG, times the run, and then *re-evaluates the model on the returned
inputs* to decide success, so an attack can never report a success the model
does not confirm. Subclasses implement only :meth:`Attack._run`.

The one exception is a row the attack's own forward pass already scored on exactly
the returned pixels (``RunResult.predictions``, set by our gradient attacks for the
iterate that fooled the model): its prediction is the model's, so it is not computed
twice. Library adapters never set it, and the conformance suite re-runs the model on
every row (``success_is_honest``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Final, final

import torch
from torch import nn

from robustness.core.modes import ModelVerdicts, eval_mode, fast_layout, model_key, predict
from robustness.core.validation import (
    ParameterError,
    check_bool,
    check_float,
    check_images,
    check_int,
    check_labels,
    invalid,
)

NORMS: Final = ("linf", "l2", "none")
THREAT_MODELS: Final = ("white-box", "black-box", "transfer")
# The largest budget that means anything. Pixels are in [0, 1], so an L-inf budget above
# 1 allows nothing more than 1; 1000 in L2 covers every pixel of a 1000 x 1000 image, and
# keeps every step computed from eps (2.5 * eps / steps, squared norms) finite in float32.
MAX_EPS: Final = {"linf": 1.0, "l2": 1000.0, "none": 1000.0}


class AttackError(ParameterError):
    """An attack returned inputs that cannot be judged: non-finite values, pixels outside
    [0, 1], a different shape, or perturbations beyond its budget. Nothing is counted.

    ``check`` names the conformance check (:mod:`attacks.conformance`) the output broke.
    """

    def __init__(self, message: str, *, check: str = "") -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class AdversarialBatch:
    """What an attack returns; every field is per sample unless noted.

    Attributes
    ----------
    x_adv
        (N, C, H, W) adversarial inputs in [0, 1].
    success
        (N,) bool. Untargeted: the model's prediction on ``x_adv`` differs from the
        label; targeted: it equals the target. Computed by re-running the model on
        ``x_adv``, never taken from the attack's own bookkeeping. A sample the model
        already misclassified counts as a success with whatever perturbation it has.
    perturbation_norm
        (N,) float: ``||x_adv - x||`` in the attack's norm (L-inf, L2; for ``"none"``
        attacks the L-inf norm is reported).
    predictions
        (N,) int64: the model's predicted class on ``x_adv``.
    queries
        (N,) int64: forward evaluations of the model spent on each sample.
    gradient_evaluations
        (N,) int64: input-gradient evaluations spent on each sample (0 for
        score-based attacks).
    wall_time_s
        Seconds the attack took (scalar, excluding the final re-evaluation).
    attack
        The attack's description (its ``repr``).
    norm
        ``"linf"``, ``"l2"`` or ``"none"``.
    eps
        The perturbation budget, or ``None`` for unbounded attacks.
    targets
        (N,) int64 target classes for targeted attacks, else ``None``.
    already_misclassified
        (N,) bool, set by ``attack(..., every_sample=True)``: the model already got the
        clean input wrong. Such samples are still perturbed (a transfer set needs them),
        but their "success" is not the attack's doing. ``None`` otherwise.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    perturbation_norm: torch.Tensor
    predictions: torch.Tensor
    queries: torch.Tensor
    gradient_evaluations: torch.Tensor
    wall_time_s: float
    attack: str
    norm: str
    eps: float | None
    targets: torch.Tensor | None = None
    already_misclassified: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        """Fraction of samples on which the attack succeeded."""
        return float(self.success.float().mean())

    def robust_accuracy(self, y: torch.Tensor) -> float:
        """Fraction of samples still classified as their label ``y`` after the attack."""
        return float((self.predictions == y).float().mean())

    def summary(self) -> dict[str, Any]:
        """JSON-able aggregate figures (numbers as numbers)."""
        q = self.queries.double()
        return {
            "attack": self.attack,
            "norm": self.norm,
            "eps": self.eps,
            "n": int(self.success.numel()),
            "success_rate": self.success_rate,
            "median_perturbation": float(self.perturbation_norm.median()),
            "max_perturbation": float(self.perturbation_norm.max()),
            "median_queries": float(q.median()),
            "mean_queries": float(q.mean()),
            "gradient_evaluations": int(self.gradient_evaluations.sum()),
            "wall_time_s": self.wall_time_s,
        }


@dataclass(frozen=True)
class RunResult:
    """What :meth:`Attack._run` hands back to the template method."""

    x_adv: torch.Tensor  # (N, C, H, W)
    queries: torch.Tensor  # (N,) int64
    gradient_evaluations: torch.Tensor  # (N,) int64
    # (N,) int64: the model's prediction on exactly this x_adv row, from a forward pass the
    # attack ran anyway (in eval mode, on this model), or -1 where it has none. Rows the
    # template's checks leave unchanged are not re-evaluated; every other row is.
    predictions: torch.Tensor | None = None


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of ``delta`` (N, C, H, W) -> (N,). ``"none"`` reports L-inf."""
    flat = delta.flatten(1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    return flat.abs().amax(dim=1)


def check_model_output(owner: str, model: nn.Module, x: torch.Tensor,
                       y: torch.Tensor | None = None) -> int:
    """Run ``model`` on two samples of ``x`` and check it returns logits (2, K); return K.

    Every way a model and its inputs can fail to fit is one :class:`ParameterError`
    naming what was expected and what came back: not a module, inputs of another dtype
    than its weights, inputs it cannot process (shape), or an output that is not logits.
    A pass is remembered: the next call on the same model with inputs of the same shape
    and dtype runs no forward pass while ``model_key`` (modules, modes, hooks, weights)
    is unchanged.
    """
    if not isinstance(model, nn.Module):
        raise invalid(owner, "model", "a torch.nn.Module returning logits (N, K)",
                      type(model).__name__, raw=True)
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) == 1 and x.dtype not in dtypes:
        (dtype,) = dtypes
        raise invalid(owner, "x", f"a tensor of the model's dtype {dtype} (convert with "
                      f"x.to({dtype}))", f"dtype {x.dtype}", raw=True)
    key = model_key(model, x)
    known = _CHECKED_MODELS.get(model, key)
    if known is not None:  # this model on such inputs passed already
        return known
    batch = x[:2]
    try:
        with torch.no_grad():
            out = model(batch)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise invalid(owner, "model", f"a module that accepts inputs of shape "
                      f"{tuple(batch.shape)} (N, C, H, W)", f"an error from the model: {first}",
                      raw=True) from None
    n = batch.shape[0]
    if not isinstance(out, torch.Tensor):
        raise invalid(owner, "model", f"a module returning one logits tensor of shape ({n}, K) "
                      f"for {n} inputs", f"a {type(out).__name__}", raw=True)
    if out.dim() != 2 or out.shape[0] != n:
        raise invalid(owner, "model", f"a module returning logits of shape ({n}, K) for {n} "
                      f"inputs", f"shape {tuple(out.shape)}", raw=True)
    if out.shape[1] < 2:
        raise invalid(owner, "model", "a classifier with at least 2 output classes",
                      f"{out.shape[1]} outputs", raw=True)
    if not out.is_floating_point():
        raise invalid(owner, "model", "a module returning floating-point logits",
                      f"dtype {out.dtype}", raw=True)
    if not torch.isfinite(out).all():
        raise invalid(owner, "model", "a module returning finite logits",
                      "NaN or infinite outputs", raw=True)
    _CHECKED_MODELS.put(model, key, int(out.shape[1]))
    return int(out.shape[1])


# The number of classes of each model that passed check_model_output: its forward pass
# was ~1% of a PGD-10 call at batch 32.
_CHECKED_MODELS: ModelVerdicts[int] = ModelVerdicts()


class Attack(ABC):
    """Base class of every attack: ours, and the torchattacks / foolbox adapters.

    Subclasses take their hyperparameters as keyword-only constructor arguments,
    validate them there (with :mod:`robustness.core.validation`), store them as public
    attributes named like the arguments, and implement :meth:`_run`.

    Class attributes
    ----------------
    name
        Registry name, e.g. ``"pgd"``.
    threat_model
        ``"white-box"`` (needs gradients) or ``"black-box"`` (scores only).
    memory_layout
        ``"as-given"`` (default) runs the model as the user gave it; ``"fastest"`` runs it
        with ``channels_last`` weights where a probe shows the same logits (see
        :func:`robustness.core.modes.fast_layout`; two extra forward passes on 8 images).
    """

    name: ClassVar[str] = "attack"
    threat_model: ClassVar[str] = "white-box"
    memory_layout: ClassVar[str] = "as-given"
    norm: str = "linf"
    eps: float | None = None
    targeted: bool = False
    seed: int = 0

    def _init_common(self, *, norm: str, eps: float | None, targeted: bool, seed: int) -> None:
        """Validate and store the hyperparameters every attack shares."""
        owner = type(self).__name__
        if norm not in NORMS:
            raise invalid(owner, "norm", f"one of {', '.join(map(repr, NORMS))}", norm)
        self.norm = norm
        self.eps = None if eps is None else check_float(
            owner, "eps", eps, low=0.0, high=MAX_EPS[norm],
            expected=f"a finite float in [0, {MAX_EPS[norm]:g}] (the largest meaningful "
                     f"{norm} budget for images in [0, 1])")
        self.targeted = check_bool(owner, "targeted", targeted)
        self.seed = check_int(owner, "seed", seed, low=0)

    def _params(self) -> dict[str, Any]:
        """Hyperparameters shown in ``repr`` (public attributes, in definition order)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 target: torch.Tensor | None = None,
                 every_sample: bool = False) -> AdversarialBatch:
        """Attack ``model`` on ``(x, y)``.

        Parameters
        ----------
        model
            Maps (N, C, H, W) in [0, 1] to logits (N, K). Left in the mode it was in.
        x
            (N, C, H, W) float inputs in [0, 1]. Never modified.
        y
            (N,) int64 true labels in [0, K).
        target
            (N,) int64 target classes for a targeted attack. If omitted for a targeted
            attack, ``(y + 1) mod K`` is used.

        Returns
        -------
        AdversarialBatch
        """
        x_adv, result, elapsed, target, judged = self._template(
            model, x, y, target, every_sample=every_sample, judge=True)
        assert judged is not None  # judge=True
        predictions, already = judged
        success = predictions == target if target is not None else predictions != y
        return AdversarialBatch(
            x_adv=x_adv,
            success=success,
            perturbation_norm=perturbation_norm(x_adv - x, self.norm),
            predictions=predictions,
            queries=result.queries.to(torch.int64),
            gradient_evaluations=result.gradient_evaluations.to(torch.int64),
            wall_time_s=elapsed,
            attack=repr(self),
            norm=self.norm,
            eps=self.eps,
            targets=target,
            already_misclassified=already,
        )

    @final
    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
              target: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial inputs for every sample, not judged: what adversarial training needs.

        The inputs ``self(model, x, y, every_sample=True).x_adv`` returns (equal, bit for
        bit), validated the same way, without the two forward passes of N inputs that
        judge them (the success check, and the clean pass that marks the inputs already
        misclassified). Parameters as for ``__call__``; returns (N, C, H, W).
        """
        return self._template(model, x, y, target, every_sample=True, judge=False)[0]

    def _template(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None, *, every_sample: bool, judge: bool,
                  ) -> tuple[torch.Tensor, RunResult, float, torch.Tensor | None,
                             tuple[torch.Tensor, torch.Tensor | None] | None]:
        """Validate, seed, run ``_run`` in the model's fastest layout and check its output.

        Returns the checked x_adv (N, C, H, W), the run's result, its wall time, the
        targets (None untargeted) and, with ``judge``, the (N,) predictions on x_adv and
        (with ``every_sample``) the (N,) already-misclassified mask.
        """
        owner = type(self).__name__
        check_images(owner, x)
        check_labels(owner, y, x.shape[0])
        if not isinstance(model, nn.Module):
            raise invalid(owner, "model", "a torch.nn.Module returning logits (N, K)",
                          type(model).__name__, raw=True)
        with eval_mode(model):
            num_classes = check_model_output(owner, model, x)
            check_labels(owner, y, x.shape[0], num_classes)
            if self.targeted:
                if target is None:
                    target = (y + 1) % num_classes
                check_labels(owner, target, x.shape[0], num_classes, name="target")
                if bool((target == y).any()):
                    raise invalid(owner, "target", "different from the true label for every "
                                  "sample", f"{int((target == y).sum())} samples with target "
                                  "== label", raw=True)
            elif target is not None:
                raise invalid(owner, "target", "None for an untargeted attack (set "
                              "targeted=True to use targets)", target)
            x_in = x.detach().clone()
            runner = self._for_every_sample() if check_bool(owner, "every_sample",
                                                             every_sample) else self
            start = time.perf_counter()
            # "fastest": the model runs with channels_last weights when a probe shows the
            # same logits (see fast_layout); its own layout is restored after.
            layout = fast_layout(model, x_in) if self.memory_layout == "fastest" \
                else nullcontext(x_in)
            # Only the generators of x's device are seeded, and restored after:
            # torch.manual_seed would also queue a seed, with a stack trace, for every
            # accelerator backend torch knows (~0.7 ms a call, a queue that only grows
            # on a CPU build) and leave the CUDA one changed.
            on_cuda = [x.device] if x.device.type == "cuda" else []
            with layout as x_in, torch.random.fork_rng(devices=on_cuda):
                torch.default_generator.manual_seed(self.seed)
                if on_cuda:
                    torch.cuda.manual_seed(self.seed)
                result = runner._run(model, x_in, y, target)
                elapsed = time.perf_counter() - start
                x_adv = self._checked_output(result.x_adv, x)
                if not judge:
                    return x_adv, result, elapsed, target, None
                predictions = _predictions(model, x_adv, result)
            already = None
            if every_sample:
                clean = predict(model, x, batch_size=1024).argmax(1)
                already = clean == target if target is not None else clean != y
        return x_adv, result, elapsed, target, (predictions, already)

    def _checked_output(self, x_adv: object, x: torch.Tensor) -> torch.Tensor:
        """``x_adv`` if it can be judged; an :class:`AttackError` naming the attack if not."""
        what = f"{self!r} returned"
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
            got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
            raise AttackError(f"{what} x_adv of shape {got} for inputs of shape "
                              f"{tuple(x.shape)}; nothing was counted.",
                              check="returns_adversarial_batch")
        x_adv = x_adv.detach().to(x.dtype)
        bad = int((~torch.isfinite(x_adv)).sum())
        if bad:
            raise AttackError(f"{what} {bad} non-finite values (NaN or inf) in x_adv: the "
                              f"attack diverged (check eps and step sizes); nothing was counted "
                              f"as a success.", check="outputs_valid_images")
        if float(x_adv.min()) < -1e-6 or float(x_adv.max()) > 1 + 1e-6:
            raise AttackError(f"{what} pixels outside [0, 1] (min {float(x_adv.min()):.3g}, "
                              f"max {float(x_adv.max()):.3g}); nothing was counted.",
                              check="outputs_valid_images")
        if self.eps is not None and self.norm in ("linf", "l2"):
            norms = perturbation_norm(x_adv - x, self.norm)
            over = ~budget_ok(norms, self.eps)
            if bool(over.any()):
                raise AttackError(f"{what} {int(over.sum())} perturbations beyond its {self.norm} "
                                  f"budget {self.eps:g} (largest {float(norms.max()):.4g}); "
                                  f"nothing was counted.", check="respects_budget")
        # Only float rounding (<= 1e-6) is clamped; the result has the layout of x, whatever
        # layout the attack ran in.
        return torch.empty_like(x).copy_(x_adv.clamp(0.0, 1.0))

    def _for_every_sample(self) -> Attack:
        """This attack set up to perturb every sample (see ``every_sample`` in ``__call__``).

        The default returns ``self``: right for attacks that never skip a sample (the
        library adapters' fixed-budget attacks) and for minimum-norm attacks, whose
        answer for an already misclassified input is the input itself.
        """
        return self

    @abstractmethod
    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        """Craft adversarial inputs.

        Called with the model in eval mode, inputs validated, a private copy of ``x``,
        and the RNG seeded from ``self.seed``. ``target`` is set iff ``self.targeted``.
        Must return inputs in [0, 1] within the attack's budget.
        """


def _predictions(model: nn.Module, x_adv: torch.Tensor, result: RunResult) -> torch.Tensor:
    """(N,) predictions on the checked ``x_adv``: re-evaluated, except rows the attack's own
    forward pass already scored on exactly these pixels (the last step's logits)."""
    known = result.predictions
    if known is None:
        return predict(model, x_adv, batch_size=1024).argmax(1)
    known = known.to(torch.int64)
    same = (x_adv == result.x_adv.to(x_adv.dtype)).flatten(1).all(1)
    fresh = (known < 0) | ~same
    out = known.clone()
    if bool(fresh.any()):
        out[fresh] = predict(model, x_adv[fresh], batch_size=1024).argmax(1)
    return out


def budget_ok(delta_norm: torch.Tensor, eps: float, *, rel_tol: float = 1e-5) -> torch.Tensor:
    """Per-sample check ``||delta|| <= eps`` allowing float32 rounding."""
    return delta_norm <= eps * (1 + rel_tol) + 1e-6

