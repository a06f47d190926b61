"""Adaptive attacks on an ensemble: several ways in, charged per sample with the worst.

An ensemble's aggregation can hide its weakness from a gradient attack (``max`` routes
the gradient through one member, ``vote`` has none). An expert therefore attacks it
several ways and counts a sample as robust only if *no* way fooled the ensemble:

- ``end_to_end``: the attack on the ensemble itself, with its own aggregation;
- ``logit_mean``: the attack on the same members under ``logit_mean`` (a smooth
  surrogate that moves every member at once), evaluated on the real ensemble;
- ``members``: the attack on each member alone, each result evaluated on the ensemble
  (a max ensemble falls as soon as one member is confidently wrong).

A gradient-free attack (``attacks.genetic.GeneticAttack``) passed as ``attack`` needs
only the ensemble's scores and works with every strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from attacks.base import Attack
from ensembles.ensemble import Ensemble
from robustness.core.modes import eval_mode
from robustness.core.validation import check_images, check_labels, invalid

STRATEGIES = ("end_to_end", "logit_mean", "members")


@dataclass
class AdaptiveResult:
    """Per-sample worst case over the strategies.

    Attributes
    ----------
    x_adv
        (B, C, H, W): for each sample, the first candidate that fooled the ensemble, or
        the end-to-end candidate (first strategy's) if none did.
    correct
        (B,) bool: the ensemble is still right on every candidate.
    by_strategy
        Robust accuracy of the ensemble under each strategy alone.
    """

    x_adv: torch.Tensor
    correct: torch.Tensor
    by_strategy: dict[str, float] = field(default_factory=dict)

    @property
    def robust_accuracy(self) -> float:
        """Fraction of samples no strategy fooled."""
        return float(self.correct.float().mean())


def adaptive_attack(attack: Attack, ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, *,
                    strategies: Sequence[str] = ("end_to_end", "logit_mean"),
                    ) -> AdaptiveResult:
    """Attack ``ensemble`` with ``attack`` by each strategy; keep the worst case per sample.

    Parameters
    ----------
    attack
        Any attack of :mod:`attacks` (gradient or gradient-free), untargeted.
    ensemble
        The ensemble under test, with the aggregation it is deployed with.
    x, y
        (B, C, H, W) inputs in [0, 1] and (B,) labels.
    strategies
        A non-empty subset of ``"end_to_end"``, ``"logit_mean"``, ``"members"``.
        ``"members"`` costs one attack per member.

    Returns
    -------
    AdaptiveResult
    """
    owner = "adaptive_attack"
    if not isinstance(attack, Attack):
        raise invalid(owner, "attack", "an attacks.base.Attack", attack)
    if not isinstance(ensemble, Ensemble):
        raise invalid(owner, "ensemble", "an ensembles.Ensemble", ensemble)
    check_images(owner, x)
    check_labels(owner, y, x.shape[0])
    chosen = list(strategies) if not isinstance(strategies, str) else [strategies]
    bad = [s for s in chosen if s not in STRATEGIES]
    if not chosen or bad or len(set(chosen)) != len(chosen):
        raise invalid(owner, "strategies", f"a non-empty subset of {list(STRATEGIES)} without "
                      "repeats", list(strategies) if not isinstance(strategies, str)
                      else strategies)

    candidates: dict[str, list[torch.Tensor]] = {}
    for strategy in chosen:
        targets: list[nn.Module]
        if strategy == "end_to_end":
            targets = [ensemble]
        elif strategy == "logit_mean":
            targets = [ensemble.with_aggregation("logit_mean")]
        else:
            targets = list(ensemble.members)
        candidates[strategy] = [attack(m, x, y).x_adv for m in targets]

    x_adv = candidates[chosen[0]][0].clone()
    correct = torch.ones_like(y, dtype=torch.bool)
    by_strategy: dict[str, float] = {}
    with eval_mode(ensemble), torch.no_grad():
        for strategy, xs in candidates.items():
            strategy_correct = torch.ones_like(correct)
            for xc in xs:
                right = ensemble(xc).argmax(-1) == y
                newly_fooled = correct & ~right
                x_adv[newly_fooled] = xc[newly_fooled]
                correct &= right
                strategy_correct &= right
            by_strategy[strategy] = float(strategy_correct.float().mean())
    return AdaptiveResult(x_adv=x_adv, correct=correct, by_strategy=by_strategy)
