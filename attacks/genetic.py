"""GenAttack: a gradient-free, score-based L-inf attack (Alzantot et al., GECCO 2019).

Each sample owns a population of perturbations in the eps-ball. Every generation
keeps the best individuals (elitism), draws parent pairs with probabilities
``softmax(fitness / tau)``, crosses them over pixel by pixel (each pixel from the
fitter parent with probability proportional to its selection weight), mutates each
pixel with probability ``rho`` by ``U(-alpha * eps, alpha * eps)`` and clips the
children to the eps-ball and the pixel range [0, 1].

All new individuals of all still-active samples are scored as one batch per
generation, so the model sees as many batches as generations run, whatever the number
of samples; a large batch runs in cache-sized passes (``pass_rows``), which give the
same scores as one pass.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
from torch import nn

from attacks.base import Attack, RunResult
from robustness.core.modes import balanced_rows, pass_rows
from robustness.core.validation import (
    MAX_ITERATIONS,
    MAX_POPULATION,
    check_bool,
    check_float,
    check_int,
    invalid,
)

# Adaptive scaling (GenAttack §4): on every plateau rho and alpha shrink by this
# factor, down to the paper's floors (or to the starting value if that is lower).
PLATEAU_DECAY = 0.9
MIN_MUTATION_RATE = 0.1
MIN_ALPHA = 0.15
# give_up's long rate leaves out the first eighth of the generations run: the initial
# population's quick first gains would make every search look promising. Measured on
# recorded fitness traces (9 settings, MNIST ConvNet and its FGSM-trained twin): it
# gives up on no image the whole budget fools, for 10-30% fewer queries than the rate
# since generation 0; leaving out a quarter or a half lost 1-2 of 100.
GIVE_UP_SKIP = 8


def genetic_fitness(logits: torch.Tensor, labels: torch.Tensor, *,
                    targeted: bool) -> torch.Tensor:
    """Fitness to maximise, computed from logits: (M, K) logits, (M,) labels -> (M,).

    Untargeted: ``max_{j != y} log p_j - log p_y``, i.e. the logit margin; it is
    positive exactly when the prediction is not ``y``. Targeted (the paper's form):
    ``log p_t - log sum_{j != t} p_j = z_t - logsumexp_{j != t} z_j``.
    """
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)  # (M,)
    others = logits.scatter(1, labels[:, None], float("-inf"))  # (M, K)
    if targeted:
        return label_logit - others.logsumexp(1)
    return others.amax(1) - label_logit


class GeneticAttack(Attack):
    """GenAttack (Alzantot et al. 2019): black-box L-inf attack by a genetic algorithm.

    Needs only the model's output scores and never computes a gradient, so it works
    on models whose gradients are useless (masked, detached, non-differentiable).

    Parameters
    ----------
    eps
        L-inf budget, >= 0.
    population
        Individuals per sample, >= 2 (the paper uses 4-10 on MNIST).
    generations
        Maximum number of generations, >= 1; the first scores the initial population.
    mutation_rate
        ``rho``: probability that a pixel of a child is mutated, in [0, 1].
    alpha
        Mutation range as a multiple of ``eps``: mutations are ``U(-alpha*eps, alpha*eps)``,
        >= 0. Values above 1 are allowed: such mutations often land outside the ball and
        are clipped onto its faces, where L-inf adversarial perturbations tend to lie.
    tau
        Sampling temperature of ``softmax(fitness / tau)``, > 0; fitness is in logit
        units, so a small ``tau`` is strongly greedy.
    elite
        Best individuals copied unchanged into the next generation, in [1, population).
    adaptive
        Shrink ``rho`` and ``alpha`` by 0.9 per sample on every plateau of ``patience``
        generations without improvement of its best fitness, down to 0.1 and 0.15
        (the paper's floors; a start value below its floor stays constant).
    patience
        Generations without improvement that make a plateau, >= 1 (used if ``adaptive``).
    targeted
        Maximise ``log p_t - log sum_{j != t} p_j`` instead of leaving the label.
    early_stop
        Stop evolving a sample (and spending queries on it) as soon as one individual
        fools the model, returning the fittest fooling individual. Without it every
        sample evolves for all generations and its final elite is returned.
    give_up
        With ``early_stop``: also stop evolving a sample that cannot fool the model in
        the generations left, judged every ``generations // 10`` generations (at least
        10) from the second such window on: its best fitness, extrapolated linearly to
        the last generation at the faster of two rates (its gain per generation since
        the first eighth of the generations run, and over the last window), stays below
        the fitness any fooling individual has (0 untargeted, ``-log(K - 1)`` targeted).
        The elite's fitness never falls (elitism), and a search slows as it converges,
        so the line is optimistic and a sample still closing in keeps its budget. Saves
        most of the budget on samples that are robust at this eps (the bulk of a
        cascade's genetic work); ``False`` spends every generation on them. ``None``
        (default): on, except for a model whose ``piecewise_scores`` attribute is true
        (an ``Ensemble`` under ``max`` or ``vote``): its fitness stalls, then jumps when
        the chosen member or a vote switches, which no extrapolation of the progress so
        far foresees (5-member vote ensemble, 60 MNIST images, eps 0.2, 50 generations:
        with give_up 9 fooled, with the whole budget 16). On recorded fitness traces of
        the MNIST ConvNet and its FGSM-trained twin (9 settings, eps 0.1-0.3, 100-1000
        generations) it gave up on no image the whole budget fools, for 37-81% of the
        queries; the last window's rate alone lost up to 5 of 62, the rate since
        generation 0 spent 10-30% more queries.
    seed
        Seeds every random draw (initial population, selection, crossover, mutation).

    Notes
    -----
    The defaults were tuned on an MNIST ConvNet at eps 0.3: ``rho = 0.03, alpha = 2``
    fooled 99% of 200 test images within 1000 generations (median 253 queries among
    successes), whereas the paper's MNIST setting ``rho = 0.3, alpha = 0.5`` reached
    92% (median 253 queries). The default 10 individuals are the upper end of the
    paper's MNIST range.

    Query convention: one query is one candidate image scored by the model. The
    initial population costs ``population`` queries per sample; each later generation
    costs ``population - elite`` because elites keep their cached scores (the attack
    runs the model in eval mode, so re-scoring them would return the same values).
    The initial population contains the clean input itself, so an input that is
    already misclassified stops after the first generation.

    Model calls: one batch per generation run, of shape ``(A * M, C, H, W)`` for ``A``
    active samples and ``M`` new individuals each. The number of batches of a run is
    therefore the most generations any sample used:
    ``1 + (max(queries) - population) / (population - elite)``. A batch whose largest
    activation exceeds ``PASS_BYTES`` runs in passes of equal size that stay in the
    CPU's caches, where a probe shows the model treats rows independently
    (:func:`~robustness.core.modes.pass_rows`; the reference ConvNet: passes of ~125
    images, the genetic attack at eps 0.1-0.3 on 300-500 MNIST images in 0.63-0.90x the
    time, with the same adversarial examples and queries). Around them the template
    adds its shape check, the layout probe (two passes on 8 images: the model runs with
    ``channels_last`` weights where they give the same logits, ~1.6x faster here) and
    the re-evaluation of the result; the pass-size probe adds one pass of 2 images (and
    of 8 in one and two halves where it splits).
    """

    name: ClassVar[str] = "genetic"
    threat_model: ClassVar[str] = "black-box"
    # The run is all forward passes: channels_last weights where the probe allows.
    memory_layout: ClassVar[str] = "fastest"

    def __init__(self, *, eps: float = 0.3, population: int = 10, generations: int = 1000,
                 mutation_rate: float = 0.03, alpha: float = 2.0, tau: float = 0.1,
                 elite: int = 1, adaptive: bool = False, patience: int = 20,
                 targeted: bool = False, early_stop: bool = True,
                 give_up: bool | None = None,
                 seed: int = 0) -> None:
        owner = type(self).__name__
        self._init_common(norm="linf", eps=eps, targeted=targeted, seed=seed)
        self.population = check_int(owner, "population", population, low=2,
                                    high=MAX_POPULATION)
        self.generations = check_int(owner, "generations", generations, low=1,
                                     high=MAX_ITERATIONS)
        self.mutation_rate = check_float(owner, "mutation_rate", mutation_rate, low=0.0,
                                         high=1.0)
        self.alpha = check_float(owner, "alpha", alpha, low=0.0)
        self.tau = check_float(owner, "tau", tau, low=0.0, low_open=True)
        self.elite = check_int(owner, "elite", elite, low=1)
        if self.elite >= self.population:
            raise invalid(owner, "elite", f"an int in the range [1, population - 1 = "
                          f"{self.population - 1}]", elite)
        self.adaptive = check_bool(owner, "adaptive", adaptive)
        self.patience = check_int(owner, "patience", patience, low=1, high=MAX_ITERATIONS)
        self.early_stop = check_bool(owner, "early_stop", early_stop)
        if give_up is not None and not isinstance(give_up, bool):
            raise invalid(owner, "give_up", "a bool, or None (on unless the model has "
                          "piecewise scores)", give_up)
        self.give_up = give_up

    def _for_every_sample(self) -> GeneticAttack:
        # Without early stop every sample evolves for all generations and returns its
        # fittest individual, so an already misclassified input is perturbed as well.
        variant = copy.copy(self)
        variant.early_stop = False
        return variant

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        with torch.no_grad():
            return self._evolve(model, x, target if target is not None else y)

    def _evolve(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> RunResult:
        """The genetic loop on (N, C, H, W) inputs and (N,) labels (or targets)."""
        eps = float(self.eps or 0.0)
        n, pop = x.shape[0], self.population
        x_out = x.clone()  # (N, C, H, W)
        queries = torch.zeros(n, dtype=torch.int64)
        idx = torch.arange(n)  # (A,) samples still evolving
        xa, lab = x, labels

        # Generation 0: uniform in the ball, plus the clean input as individual 0.
        new = torch.empty((n, pop, *x.shape[1:]), dtype=x.dtype).uniform_(-eps, eps)
        new[:, 0] = 0.0
        new = self._clip(new, xa, eps)  # (A, P, C, H, W) perturbations
        delta = new[:, :0]  # no elites yet
        fit = torch.empty((n, 0), dtype=x.dtype)  # (A, P) fitness of `delta`
        hit = torch.empty((n, 0), dtype=torch.bool)  # (A, P) individual fools the model
        rho = torch.full((n,), self.mutation_rate)
        alpha = torch.full((n,), self.alpha)
        best = torch.full((n,), float("-inf"))
        stalled = torch.zeros(n, dtype=torch.int64)
        plateaus = torch.zeros(n, dtype=torch.int64)
        give_up = self.give_up if self.give_up is not None else \
            not getattr(model, "piecewise_scores", False)
        window = max(10, self.generations // 10)  # give_up's judging interval
        judged = torch.empty(n)  # (A,) best fitness one window ago
        # The generations whose best fitness the long rate needs, and that fitness (A,).
        marks = {g // GIVE_UP_SKIP for g in range(2 * window - 1, self.generations - 1, window)}
        marked: dict[int, torch.Tensor] = {}

        rows: int | None = None
        for generation in range(self.generations):
            if generation > 0:
                delta, fit, hit, new = self._breed(delta, fit, hit, xa, rho, alpha, eps)
            a, m = new.shape[:2]
            batch = (xa[:, None] + new).flatten(0, 1)  # (A * M, C, H, W)
            if generation == 0:  # the run's largest batch: its passes fit every later one
                rows = pass_rows(model, batch)
            # Cache-sized passes: ~0.6-0.9x the time of one pass of thousands of images.
            size = balanced_rows(batch.shape[0], rows)
            logits = torch.cat([model(part) for part in batch.split(size)])  # (A * M, K)
            lab_m = lab.repeat_interleave(m)
            new_hit = logits.argmax(1) == lab_m if self.targeted else logits.argmax(1) != lab_m
            delta = torch.cat([delta, new], 1)
            fit = torch.cat([fit, genetic_fitness(logits, lab_m,
                                                  targeted=self.targeted).view(a, m)], 1)
            hit = torch.cat([hit, new_hit.view(a, m)], 1)
            queries[idx] += m
            if give_up and generation in marks:
                marked[generation] = fit.amax(1)

            if self.early_stop:
                # A fooled sample stops with the fittest fooling individual: its
                # misclassification has the widest margin, so the template confirms it.
                fooled = hit.any(1)  # (A,)
                stop = fooled
                if give_up and (generation + 1) % window == 0:
                    top = fit.amax(1)  # (A,) the elite's fitness, never falling
                    left = self.generations - generation - 1
                    if generation + 1 >= 2 * window and left > 0:
                        # The faster rate: the long one catches a search that gained in
                        # bursts, the last window's one that is speeding up.
                        since = generation // GIVE_UP_SKIP
                        rate = torch.maximum((top - marked[since]) / (generation - since),
                                             (top - judged) / window)
                        reach = top + rate * left
                        stop = fooled | (reach < self._fooling_fitness(logits.shape[1]))
                    judged = top
                if bool(stop.any()):
                    # Hopeless samples keep their fittest individual (masking by hit is a
                    # no-op where nothing fooled the model).
                    pick = fit.masked_fill(~hit & fooled[:, None], float("-inf"))[stop].argmax(1)
                    x_out[idx[stop]] = self._apply(xa[stop], delta[stop, pick])
                    keep = ~stop
                    idx, xa, lab = idx[keep], xa[keep], lab[keep]
                    delta, fit, hit = delta[keep], fit[keep], hit[keep]
                    rho, alpha = rho[keep], alpha[keep]
                    best, stalled, plateaus = best[keep], stalled[keep], plateaus[keep]
                    judged = judged[keep]
                    marked = {g: t[keep] for g, t in marked.items()}
                    if idx.numel() == 0:
                        break

            if self.adaptive:
                top = fit.amax(1)
                stalled = torch.where(top > best, 0, stalled + 1)
                best = torch.maximum(best, top)
                plateau = stalled >= self.patience
                plateaus += plateau.long()
                stalled[plateau] = 0
                rho = _decayed(self.mutation_rate, MIN_MUTATION_RATE, plateaus)
                alpha = _decayed(self.alpha, MIN_ALPHA, plateaus)

        if idx.numel():
            winner = fit.argmax(1)  # (A,) the elite: the best individual ever scored
            x_out[idx] = self._apply(xa, delta[torch.arange(idx.numel()), winner])
        return RunResult(x_adv=x_out, queries=queries,
                         gradient_evaluations=torch.zeros(n, dtype=torch.int64))

    def _breed(self, delta: torch.Tensor, fit: torch.Tensor, hit: torch.Tensor,
               x: torch.Tensor, rho: torch.Tensor, alpha: torch.Tensor,
               eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One generation's selection, crossover and mutation.

        Parameters
        ----------
        delta, fit, hit
            (A, P, C, H, W) perturbations, their (A, P) fitness and (A, P) success flags.
        x
            (A, C, H, W) clean inputs.
        rho, alpha
            (A,) per-sample mutation rate and range.

        Returns
        -------
        The elites' (A, E, C, H, W) perturbations, (A, E) fitness and (A, E) flags, and
        the (A, P - E, C, H, W) children still to be scored.
        """
        a, pop = fit.shape
        n_children = pop - self.elite
        rows = torch.arange(a)[:, None]
        order = fit.topk(self.elite, dim=1).indices  # (A, E)
        probs = torch.softmax(fit / self.tau, dim=1)  # (A, P)
        parents = torch.multinomial(probs, 2 * n_children, replacement=True)
        parents = parents.view(a, n_children, 2)  # (A, M, 2)
        p_parents = probs[rows[:, :, None], parents]  # (A, M, 2)
        p_first = p_parents[..., 0] / p_parents.sum(-1)  # (A, M)
        first = delta[rows, parents[..., 0]]  # (A, M, C, H, W)
        second = delta[rows, parents[..., 1]]
        shape = (a, n_children) + (1,) * (delta.dim() - 2)
        take_first = torch.rand_like(first) < p_first.view(shape)
        children = torch.where(take_first, first, second)
        per_sample = (a,) + (1,) * (delta.dim() - 1)
        mutate = torch.rand_like(children) < rho.view(per_sample)
        span = (alpha * eps).view(per_sample)
        noise = (torch.rand_like(children) * 2 - 1) * span  # U(-alpha*eps, alpha*eps)
        children = self._clip(children + mutate * noise, x, eps)
        return delta[rows, order], fit[rows, order], hit[rows, order], children

    def _fooling_fitness(self, num_classes: int) -> float:
        """The lowest fitness a fooling individual can have: 0 untargeted (the margin);
        targeted, ``z_t > max_j z_j`` implies ``z_t - logsumexp_j z_j > -log(K - 1)``."""
        return -math.log(num_classes - 1) if self.targeted else 0.0

    @staticmethod
    def _clip(delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        """Clip (A, M, C, H, W) perturbations to the eps-ball and to ``x + delta`` in [0, 1]."""
        x = x[:, None]
        return torch.maximum(torch.minimum(delta.clamp(-eps, eps), 1 - x), -x)

    @staticmethod
    def _apply(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The adversarial images ``x + delta`` (A, C, H, W), clamped against rounding."""
        return (x + delta).clamp(0.0, 1.0)


def _decayed(start: float, floor: float, plateaus: torch.Tensor) -> torch.Tensor:
    """``start * 0.9 ** plateaus`` (A,), never below ``min(start, floor)``."""
    return (start * PLATEAU_DECAY ** plateaus.double()).clamp_min(min(start, floor)).float()
