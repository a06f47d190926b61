"""The :class:`Ensemble` module: N members and one aggregation rule.

Aggregations, for member probabilities ``p_m = softmax(z_m)`` of shape (N, B, K):

- ``mean``: ``mean_m p_m``.
- ``max``: the distribution of the most confident member, ``p_{m*}`` with
  ``m* = argmax_m max_k p_mk`` per sample (ties: the lowest member index).
- ``vote``: majority of the members' top-1 predictions. Ties are broken by the mean
  probability, then by the lowest class index, so the result is deterministic. The
  distribution returned is ``(votes + 0.5 * mean_p) / (N + 0.5)``: vote shares, nudged
  by less than one vote, so its argmax is exactly the tie-broken majority.
- ``logit_mean``: ``softmax(mean_m z_m)``.

:meth:`Ensemble.forward` returns the *log* of the aggregated distribution (B, K)
(``logit_mean`` returns the mean logits), so ``softmax(forward(x))`` is the
ensemble's distribution and every attack can treat the ensemble as a classifier.

Gradients, and how to attack each aggregation (document for users)
-------------------------------------------------------------------
- ``mean`` and ``logit_mean`` are smooth: end-to-end PGD on them is a proper
  white-box attack.
- ``max`` routes the gradient through the single most confident member only, and that
  member switches as the input moves: a piecewise-smooth, often poorly conditioned
  objective. A max ensemble falls as soon as *one* member is pushed to a confident
  wrong class, so the adaptive attack is PGD on the ``logit_mean`` surrogate (moves
  all members together) or on each member, evaluated on the max ensemble.
- ``vote`` has no useful gradient: counts are piecewise constant and only the
  tie-break term (``0.5 / (N + 0.5)`` times the mean) carries gradient. Attack the
  ``logit_mean`` surrogate, or use the genetic attack, which needs scores only.

:func:`aggregate` applies a rule to member logits computed elsewhere, which lets an
experiment evaluate many aggregations and member subsets from one pass per member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ensembles.sampling import SamplingPlan
from robustness.core.modes import balanced_rows, eval_mode, pass_rows
from robustness.core.validation import (
    ParameterError,
    check_choice,
    check_images,
    check_labels,
    invalid,
)

AGGREGATIONS = ("mean", "max", "vote", "logit_mean")


class EnsembleMismatchError(ParameterError):
    """Members disagree on input shape or number of classes."""


def aggregate(member_logits: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Aggregate member logits into the ensemble's log-distribution.

    Parameters
    ----------
    member_logits
        (N, B, K) logits of N members on B inputs.
    aggregation
        One of ``"mean"``, ``"max"``, ``"vote"``, ``"logit_mean"``.

    Returns
    -------
    torch.Tensor
        (B, K). Log-probabilities for ``mean``/``max``/``vote``; mean logits for
        ``logit_mean``. ``softmax`` of it is the ensemble's distribution.
    """
    check_choice("aggregate", "aggregation", aggregation, AGGREGATIONS)
    if not isinstance(member_logits, torch.Tensor) or member_logits.dim() != 3:
        raise invalid("aggregate", "member_logits", "a tensor of shape (N, B, K)", member_logits)
    if member_logits.shape[0] < 1:
        raise invalid("aggregate", "member_logits", "logits of at least one member", 0, raw=True)
    if aggregation == "logit_mean":
        return member_logits.mean(0)
    log_p = member_logits.log_softmax(-1)  # (N, B, K)
    n = member_logits.shape[0]
    if aggregation == "mean":
        return log_p.logsumexp(0) - math.log(n)
    if aggregation == "max":
        confidence = log_p.amax(-1)  # (N, B)
        # argmax returns the first maximal index: ties go to the lowest member index.
        best = confidence.argmax(0)  # (B,)
        index = best[None, :, None].expand(1, *log_p.shape[1:])
        return log_p.gather(0, index).squeeze(0)
    votes = nn.functional.one_hot(log_p.argmax(-1), log_p.shape[-1]).sum(0)  # (B, K)
    # log((votes + 0.5 * mean_p) / (N + 0.5)) in log space: mean_p may underflow to 0 for
    # confident members, and log(0) would give -inf logits and NaN gradients.
    log_mean = log_p.logsumexp(0) - math.log(n)
    return torch.logaddexp(votes.to(log_p.dtype).log(), log_mean + math.log(0.5)) - math.log(
        n + 0.5)


