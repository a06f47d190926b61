"""Ensembles of classifiers: sampling plans, the Ensemble module, member training.

>>> from ensembles import train_members
>>> ensemble = train_members(dataset, 5, plan="bootstrap", aggregation="max")  # doctest: +SKIP
>>> log_probs = ensemble(x)  # (B, K); any attack can attack it end to end  # doctest: +SKIP
"""

from ensembles.adaptive import STRATEGIES, AdaptiveAttack, AdaptiveResult, adaptive_attack
from ensembles.ensemble import AGGREGATIONS, Ensemble, EnsembleMismatchError, aggregate
from ensembles.members import EnsembleResumeError, load_members, train_members
from ensembles.sampling import PLANS, MemberSeeds, SamplingPlan, member_seeds

__all__ = [
    "AGGREGATIONS",
    "PLANS",
    "STRATEGIES",
    "AdaptiveAttack",
    "AdaptiveResult",
    "Ensemble",
    "EnsembleMismatchError",
    "EnsembleResumeError",
    "MemberSeeds",
    "SamplingPlan",
    "adaptive_attack",
    "aggregate",
    "load_members",
    "member_seeds",
    "train_members",
]
