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

import collections
import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attacks.base import AdversarialBatch, Attack, RunResult
from attacks.gradient import GradientAttack
from attacks.registry import AttackSpec, make_attack
from ensembles.ensemble import Ensemble
from robustness.core.modes import eval_mode, model_key
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


def _strategies(owner: str, strategies: Sequence[str]) -> list[str]:
    chosen = list(strategies) if not isinstance(strategies, str) else [strategies]
    bad = [s for s in chosen if s not in STRATEGIES]
    if not chosen or bad or len(set(chosen)) != len(chosen):
        raise invalid(owner, "strategies", f"a non-empty subset of {list(STRATEGIES)} without "
                      "repeats", list(strategies) if not isinstance(strategies, str)
                      else strategies)
    return chosen


@dataclass
class _Crafted:
    """One crafting on a surrogate or member, on every sample, kept for the next call."""

    key: tuple[Hashable, ...]  # the attack's repr, the target's and each member's model_key
    members: list[weakref.ref[nn.Module]]  # ids in `key` are these modules, still alive
    x: torch.Tensor  # (B, C, H, W) a copy of the inputs
    y: torch.Tensor  # (B,)
    run: RunResult


# A surrogate's or member's crafting does not depend on the ensemble's aggregation: an
# ensemble compared under mean, max and vote has the same logit_mean surrogate, attacked
# on the same inputs, three times. The last few are kept (inputs of up to 8 MiB, such as
# 500 CIFAR-10 images: the kept copies stay under 128 MiB).
_CRAFTED: collections.deque[_Crafted] = collections.deque(maxlen=8)
_CRAFTED_MAX_BYTES = 8 * 2**20


def _craft(attack: Attack, target: nn.Module, x: torch.Tensor, y: torch.Tensor) -> RunResult:
    """The checked inputs and per-sample counts of ``attack`` on every sample of ``target``,
    not judged on it: a surrogate or member is not the model the candidates are judged on
    (``Attack.craft``; the success check would be two passes of ``target`` thrown away)."""
    x_adv, run, _, _, _ = attack._template(target, x, y, None, every_sample=True,
                                           judge=False)
    return RunResult(x_adv=x_adv, queries=run.queries.to(torch.int64),
                     gradient_evaluations=run.gradient_evaluations.to(torch.int64))


def _craft_every_sample(attack: Attack, target: nn.Module, members: list[nn.Module],
                        x: torch.Tensor, y: torch.Tensor) -> RunResult:
    """:func:`_craft`, reused when the same attack already ran on the same inputs with the
    same members in the same state (see ``model_key``).

    Only our own gradient attacks (not subclasses, which may keep state their repr does
    not show) are reused: their repr names every hyperparameter and the seed, and a run
    is a function of those, the members and the inputs.
    """
    if type(attack).__module__ != GradientAttack.__module__ or \
            x.numel() * x.element_size() > _CRAFTED_MAX_BYTES:
        return _craft(attack, target, x, y)
    # A surrogate is a fresh view of the members: what it adds is its rule and layout.
    wrapper = None if target is members[0] else (
        type(target), getattr(target, "aggregation", None),
        getattr(target, "channels_last", None))
    key = (repr(attack), wrapper, *(model_key(m, x) for m in members))
    for c in _CRAFTED:
        if c.key == key and all(r() is m for r, m in zip(c.members, members, strict=True)) \
                and torch.equal(c.x, x) and torch.equal(c.y, y):
            return c.run
    run = _craft(attack, target, x, y)
    _CRAFTED.append(_Crafted(key, [weakref.ref(m) for m in members], x.clone(), y.clone(),
                             run))
    return run


