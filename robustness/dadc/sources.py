"""Where a DADC round's candidates come from.

A source proposes candidates against the *current* model and reports which of its inputs
it used, so a later round never proposes from them again:

* :class:`AttackSource` (any registry attack spec: ``fgsm``, ``pgd``, ``genetic``, ...)
  crafts adversarial versions of **pool** images (training-split images the models have
  not been trained on; never test images) and keeps each source image's label;
* :class:`FoolingSource` evolves unbounded fooling images from noise; they have no true
  class, so they are trained on only under an explicit ``fooling_label`` policy;
* :class:`FileSource` (``file:PATH.npz``) offers examples collected elsewhere (by people,
  e.g. the collection web app's export), split by contributor group into a training part
  it proposes from and a held-out part the rounds are evaluated on.

Sources are stateless: what was used lives in the loop's state, so a resumed run
proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attacks.base import Attack
from attacks.registry import AttackSpec
from robustness.core.backend import Backend, LocalBackend
from robustness.core.modes import predict
from robustness.dadc.selection import duplicates, group_split, really_fools
from robustness.data import Examples

CHUNK = 256  # pool images attacked per call: bounds memory, wastes little past the quota


@dataclass
class Proposal:
    """What one round's source kept, and what it used up.

    ``x`` (M, C, H, W) in [0, 1]; ``label`` (M,) the label each is trained with, -1 for
    "never trained on" (fooling images without a label policy); ``fooled_as`` (M,) the
    model's prediction on it; ``origin`` (M,) the pool / file index it came from (-1 for
    fooling images); ``used`` the indices no later round may propose from; ``tried`` how
    many inputs were tried, so ``len(x) / tried`` is the round's fooling rate.
    """

    x: torch.Tensor
    label: torch.Tensor
    fooled_as: torch.Tensor
    origin: torch.Tensor
    groups: list[str]
    used: list[int]
    tried: int

    @classmethod
    def empty(cls, shape: Sequence[int]) -> Proposal:
        z = torch.zeros(0, dtype=torch.int64)
        return cls(torch.zeros(0, *shape), z, z.clone(), z.clone(), [], [], 0)


def _within_budget(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    delta = (x_adv - x).flatten(1).double()
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    return size <= eps * (1 + 1e-5) + 1e-6


def _attack_chunk(idx: torch.Tensor, *, attack: Attack, model: nn.Module, x_pool: torch.Tensor,
                  y_pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of pool images (a backend task): which the model classifies correctly
    ``(C,)`` bool, and their adversarial versions ``(C, ...)`` (the others unchanged)."""
    x, y = x_pool[idx], y_pool[idx]
    correct = predict(model, x).argmax(1) == y
    x_adv = x.clone()
    if correct.any():
        x_adv[correct] = attack(model, x[correct], y[correct]).x_adv.to(x.dtype)
    return correct, x_adv


class AttackSource:
    """Adversarial versions of pool images, crafted by ``spec`` at ``eps``."""

    kind = "attack"

    def __init__(self, spec: AttackSpec, eps: float | None) -> None:
        self.spec = spec
        self.eps = eps

    def propose(self, model: nn.Module, x_pool: torch.Tensor, y_pool: torch.Tensor,
                available: Sequence[int], want: int, *, seed: int,
                kept: torch.Tensor | None, backend: Backend | None = None) -> Proposal:
        """Attack the ``available`` pool images in order until ``want`` really fool.

        Only images the model classifies correctly are attacked: a misclassified pool
        image is a hard standard example, not an adversarial one. With a ``backend`` of
        several slots (Ray workers), that many chunks of :data:`CHUNK` images are attacked
        at once; they are then taken in order exactly as one after another, so the
        proposal is the same (the attack is seeded per call), at the cost of at most one
        wave of chunks attacked past the quota.
        """
        runner = backend or LocalBackend()
        attack = self.spec.build(self.eps, seed=seed)
        shared = {"attack": attack, "model": model, "x_pool": x_pool, "y_pool": y_pool}
        chunks = [torch.as_tensor(list(available[start:start + CHUNK]), dtype=torch.int64)
                  for start in range(0, len(available), CHUNK)]
        wave = runner.slots()
        xs: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        preds: list[torch.Tensor] = []
        origins: list[torch.Tensor] = []
        used: list[int] = []
        tried = 0
        have = kept
        for first in range(0, len(chunks), wave):
            if want - sum(len(o) for o in origins) <= 0:
                break
            crafted = dict(runner.run(_attack_chunk, chunks[first:first + wave], shared))
            for j in range(len(crafted)):
                need = want - sum(len(o) for o in origins)
                if need <= 0:
                    break
                idx = chunks[first + j]
                correct, x_adv = crafted[j]
                x, y = x_pool[idx], y_pool[idx]
                ok = correct & really_fools(model, x_adv, y)
                if self.eps is not None and attack.norm in ("linf", "l2"):
                    ok &= _within_budget(x_adv, x, attack.norm, self.eps)
                ok &= ~duplicates(x_adv, have)
                positions = ok.nonzero().squeeze(1)
                if len(positions) > need:  # quota reached inside this chunk: stop there
                    last = int(positions[need - 1])
                    positions = positions[:need]
                    correct[last + 1:] = False
                    idx = idx[:last + 1]
                tried += int(correct[:len(idx)].sum())
                used += idx.tolist()
                chosen = x_adv[positions]
                xs.append(chosen)
                labels.append(y[positions])
                preds.append(predict(model, chosen).argmax(1) if len(chosen) else y[positions])
                origins.append(idx[positions])
                have = chosen if have is None else torch.cat([have, chosen])
        if not xs:
            return Proposal.empty(x_pool.shape[1:])
        x_out = torch.cat(xs)
        return Proposal(x=x_out, label=torch.cat(labels), fooled_as=torch.cat(preds),
                        origin=torch.cat(origins), groups=["attack"] * len(x_out), used=used,
                        tried=tried)


