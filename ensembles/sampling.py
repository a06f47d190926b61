"""Sampling plans: which training examples each ensemble member sees.

- ``bootstrap``: ``round(fraction * n)`` indices drawn *with* replacement (Breiman's
  bagging; ``fraction = 1`` is the classical bootstrap, ~63.2% unique examples).
- ``subsample``: ``round(fraction * n)`` distinct indices drawn *without* replacement.
  This is what the original ensemble experiment's code did (80%), although it was
  described as bootstrapping.
- ``uniform``: every member sees the full training set; members differ only by their
  seed (initialisation, dropout and batch order).

One ensemble seed derives every member's seeds through :func:`member_seeds`. Member
``i``'s seeds depend only on ``(seed, i)``, never on the ensemble size, so the first
5 members of a 50-member ensemble are exactly a 5-member ensemble with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from robustness.core.validation import check_choice, check_float, check_int, invalid

PLANS = ("bootstrap", "subsample", "uniform")
DEFAULT_FRACTION = {"bootstrap": 1.0, "subsample": 0.8, "uniform": 1.0}


@dataclass(frozen=True)
class MemberSeeds:
    """The three independent seeds of one member, derived from the ensemble seed."""

    sample: int
    init: int
    train: int


def member_seeds(seed: int, member: int) -> MemberSeeds:
    """Seeds of member ``member`` (0-based) of an ensemble seeded with ``seed``.

    Uses NumPy's ``SeedSequence`` spawn keys, so streams of different members (and of
    the sample / init / train roles) are statistically independent.
    """
    check_int("member_seeds", "seed", seed, low=0)
    check_int("member_seeds", "member", member, low=0)
    words = np.random.SeedSequence(seed, spawn_key=(member,)).generate_state(3, dtype=np.uint32)
    # Positive and < 2**31 so every torch / numpy API accepts them.
    s, i, t = (int(w) & 0x7FFFFFFF for w in words)
    return MemberSeeds(sample=s, init=i, train=t)


@dataclass(frozen=True)
class SamplingPlan:
    """How each member's training sample is drawn.

    Parameters
    ----------
    kind
        ``"bootstrap"``, ``"subsample"`` or ``"uniform"``.
    fraction
        Sample size as a fraction of the training set, in (0, 1]. Defaults: bootstrap
        1.0, subsample 0.8 (the original experiment), uniform 1.0 (the only value it
        accepts: uniform members see all the data).
    """

    kind: str
    fraction: float | None = None

    KINDS: ClassVar[tuple[str, ...]] = PLANS

    def __post_init__(self) -> None:
        check_choice("SamplingPlan", "kind", self.kind, PLANS)
        fraction = DEFAULT_FRACTION[self.kind] if self.fraction is None else self.fraction
        fraction = check_float("SamplingPlan", "fraction", fraction, low=0.0, high=1.0,
                               low_open=True)
        if self.kind == "uniform" and fraction != 1.0:
            raise invalid("SamplingPlan", "fraction", "1.0 for the 'uniform' plan (every member "
                          "sees the full training set; use 'subsample' for less)", fraction)
        object.__setattr__(self, "fraction", fraction)

    @property
    def size_fraction(self) -> float:
        """The resolved fraction (never None after construction)."""
        assert self.fraction is not None
        return self.fraction

    def sample_size(self, n: int) -> int:
        """Number of indices drawn from a training set of ``n`` examples (at least 1)."""
        check_int("SamplingPlan.sample_size", "n", n, low=1)
        return max(1, round(self.size_fraction * n))

    def indices(self, n: int, seed: int) -> torch.Tensor:
        """Training indices of one member, shape (sample_size(n),), int64.

        Parameters
        ----------
        n
            Size of the full training set.
        seed
            The member's sample seed (:attr:`MemberSeeds.sample`).
        """
        check_int("SamplingPlan.indices", "seed", seed, low=0)
        size = self.sample_size(n)
        gen = torch.Generator().manual_seed(seed)
        if self.kind == "bootstrap":
            return torch.randint(0, n, (size,), generator=gen)
        if self.kind == "subsample":
            return torch.randperm(n, generator=gen)[:size]
        return torch.arange(n)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"kind": self.kind, "fraction": self.size_fraction}

    @classmethod
    def parse(cls, value: SamplingPlan | str) -> SamplingPlan:
        """Accept a plan, ``"bootstrap"`` or ``"subsample:0.5"``-style text."""
        if isinstance(value, SamplingPlan):
            return value
        if not isinstance(value, str):
            raise invalid("SamplingPlan", "plan", f"one of {list(PLANS)} (optionally "
                          "'kind:fraction') or a SamplingPlan", value)
        kind, _, frac = value.partition(":")
        if not frac:
            return cls(kind.strip())
        try:
            fraction = float(frac)
        except ValueError:
            raise invalid("SamplingPlan", "fraction", "a number in (0, 1]", frac) from None
        return cls(kind.strip(), fraction)
