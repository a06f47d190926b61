"""One seeded training loop, clean or adversarial.

Adversarial training and DADC plug in through ``adversary``: a callable that
takes ``(model, x, y)`` and returns adversarial inputs of the same shape. Any
attack of :mod:`attacks` can be wrapped into one with :func:`attack_hook`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from robustness.core.modes import eval_mode, predict
from robustness.core.validation import (
    MAX_ITERATIONS,
    ParameterError,
    check_choice,
    check_float,
    check_images,
    check_int,
    check_labels,
    invalid,
)

PRECISIONS = ("fp32", "bf16")
OPTIMIZERS = ("adam", "adadelta")

Adversary = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(model, x (B, C, H, W), y (B,)) -> x_adv (B, C, H, W)``."""


class _AttackLike(Protocol):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 every_sample: bool = ...) -> object: ...


class TrainingDivergedError(ParameterError):
    """The training loss became NaN or infinite: the settings (usually ``lr``) are wrong."""


@dataclass
class TrainHistory:
    """What happened during :func:`train`, one entry per epoch."""

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-able copy."""
        return {"loss": self.loss, "train_accuracy": self.train_accuracy, "seconds": self.seconds}


def attack_hook(attack: _AttackLike) -> Adversary:
    """Turn an attack (``attack(model, x, y) -> AdversarialBatch``) into a training adversary.

    Every sample is perturbed (``every_sample=True``), also those the model currently
    gets wrong: adversarial training trains on the attack's inputs, not on clean copies.
    An attack of :mod:`attacks` crafts them with ``Attack.craft`` (the same inputs,
    without the two forward passes that would judge them).
    """

    craft = getattr(attack, "craft", None)  # our attacks: the same inputs, not judged

    def adversary(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if callable(craft):
            return craft(model, x, y)
        batch = attack(model, x, y, every_sample=True)
        return batch.x_adv  # type: ignore[attr-defined]

    return adversary


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    adversary: Adversary | None = None,
    adversarial_weight: float = 0.5,
    progress: bool = True,
    description: str = "train",
    precision: str = "fp32",
    optimizer: str = "adam",
    label_smoothing: float = 0.0,
) -> TrainHistory:
    """Train ``model`` in place with Adam (or Adadelta) and cross-entropy.

    Parameters
    ----------
    model
        Any module mapping (N, C, H, W) to logits (N, K).
    x
        Training images, (N, C, H, W) floats in [0, 1].
    y
        Labels, (N,) int64 in [0, K).
    epochs, batch_size, lr, weight_decay
        Optimisation settings (Adam).
    seed
        Seeds shuffling and dropout. The caller's global random state is left untouched,
        and the same seed gives the same weights on CPU.
    adversary
        Optional ``(model, x, y) -> x_adv``. When given, each batch's loss is
        ``(1 - w) * CE(clean) + w * CE(adversarial)`` with ``w = adversarial_weight``
        (Goodfellow et al. 2015; the original experiment used w = 0.5 with FGSM eps 0.3).
    progress
        Show a tqdm progress bar over batches on stderr.
    description
        Label of the progress bar.
    precision
        ``"fp32"`` (default) or ``"bf16"``: run forward passes under CPU bfloat16
        autocast (weights, optimiser state and gradients stay float32). About 1.4x
        faster on CPUs with AMX (``benchmarks/bench_ensembles.py``), slower without.
    optimizer
        ``"adam"`` (default) or ``"adadelta"`` (the original ensemble experiment's
        optimiser, with ``lr=0.1``).
    label_smoothing
        Cross-entropy label smoothing in [0, 1) on the clean loss (the cleverhans MNIST
        baseline used 0.1).

    Returns
    -------
    TrainHistory
        Per-epoch mean loss, training accuracy on clean batches, and seconds.
    """
    owner = "train"
    check_images(owner, x)
    check_labels(owner, y, x.shape[0])
    check_int(owner, "epochs", epochs, low=1, high=MAX_ITERATIONS)
    check_int(owner, "batch_size", batch_size, low=1)
    check_float(owner, "lr", lr, low=0.0, low_open=True)
    check_float(owner, "weight_decay", weight_decay, low=0.0)
    check_int(owner, "seed", seed, low=0)
    check_float(owner, "adversarial_weight", adversarial_weight, low=0.0, high=1.0)
    check_choice(owner, "precision", precision, PRECISIONS)
    check_choice(owner, "optimizer", optimizer, OPTIMIZERS)
    check_float(owner, "label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
    low_precision = precision == "bf16"
    if adversary is not None and not callable(adversary):
        raise invalid(owner, "adversary", "a callable (model, x, y) -> x_adv or None", adversary)

    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.Adadelta)(
        model.parameters(), lr=lr, weight_decay=weight_decay)
    history = TrainHistory()
    n = x.shape[0]
    with eval_mode(model, switch=False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shuffle = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            start = time.perf_counter()
            order = torch.randperm(n, generator=shuffle)
            total_loss, correct = 0.0, 0
            batches = range(0, n, batch_size)
            # disable=None: tqdm draws only on a TTY, so logs and CI get no bar lines.
            bar = tqdm(batches, desc=f"{description} {epoch + 1}/{epochs}",
                       disable=None if progress else True, leave=False, unit="batch")
            for i in bar:
                idx = order[i:i + batch_size]
                xb, yb = x[idx], y[idx]
                if adversary is not None:
                    x_adv = adversary(model, xb, yb).detach()
                    if x_adv.shape != xb.shape:
                        raise invalid(owner, "adversary", "a callable returning inputs of the "
                                      "same shape", f"shape {tuple(x_adv.shape)} for a batch of "
                                      f"shape {tuple(xb.shape)}", raw=True)
                model.train()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low_precision):
                    logits = _forward(owner, model, xb)  # (B, K)
                    loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
                    if adversary is not None:
                        adv_loss = F.cross_entropy(model(x_adv).float(), yb)
                        loss = (1 - adversarial_weight) * loss + adversarial_weight * adv_loss
                if not bool(torch.isfinite(loss)):
                    # Stop before the step: the weights stay finite, and the caller saves
                    # nothing (a diverged model is no result).
                    raise TrainingDivergedError(
                        f"Training diverged: the loss became {loss.item()} in epoch "
                        f"{epoch + 1}, batch {i // batch_size + 1} (lr {lr:g}, optimizer "
                        f"{optimizer}). Lower the learning rate ('lr' / --lr); nothing was "
                        f"saved.")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += loss.item() * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                bar.set_postfix(loss=f"{loss.item():.3f}")
            history.loss.append(total_loss / n)
            history.train_accuracy.append(correct / n)
            history.seconds.append(time.perf_counter() - start)
    return history


def _forward(owner: str, model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    """``model(xb)`` as float logits (B, K); a model that does not fit the data is named."""
    try:
        logits = model(xb)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise invalid(owner, "model", f"a module that accepts images of shape "
                      f"{tuple(xb.shape[1:])} (the data's)", f"an error from the model: {first}",
                      raw=True) from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(xb):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise invalid(owner, "model", f"a module returning logits of shape ({len(xb)}, K)",
                      f"{got}", raw=True)
    return logits.float()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on (x (N, C, H, W), y (N,)) in eval mode."""
    check_images("accuracy", x)
    check_labels("accuracy", y, x.shape[0])
    return float((predict(model, x, batch_size=batch_size).argmax(1) == y).float().mean())
