"""Adversarial attacks behind one protocol: ``attack(model, x, y) -> AdversarialBatch``."""

from attacks.base import AdversarialBatch, Attack, RunResult
from attacks.gradient import FGSM, PGD, GradientAttack, L2Geometry, LinfGeometry

__all__ = [
    "FGSM",
    "PGD",
    "AdversarialBatch",
    "Attack",
    "GradientAttack",
    "L2Geometry",
    "LinfGeometry",
    "RunResult",
]
