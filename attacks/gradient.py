"""FGSM and PGD (L-inf and L2) as one gradient loop; the geometry is an object.

A :class:`Geometry` knows how to turn a gradient into a unit-norm ascent
direction, how to project a perturbation back onto the eps-ball and how to draw
a random start inside it. :class:`GradientAttack` owns the single loop: random
start, steps, restarts, early stop, targeted or untargeted. FGSM is the loop with
one step of size eps from the clean input.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from attacks.base import Attack, RunResult
from robustness.core.modes import balanced_rows, pass_rows, predict
from robustness.core.validation import (
    MAX_ITERATIONS,
    MAX_RESTARTS,
    check_bool,
    check_choice,
    check_float,
    check_int,
    invalid,
)

LOSSES = ("ce", "margin")


class Geometry(ABC):
    """The norm-specific parts of a gradient attack."""

    norm: ClassVar[str]

    @abstractmethod
    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """Steepest-ascent direction of unit norm for ``grad`` (N, C, H, W)."""

    @abstractmethod
    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        """Nearest point of the eps-ball to ``delta`` (N, C, H, W)."""

    @abstractmethod
    def random_start(self, like: torch.Tensor, eps: float) -> torch.Tensor:
        """A random perturbation inside the eps-ball, shaped like ``like``."""


class LinfGeometry(Geometry):
    """L-inf: sign of the gradient, clamp to [-eps, eps], uniform start in the box."""

    norm = "linf"

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta.clamp(-eps, eps)

    def random_start(self, like: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.empty_like(like).uniform_(-eps, eps)


class L2Geometry(Geometry):
    """L2: normalised gradient, radial rescaling onto the ball, uniform start in the ball."""

    norm = "l2"

    @staticmethod
    def _norms(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))  # (N, 1, 1, 1)

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / self._norms(grad).clamp_min(1e-12)

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta * (eps / self._norms(delta).clamp_min(1e-12)).clamp(max=1.0)

    def random_start(self, like: torch.Tensor, eps: float) -> torch.Tensor:
        # Uniform in the d-ball: Gaussian direction, radius eps * U^(1/d).
        direction = self.direction(torch.randn_like(like))
        d = like[0].numel()
        radius = eps * torch.rand(like.shape[0], device=like.device) ** (1.0 / d)
        return direction * radius.view(-1, *([1] * (like.dim() - 1)))


GEOMETRIES: dict[str, Geometry] = {"linf": LinfGeometry(), "l2": L2Geometry()}


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, *, targeted: bool,
                kind: str) -> torch.Tensor:
    """Per-sample loss to *ascend*: (N, K) logits, (N,) labels -> (N,).

    ``"ce"``: cross-entropy of the true label (untargeted) or minus that of the target.
    ``"margin"``: the Carlini-Wagner logit margin, which keeps its gradient when
    probabilities saturate (useful against max-confidence ensembles).
    """
    if kind == "ce":
        ce = F.cross_entropy(logits, labels, reduction="none")
        return -ce if targeted else ce
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return label_logit - others if targeted else others - label_logit


class GradientAttack(Attack):
    """The gradient loop behind FGSM and PGD (white-box, needs input gradients).

    Parameters
    ----------
    norm
        ``"linf"`` or ``"l2"``.
    eps
        Perturbation budget in that norm, >= 0.
    steps
        Gradient steps per restart, >= 1.
    step_size
        Absolute step length; default ``2.5 * eps / steps`` (Madry et al.).
    random_start
        Start each restart from a uniform random point of the eps-ball.
    restarts
        Independent restarts; a sample already fooled is not attacked again, and per
        sample the first successful iterate found is kept.
    targeted
        Move towards a target class instead of away from the label.
    early_stop
        Stop updating a sample as soon as it is fooled (and the whole attack when all
        are). Without it the loop runs every step for every sample.
    loss
        ``"ce"`` (cross-entropy) or ``"margin"`` (CW logit margin).
    seed
        Seeds the random start.

    Notes
    -----
    The model runs with ``channels_last`` weights (``memory_layout = "fastest"``) when a
    probe of 8 images gives the same logits; its weights are restored after. Results
    then equal the given layout's up to float rounding, which can flip the sign of a
    near-zero gradient pixel (tested: same robust accuracy).

    A large batch runs through the model in passes whose largest activation stays near
    ``PASS_BYTES`` (:func:`~robustness.core.modes.pass_rows`: rows of about 125 images
    for the reference ConvNet), which stay in the CPU's caches; a model that mixes rows
    or is small runs in one pass. Rows are independent, so each row's gradient is the
    one pass's up to float rounding (tested: the same adversarial examples).

    Each step is one forward and one backward pass w.r.t. the input only (no weight
    gradients). Success of an iterate is read from the logits of that same forward
    pass, so bookkeeping costs no extra model call; only with several restarts is each
    restart's last iterate evaluated once more.
    """

    name: ClassVar[str] = "gradient"
    threat_model: ClassVar[str] = "white-box"
    # The loop is all model passes: channels_last weights make them faster (0.71-0.89x
    # the time on AVX-512, 0.93x on AVX2); the probe keeps a model that cannot run so.
    memory_layout: ClassVar[str] = "fastest"

    def __init__(self, *, norm: str = "linf", eps: float = 0.3, steps: int = 40,
                 step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 targeted: bool = False, early_stop: bool = False, loss: str = "ce",
                 seed: int = 0) -> None:
        owner = type(self).__name__
        if norm not in GEOMETRIES:
            raise invalid(owner, "norm", "one of 'linf', 'l2'", norm)
        self._init_common(norm=norm, eps=eps, targeted=targeted, seed=seed)
        self.steps = check_int(owner, "steps", steps, low=1, high=MAX_ITERATIONS)
        if step_size is None:
            step_size = 2.5 * float(self.eps or 0.0) / self.steps
        self.step_size = check_float(owner, "step_size", step_size, low=0.0)
        self.random_start = check_bool(owner, "random_start", random_start)
        self.restarts = check_int(owner, "restarts", restarts, low=1, high=MAX_RESTARTS)
        self.early_stop = check_bool(owner, "early_stop", early_stop)
        self.loss = check_choice(owner, "loss", loss, LOSSES)
        self._every_sample = False

    def _for_every_sample(self) -> GradientAttack:
        variant = copy.copy(self)
        variant._every_sample = True
        return variant

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        labels = target if target is not None else y
        if self._every_sample:
            return self._run_every_sample(model, x, labels)
        geometry = GEOMETRIES[self.norm]
        eps = float(self.eps or 0.0)
        n = x.shape[0]
        rows = pass_rows(model, x)  # passes that stay in the CPU's caches
        x_out = x.clone()  # (N, C, H, W): what is returned
        predicted = torch.full((n,), -1, dtype=torch.int64)  # prediction on x_out, if known
        found = torch.zeros(n, dtype=torch.bool)  # an evaluated iterate fooled the model
        queries = torch.zeros(n, dtype=torch.int64)
        grads = torch.zeros(n, dtype=torch.int64)

        for restart in range(self.restarts):
            idx = (~found).nonzero().squeeze(1)  # (A,) samples still to attack
            if idx.numel() == 0:
                break
            x0, lab = x[idx], labels[idx]
            start = geometry.random_start(x0, eps) if self.random_start else 0.0
            xa = (x0 + start).clamp(0.0, 1.0)
            # Counters are added per restart and when a sample leaves, not on every step:
            # that cost ~3% of a PGD-10 call at batch 32 (1.06 -> 1.03 x the floor).
            steps = 0  # steps the samples still in idx took this restart
            for _ in range(self.steps):
                logits, grad = self._logits_and_grad(model, xa, lab, rows)  # (A, K), like xa
                steps += 1
                with torch.no_grad():
                    fooled = self._fooled(logits, lab)
                    if bool(fooled.any()):
                        hit = idx[fooled]
                        x_out[hit] = xa[fooled]
                        predicted[hit] = logits[fooled].argmax(1)
                        found[hit] = True
                        if self.early_stop:
                            queries[hit] += steps
                            grads[hit] += steps
                            keep = ~fooled
                            idx, x0, lab = idx[keep], x0[keep], lab[keep]
                            xa, grad = xa[keep], grad[keep]
                            if idx.numel() == 0:
                                break
                    stepped = xa + self.step_size * geometry.direction(grad)
                    xa = (x0 + geometry.project(stepped - x0, eps)).clamp(0.0, 1.0)
            if idx.numel() == 0:
                break
            queries[idx] += steps
            grads[idx] += steps
            # The last iterate was never evaluated. With one restart the template's
            # re-evaluation judges it; before another restart, check it here.
            pending = ~found[idx]
            x_out[idx[pending]] = xa[pending]
            predicted[idx[pending]] = -1
            if restart + 1 < self.restarts:
                final = predict(model, xa, batch_size=balanced_rows(len(xa), rows))
                fooled = self._fooled(final, lab)
                predicted[idx[pending]] = final[pending].argmax(1)
                queries[idx] += 1
                found[idx[fooled]] = True
        # Samples fooled at an evaluated iterate come with that forward pass's prediction;
        # the final, never evaluated iterates are judged by the template.
        return RunResult(x_adv=x_out, queries=queries, gradient_evaluations=grads,
                         predictions=predicted)

    def _run_every_sample(self, model: nn.Module, x: torch.Tensor,
                          labels: torch.Tensor) -> RunResult:
        """Every step for every sample; per sample the final iterate of the restart with
        the highest loss (for FGSM: ``x + eps * sign(grad)``, the textbook definition)."""
        geometry = GEOMETRIES[self.norm]
        eps = float(self.eps or 0.0)
        n = x.shape[0]
        rows = pass_rows(model, x)
        x_out = x.clone()
        best = torch.full((n,), float("-inf"))
        evals = torch.zeros(n, dtype=torch.int64)
        for _ in range(self.restarts):
            start = geometry.random_start(x, eps) if self.random_start else 0.0
            xa = (x + start).clamp(0.0, 1.0)
            for _ in range(self.steps):
                _, grad = self._logits_and_grad(model, xa, labels, rows)
                with torch.no_grad():
                    stepped = xa + self.step_size * geometry.direction(grad)
                    xa = (x + geometry.project(stepped - x, eps)).clamp(0.0, 1.0)
            evals += self.steps
            if self.restarts == 1:
                return RunResult(x_adv=xa, queries=evals.clone(), gradient_evaluations=evals)
            final = attack_loss(predict(model, xa, batch_size=balanced_rows(n, rows)), labels,
                                targeted=self.targeted, kind=self.loss)
            better = final > best
            x_out[better], best[better] = xa[better], final[better]
        queries = evals + self.restarts  # each restart's final iterate was scored once
        return RunResult(x_adv=x_out, queries=queries, gradient_evaluations=evals)

    def _logits_and_grad(self, model: nn.Module, xa: torch.Tensor, labels: torch.Tensor,
                         rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward + backward w.r.t. the input, in passes of about ``rows``
        (:func:`~robustness.core.modes.pass_rows`; None: one pass).

        Shapes: xa (A, C, H, W), labels (A,) -> logits (A, K), detached, and the gradient
        of the summed attack loss (A, C, H, W). Rows are independent (the model is in eval
        mode and passed the halves probe), so each row's gradient is the one pass's.
        """
        size = balanced_rows(xa.shape[0], rows)
        logits, grads = [], []
        for start in range(0, xa.shape[0], size):
            part = xa[start:start + size].detach().requires_grad_(True)
            out = self._differentiable(model(part))
            loss = attack_loss(out, labels[start:start + size], targeted=self.targeted,
                               kind=self.loss)
            (grad,) = torch.autograd.grad(loss.sum(), part)
            logits.append(out.detach())
            grads.append(grad)
        if len(grads) == 1:
            return logits[0], grads[0]
        return torch.cat(logits), torch.cat(grads)

    def _differentiable(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits``, if they carry a gradient back to the input (else a clear error)."""
        if not logits.requires_grad:
            raise invalid(type(self).__name__, "model", "differentiable w.r.t. its input (a "
                          "gradient attack needs input gradients); use a gradient-free attack "
                          "such as 'genetic' for this model", "outputs without a gradient "
                          "(e.g. argmax or one-hot outputs, or torch.no_grad inside forward)",
                          raw=True)
        return logits

    def _fooled(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == labels if self.targeted else pred != labels


class PGD(GradientAttack):
    """Projected gradient descent (Madry et al. 2018), L-inf or L2. See :class:`GradientAttack`."""

    name: ClassVar[str] = "pgd"


class FGSM(GradientAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps.

    With ``norm="l2"`` this is the fast gradient method (one normalised-gradient step).

    Parameters
    ----------
    eps
        Budget, >= 0.
    norm
        ``"linf"`` (FGSM proper) or ``"l2"`` (FGM).
    targeted, loss, seed
        As for :class:`GradientAttack`.
    """

    name: ClassVar[str] = "fgsm"

    def __init__(self, *, eps: float = 0.3, norm: str = "linf", targeted: bool = False,
                 loss: str = "ce", seed: int = 0) -> None:
        super().__init__(norm=norm, eps=eps, steps=1, step_size=eps, random_start=False,
                         restarts=1, targeted=targeted, early_stop=False, loss=loss, seed=seed)

    def _params(self) -> dict[str, object]:
        p = super()._params()
        return {k: p[k] for k in ("norm", "eps", "targeted", "loss", "seed")}

