"""Adversarial attacks behind one protocol: ``attack(model, x, y) -> AdversarialBatch``.

Export policy (the same for ``attacks``, ``ensembles`` and ``robustness``): the package
re-exports what a user builds or calls; modules keep their helpers. Attacks by name:
``make_attack("pgd", eps=0.3)``, or specs such as ``"pgd(steps=40)"`` through
:func:`parse_attack_spec`.
"""

from attacks.adapters import FoolboxAttack, TorchattacksAttack
from attacks.base import AdversarialBatch, Attack, RunResult
from attacks.conformance import check_attack
from attacks.fooling import FoolingImages, FoolingResult
from attacks.genetic import GeneticAttack
from attacks.gradient import FGSM, PGD, GradientAttack, L2Geometry, LinfGeometry
from attacks.registry import (
    AttackSpec,
    available_attacks,
    make_attack,
    parse_attack_list,
    parse_attack_spec,
)

__all__ = [
    "FGSM",
    "PGD",
    "AdversarialBatch",
    "Attack",
    "AttackSpec",
    "FoolboxAttack",
    "FoolingImages",
    "FoolingResult",
    "GeneticAttack",
    "GradientAttack",
    "L2Geometry",
    "LinfGeometry",
    "RunResult",
    "TorchattacksAttack",
    "available_attacks",
    "check_attack",
    "make_attack",
    "parse_attack_list",
    "parse_attack_spec",
]