class Ensemble(nn.Module):
    """An ensemble classifier over ``members`` with one aggregation rule.

    Parameters
    ----------
    members
        N >= 1 modules mapping (B, C, H, W) to (B, K) logits, all with the same input
        shape and number of classes K.
    aggregation
        ``"mean"`` (default), ``"max"``, ``"vote"`` or ``"logit_mean"``; see the module
        docstring for definitions and for which give useful gradients.
    input_shape
        (C, H, W), optional. Members that declare ``input_shape`` / ``num_classes``
        attributes (all reference models do) are checked against each other and
        against this; outputs are checked on every forward either way.
    channels_last
        Run members in ``channels_last`` memory format (about 2x faster for convolutions
        on CPU, measured in ``benchmarks/bench_ensembles.py``). Numerics are unchanged up
        to float rounding; the input is not modified.

    Shapes
    ------
    ``forward``: (B, C, H, W) -> (B, K) log-distribution (mean logits for ``logit_mean``).
    ``member_logits``: (B, C, H, W) -> (N, B, K).
    """

    def __init__(self, members: Sequence[nn.Module], aggregation: str = "mean", *,
                 input_shape: tuple[int, int, int] | None = None,
                 channels_last: bool = False) -> None:
        super().__init__()
        owner = "Ensemble"
        if isinstance(members, nn.Module) or not isinstance(members, Sequence):
            raise invalid(owner, "members", "a sequence of nn.Module", members)
        if len(members) < 1:
            raise invalid(owner, "members", "at least 1 member (N >= 1)", "0 members", raw=True)
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise invalid(owner, f"members[{i}]", "an nn.Module", m)
        self.aggregation = check_choice(owner, "aggregation", aggregation, AGGREGATIONS)
        self.members = nn.ModuleList(members)
        self.input_shape, self.num_classes = _common_shape(members, input_shape)
        self.channels_last = bool(channels_last)
        # Provenance, filled in by ensembles.members.train_members.
        self.plan: SamplingPlan | None = None
        self.seed: int | None = None
        self.training_log: list[dict[str, Any]] = []
        if self.channels_last:
            self.members.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def __len__(self) -> int:
        return len(self.members)

    @property
    def piecewise_scores(self) -> bool:
        """Whether the scores jump as the input moves: under ``max`` (the chosen member
        switches) and ``vote`` (a vote flips). Read by score-based attacks, e.g. the
        genetic attack does not give up on a sample whose progress has stalled."""
        return self.aggregation in ("max", "vote")

    def with_aggregation(self, aggregation: str) -> Ensemble:
        """The same members (shared, not copied) under another aggregation."""
        return self._view(list(self.members), aggregation)

    def subset(self, n: int) -> Ensemble:
        """The first ``n`` members (shared), same aggregation: nested ensembles."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self):
            raise invalid("Ensemble.subset", "n", f"an int in [1, {len(self)}]", n)
        return self._view(list(self.members)[:n], self.aggregation)

    def _view(self, members: list[nn.Module], aggregation: str) -> Ensemble:
        out = Ensemble(members, aggregation, input_shape=self.input_shape)
        out.channels_last = self.channels_last
        out.plan, out.seed, out.training_log = self.plan, self.seed, self.training_log
        out.train(self.training)
        return out

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member: (B, C, H, W) -> (N, B, K); differentiable."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        outs: list[torch.Tensor] = []
        for i, m in enumerate(self.members):
            z = m(x)
            if z.dim() != 2 or z.shape[0] != x.shape[0]:
                raise EnsembleMismatchError(
                    f"Member {i} of the Ensemble must return logits of shape (B, K) = "
                    f"({x.shape[0]}, K). Got shape {tuple(z.shape)} instead.")
            if outs and z.shape[1] != outs[0].shape[1]:
                raise EnsembleMismatchError(
                    f"Every member of the Ensemble must return the same number of classes: "
                    f"member 0 returns {outs[0].shape[1]}, member {i} returns {z.shape[1]}.")
            outs.append(z)
        return torch.stack(outs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K): log of the aggregated distribution."""
        return aggregate(self.member_logits(x), self.aggregation)

    @torch.no_grad()
    def member_predictions(self, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
        """Top-1 class of every member on (B, C, H, W) -> (N, B) int64, in eval mode."""
        check_images("Ensemble.member_predictions", x)
        with eval_mode(self):
            # Batches no larger than the cache-sized passes of attacks (pass_rows).
            size = max(1, min(batch_size, balanced_rows(x.shape[0], pass_rows(self, x))))
            parts = [self.member_logits(x[i:i + size]).argmax(-1)
                     for i in range(0, x.shape[0], size)]
        return torch.cat(parts, dim=1)

    def member_accuracy(self, x: torch.Tensor, y: torch.Tensor, *,
                        batch_size: int = 1000) -> list[float]:
        """Accuracy of each member on (x (B, C, H, W), y (B,)): a list of N floats."""
        check_labels("Ensemble.member_accuracy", y, x.shape[0])
        correct = self.member_predictions(x, batch_size=batch_size) == y[None]
        return [float(c) for c in correct.float().mean(1)]

    def extra_repr(self) -> str:
        return f"n_members={len(self)}, aggregation={self.aggregation!r}"


def _common_shape(members: Sequence[nn.Module], input_shape: tuple[int, int, int] | None,
                  ) -> tuple[tuple[int, int, int] | None, int | None]:
    """Check declared input shapes and class counts agree; return the common ones."""
    shapes = {i: tuple(m.input_shape) for i, m in enumerate(members)  # type: ignore[arg-type]
              if isinstance(getattr(m, "input_shape", None), tuple | list)}
    classes = {i: int(m.num_classes) for i, m in enumerate(members)  # type: ignore[arg-type]
               if isinstance(getattr(m, "num_classes", None), int)}
    expected_shape = tuple(input_shape) if input_shape is not None else (
        next(iter(shapes.values())) if shapes else None)
    for i, shape in shapes.items():
        if shape != expected_shape:
            raise EnsembleMismatchError(
                f"Every member of the Ensemble must take inputs of shape {expected_shape}. "
                f"Member {i} takes {shape} instead.")
    first, num_classes = next(iter(classes.items())) if classes else (0, None)
    for i, k in classes.items():
        if k != num_classes:
            raise EnsembleMismatchError(
                f"Every member of the Ensemble must have the same number of classes: member "
                f"{first} has {num_classes}, member {i} has {k}.")
    return expected_shape, num_classes  # type: ignore[return-value]