def _worst_case(attack: Attack, ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor,
                chosen: list[str]) -> tuple[AdaptiveResult, torch.Tensor, torch.Tensor]:
    """Run every strategy; return the per-sample worst case and the summed per-sample
    queries and gradient evaluations (B,) of every attack run."""
    candidates: dict[str, list[torch.Tensor]] = {}
    queries = torch.zeros(len(y), dtype=torch.int64)
    gradients = torch.zeros(len(y), dtype=torch.int64)
    for strategy in chosen:
        targets: list[nn.Module]
        if strategy == "end_to_end":
            targets = [ensemble]
        elif strategy == "logit_mean":
            targets = [ensemble.with_aggregation("logit_mean")]
        else:
            targets = list(ensemble.members)
        candidates[strategy] = []
        for m in targets:
            batch: AdversarialBatch | RunResult
            if strategy == "end_to_end":
                batch = attack(m, x, y)
            else:
                # A surrogate or member is not the model judged: craft on every sample, or
                # an input the surrogate already gets wrong would reach the ensemble
                # unperturbed.
                owners = list(ensemble.members) if strategy == "logit_mean" else [m]
                batch = _craft_every_sample(attack, m, owners, x, y)
            candidates[strategy].append(batch.x_adv)
            queries += batch.queries
            gradients += batch.gradient_evaluations

    x_adv = candidates[chosen[0]][0].clone()
    correct = torch.ones_like(y, dtype=torch.bool)
    by_strategy: dict[str, float] = {}
    with eval_mode(ensemble), torch.no_grad():
        for strategy, xs in candidates.items():
            strategy_correct = torch.ones_like(correct)
            for xc in xs:
                right = ensemble(xc).argmax(-1) == y
                queries += 1  # judging a candidate is one more query of the ensemble
                newly_fooled = correct & ~right
                x_adv[newly_fooled] = xc[newly_fooled]
                correct &= right
                strategy_correct &= right
            by_strategy[strategy] = float(strategy_correct.float().mean())
    return AdaptiveResult(x_adv=x_adv, correct=correct, by_strategy=by_strategy), queries, \
        gradients


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
    chosen = _strategies(owner, strategies)
    return _worst_case(attack, ensemble, x, y, chosen)[0]


class AdaptiveAttack(Attack):
    """:func:`adaptive_attack` as an :class:`~attacks.base.Attack`, so that ``evaluate()``
    can run it like any other attack (confidence intervals, worst case, checks).

    The model it attacks must be an :class:`~ensembles.Ensemble`. Norm, budget, seed and
    threat model are the base attack's.

    >>> spec = AdaptiveAttack.spec("pgd", steps=20)  # doctest: +SKIP
    >>> evaluate(ensemble, data, [spec], [0.1, 0.2])  # doctest: +SKIP
    """

    def __init__(self, base: Attack, *,
                 strategies: Sequence[str] = ("end_to_end", "logit_mean")) -> None:
        if not isinstance(base, Attack) or base.targeted:
            raise invalid("AdaptiveAttack", "base", "an untargeted attacks.base.Attack", base)
        self.base = base
        self.strategies = tuple(_strategies("AdaptiveAttack", strategies))
        self._init_common(norm=base.norm, eps=base.eps, targeted=False, seed=base.seed)

    def _for_every_sample(self) -> AdaptiveAttack:
        return AdaptiveAttack(self.base._for_every_sample(), strategies=self.strategies)

    @property
    def threat_model(self) -> str:  # type: ignore[override]
        return self.base.threat_model

    @classmethod
    def spec(cls, base: str, *, strategies: Sequence[str] = ("end_to_end", "logit_mean"),
             **kwargs: Any) -> AttackSpec:
        """An attack spec for ``evaluate()``: the registry attack ``base`` with ``kwargs``,
        attacked adaptively. Its label is ``adaptive-BASE(...)``."""
        chosen = tuple(_strategies("AdaptiveAttack.spec", strategies))

        def build(**built: Any) -> AdaptiveAttack:
            return cls(make_attack(base, **built), strategies=chosen)

        return AttackSpec(f"adaptive-{base}", dict(kwargs), factory=build)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        if not isinstance(model, Ensemble):
            raise invalid("AdaptiveAttack", "model", "an ensembles.Ensemble (the strategies "
                          "attack its members and surrogate)", type(model).__name__, raw=True)
        result, queries, gradients = _worst_case(self.base, model, x, y, list(self.strategies))
        return RunResult(x_adv=result.x_adv, queries=queries, gradient_evaluations=gradients)
