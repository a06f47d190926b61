"""Which candidates a DADC round keeps: those that really fool the current model, once.

Kept only what the model itself gets wrong when it is run again on the candidate (never
the source's own bookkeeping); exact and near duplicates (of each other and of examples
kept in earlier rounds) are dropped, so a round cannot fill its quota with one image.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from robustness.core.modes import predict

# Two images closer than this in every pixel are one image: below the 8-bit quantum, a
# person (or a PNG) could not tell them apart.
NEAR_DUPLICATE = 1.0 / 255


def really_fools(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``x`` again: (N,) bool, True where it does not predict ``y``.

    Candidates that are not finite or leave [0, 1] are never "fooling": they are not images.
    """
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.bool)
    valid = torch.isfinite(x).flatten(1).all(1) & (x.flatten(1).min(1).values >= 0) & \
        (x.flatten(1).max(1).values <= 1)
    pred = predict(model, x).argmax(1)
    return valid & (pred != y)


def duplicates(x: torch.Tensor, kept: torch.Tensor | None = None, *,
               tolerance: float = NEAR_DUPLICATE) -> torch.Tensor:
    """(N,) bool: ``x[i]`` is within ``tolerance`` (max pixel difference) of ``kept`` or of
    an earlier ``x[j]``, j < i. ``x`` (N, C, H, W), ``kept`` (M, C, H, W) or None."""
    flat = x.flatten(1).double()
    dup = torch.zeros(len(x), dtype=torch.bool)
    if len(x) == 0:
        return dup
    if kept is not None and len(kept):
        ref = kept.flatten(1).double()
        for start in range(0, len(ref), 2048):  # bounded memory: N x 2048 distances
            d = torch.cdist(flat, ref[start:start + 2048], p=float("inf"))
            dup |= (d <= tolerance).any(1)
    within = torch.cdist(flat, flat, p=float("inf")) <= tolerance
    earlier = torch.tril(within, diagonal=-1).any(1)  # a match with some j < i
    return dup | earlier


def group_split(groups: Sequence[str], *, fraction: float,
                seed: int) -> tuple[list[int], list[int]]:
    """Split example indices by group: every group lands wholly in train or in test.

    Returns (train indices, held-out indices), each ascending. ``fraction`` of the groups
    (at least one, at most all but one) are held out; with a single group nothing is.
    """
    names = sorted(set(groups))
    rng = random.Random(seed)
    rng.shuffle(names)
    n_held = 0 if len(names) < 2 else min(len(names) - 1, max(1, round(fraction * len(names))))
    held = set(names[:n_held])
    train = [i for i, g in enumerate(groups) if g not in held]
    test = [i for i, g in enumerate(groups) if g in held]
    return train, test


__all__ = ["NEAR_DUPLICATE", "duplicates", "group_split", "really_fools"]