class FoolingSource:
    """Unbounded fooling images evolved from noise, one per class per evolution."""

    kind = "fooling"

    def __init__(self, input_shape: Sequence[int], num_classes: int,
                 fooling_class: int | None, *, confidence: float = 0.99) -> None:
        self.confidence = confidence
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.fooling_class = fooling_class

    def propose(self, model: nn.Module, want: int, *, seed: int,
                kept: torch.Tensor | None) -> Proposal:
        """Evolve ``ceil(want / K)`` archives; keep the images the model really takes, with
        at least ``confidence``, for the class they were evolved for."""
        from attacks.fooling import FoolingImages

        xs, fooled = [], []
        tried = 0
        have = kept
        for run in range(math.ceil(want / self.num_classes)):
            evolver = FoolingImages(seed=(seed * 1009 + run) % (2**31 - 1),
                                    target_confidence=self.confidence)
            result = evolver.generate(model, self.input_shape)
            images = result.images.to(torch.float32)
            classes = torch.as_tensor(list(result.classes), dtype=torch.int64)
            tried += len(images)
            probs = predict(model, images).softmax(1)
            conf = probs.gather(1, classes[:, None]).squeeze(1)
            # Re-checked by running the model: confidently the class it was evolved for.
            ok = (probs.argmax(1) == classes) & (conf >= self.confidence)
            ok &= ~duplicates(images, have)
            xs.append(images[ok])
            fooled.append(classes[ok])
            have = images[ok] if have is None else torch.cat([have, images[ok]])
        x = torch.cat(xs)[:want]
        as_class = torch.cat(fooled)[:want]
        label = torch.full_like(as_class, -1 if self.fooling_class is None
                                else self.fooling_class)
        return Proposal(x=x, label=label, fooled_as=as_class,
                        origin=torch.full_like(as_class, -1), groups=["fooling"] * len(x),
                        used=[], tried=tried)


class FileSource:
    """Examples collected elsewhere: a training part by group, and a held-out part."""

    kind = "file"

    def __init__(self, examples: Examples, *, heldout_fraction: float, seed: int) -> None:
        self.examples = examples
        self.train_idx, self.heldout_idx = group_split(
            examples.groups, fraction=heldout_fraction, seed=seed)

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out examples (no group of them is ever proposed for training)."""
        idx = torch.as_tensor(self.heldout_idx, dtype=torch.int64)
        return self.examples.x[idx], self.examples.y[idx]

    def propose(self, model: nn.Module, available: Sequence[int], want: int, *,
                kept: torch.Tensor | None) -> Proposal:
        """The ``available`` training-part examples, in order, that the current model gets
        wrong (with their collected labels), up to ``want``."""
        ex = self.examples
        idx = torch.as_tensor(list(available), dtype=torch.int64)
        if len(idx) == 0:
            return Proposal.empty(ex.x.shape[1:])
        x, y = ex.x[idx], ex.y[idx]
        ok = really_fools(model, x, y) & ~duplicates(x, kept)
        positions = ok.nonzero().squeeze(1)[:want]
        last = int(positions[-1]) + 1 if len(positions) == want else len(idx)
        chosen = x[positions]
        return Proposal(x=chosen, label=y[positions],
                        fooled_as=predict(model, chosen).argmax(1) if len(chosen)
                        else y[positions], origin=idx[positions],
                        groups=[ex.groups[int(i)] for i in idx[positions]],
                        used=idx[:last].tolist(), tried=last)


__all__ = ["AttackSource", "FileSource", "FoolingSource", "Proposal"]
