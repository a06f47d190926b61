"""Fooling images (Nguyen, Yosinski & Clune, CVPR 2015): evolve unrecognisable inputs
that a classifier assigns to a class with near-certain confidence.

MAP-Elites with one cell per class: the archive holds, for every class, the image
that has given it the highest softmax probability so far. Each generation mutates
randomly chosen elites and scores all children in one batched forward pass; a child
replaces the elite of *every* class it beats. Pixels (or the genes of a low-resolution
genome) mutate with a per-gene rate that halves every ``mutation_halflife``
generations, by the bounded polynomial mutation of Deb & Agrawal, as in the paper's
direct encoding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attacks.base import check_model_output
from robustness.core.modes import eval_mode
from robustness.core.validation import (
    MAX_ITERATIONS,
    MAX_POPULATION,
    check_choice,
    check_float,
    check_int,
    invalid,
)

ENCODINGS = ("direct", "lowres")


@dataclass(frozen=True)
class FoolingResult:
    """The archive of a :meth:`FoolingImages.generate` run, one entry per class.

    Attributes
    ----------
    images
        (K, C, H, W) the elite image of each class, in [0, 1].
    confidence
        (K,) float64 softmax probability of its class on each elite.
    classes
        The K classes, in the order of the other fields.
    generations
        (K,) int64 generation at which each class first reached ``target_confidence``
        (0 is the initial random population), or -1 if it never did.
    reached
        (K,) bool: the class reached ``target_confidence`` (``generations >= 0``).
    queries
        Candidate images scored in total (classes share every candidate).
    model_calls
        Forward passes of the model: one per generation run.
    wall_time_s
        Seconds the search took.
    target_confidence
        The confidence each class had to reach.
    encoding
        ``"direct"`` or ``"lowres"``.
    """

    images: torch.Tensor
    confidence: torch.Tensor
    classes: tuple[int, ...]
    generations: torch.Tensor
    reached: torch.Tensor
    queries: int
    model_calls: int
    wall_time_s: float
    target_confidence: float
    encoding: str

    def summary(self) -> dict[str, Any]:
        """JSON-able figures (numbers as numbers), per class and overall."""
        return {
            "encoding": self.encoding,
            "target_confidence": self.target_confidence,
            "classes": list(self.classes),
            "confidence": [float(c) for c in self.confidence],
            "generations": [int(g) for g in self.generations],
            "reached": [bool(r) for r in self.reached],
            "all_reached": bool(self.reached.all()),
            "min_confidence": float(self.confidence.min()),
            "generations_run": self.model_calls,
            "queries": self.queries,
            "wall_time_s": self.wall_time_s,
        }



class FoolingImages:
    """Evolve one fooling image per class with MAP-Elites (Nguyen et al. 2015).

    Parameters
    ----------
    classes
        Classes to fool, distinct ints in ``[0, K)``; ``None`` means all ``K`` classes.
    population
        Candidates per generation, >= 1 (the paper uses about 200).
    generations
        Maximum number of generations, >= 1, the initial random one included. The
        search stops earlier once every class has reached ``target_confidence``.
    target_confidence
        Softmax probability each class must reach, in (0, 1).
    encoding
        ``"direct"``: the genome is the image, pixels initialised ``U(0, 1)``.
        ``"lowres"``: the genome is a ``(C, lowres_size, lowres_size)`` image in [0, 1]
        upsampled bilinearly to ``(H, W)``, giving smoother images.
    lowres_size
        Side of the low-resolution genome, >= 1 (used by ``"lowres"``).
    mutation_rate
        Initial probability that a gene mutates, in (0, 1].
    mutation_halflife
        Generations after which the mutation rate has halved, > 0 (1000 in the paper).
    mutation_strength
        Distribution index ``eta`` of polynomial mutation, >= 0; larger values make
        smaller changes (15 in the paper).
    seed
        Seeds every random draw; the global RNG is neither used nor advanced.

    Notes
    -----
    ``generate`` evaluates the model in eval mode (dropout off, so a confidence is a
    property of the image) and restores every submodule's mode afterwards. One
    query is one candidate scored; each generation costs ``population`` queries in
    one forward pass.
    """

    def __init__(self, *, classes: Sequence[int] | None = None, population: int = 200,
                 generations: int = 300, target_confidence: float = 0.9999,
                 encoding: str = "direct", lowres_size: int = 7, mutation_rate: float = 0.1,
                 mutation_halflife: float = 1000.0, mutation_strength: float = 15.0,
                 seed: int = 0) -> None:
        owner = type(self).__name__
        if classes is not None:
            if (isinstance(classes, str | bytes) or not isinstance(classes, Sequence)
                    or not classes
                    or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                               for c in classes)
                    or len(set(classes)) != len(classes)):
                raise invalid(owner, "classes", "None or a non-empty sequence of distinct "
                              "ints >= 0", classes)
            classes = tuple(classes)
        self.classes = classes
        self.population = check_int(owner, "population", population, low=1,
                                    high=MAX_POPULATION)
        self.generations = check_int(owner, "generations", generations, low=1,
                                     high=MAX_ITERATIONS)
        # Open at both ends: a softmax never reaches exactly 1, so 1.0 could never be met.
        self.target_confidence = check_float(owner, "target_confidence", target_confidence,
                                             low=0.0, high=1.0, low_open=True, high_open=True)
        self.encoding = check_choice(owner, "encoding", encoding, ENCODINGS)
        self.lowres_size = check_int(owner, "lowres_size", lowres_size, low=1)
        self.mutation_rate = check_float(owner, "mutation_rate", mutation_rate, low=0.0,
                                         high=1.0, low_open=True)
        self.mutation_halflife = check_float(owner, "mutation_halflife", mutation_halflife,
                                             low=0.0, low_open=True)
        self.mutation_strength = check_float(owner, "mutation_strength", mutation_strength,
                                             low=0.0)
        self.seed = check_int(owner, "seed", seed, low=0)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def generate(self, model: nn.Module, input_shape: Sequence[int]) -> FoolingResult:
        """Evolve fooling images for ``model``.

        Parameters
        ----------
        model
            Maps (N, C, H, W) in [0, 1] to logits (N, K). Left in the mode it was in.
        input_shape
            (C, H, W) of the model's inputs.

        Returns
        -------
        FoolingResult
        """
        owner = type(self).__name__
        if (isinstance(input_shape, str | bytes) or not isinstance(input_shape, Sequence)
                or len(input_shape) != 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                           for d in input_shape)):
            raise invalid(owner, "input_shape", "a sequence (C, H, W) of three positive ints",
                          input_shape)
        shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        if not isinstance(model, nn.Module):
            raise invalid(owner, "model", "a torch.nn.Module returning logits (N, K)",
                          type(model).__name__, raw=True)
        with eval_mode(model):
            num_classes = check_model_output(owner, model, torch.zeros((2, *shape)))
            classes = self.classes if self.classes is not None else tuple(range(num_classes))
            if max(classes) >= num_classes:
                raise invalid(owner, "classes", f"classes in [0, {num_classes - 1}] (the "
                              f"model has {num_classes} outputs)", self.classes)
            start = time.perf_counter()
            with torch.no_grad():
                result = self._search(model, shape, classes)
            elapsed = time.perf_counter() - start
        images, logp, reached_at, calls = result
        confidence = logp.exp()
        return FoolingResult(
            images=images,
            confidence=confidence,
            classes=classes,
            generations=reached_at,
            reached=reached_at >= 0,
            queries=calls * self.population,
            model_calls=calls,
            wall_time_s=elapsed,
            target_confidence=self.target_confidence,
            encoding=self.encoding,
        )

    def _search(self, model: nn.Module, shape: tuple[int, int, int], classes: tuple[int, ...]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """MAP-Elites loop. Returns (K, C, H, W) elites, (K,) float64 log-probabilities,
        (K,) generation each class reached the target (-1 if never) and the model calls."""
        gen = torch.Generator().manual_seed(self.seed)
        c, h, w = shape
        genome_shape = shape if self.encoding == "direct" else (c, self.lowres_size,
                                                                  self.lowres_size)
        cls = torch.tensor(classes)
        k, pop = len(classes), self.population
        target_logp = math.log(self.target_confidence)
        elite_genomes = torch.empty((k, *genome_shape))  # (K, *G)
        elite_logp = torch.full((k,), float("-inf"), dtype=torch.float64)  # (K,)
        reached_at = torch.full((k,), -1, dtype=torch.int64)

        calls = 0
        for generation in range(self.generations):
            if generation == 0:
                children = torch.rand((pop, *genome_shape), generator=gen)  # (P, *G)
            else:
                parents = elite_genomes[torch.randint(k, (pop,), generator=gen)]
                rate = self.mutation_rate * 0.5 ** (generation / self.mutation_halflife)
                children = self._mutate(parents, rate, gen)
            logits = model(self._decode(children, (h, w)))  # (P, K_model)
            calls += 1
            # float64 so that confidences near 1 stay distinguishable.
            logp = logits.double().log_softmax(1)[:, cls]  # (P, K)
            best, who = logp.max(0)  # (K,)
            better = best > elite_logp
            elite_genomes[better] = children[who[better]]
            elite_logp = torch.where(better, best, elite_logp)
            reached_at[(reached_at < 0) & (elite_logp >= target_logp)] = generation
            if bool((reached_at >= 0).all()):
                break
        return self._decode(elite_genomes, (h, w)), elite_logp, reached_at, calls

    def _decode(self, genomes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Genomes (M, *G) -> images (M, C, H, W) in [0, 1]."""
        if self.encoding == "direct":
            return genomes
        # Bilinear interpolation is a convex combination, so [0, 1] is preserved.
        return F.interpolate(genomes, size=size, mode="bilinear", align_corners=False)

    def _mutate(self, genomes: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
        """Bounded polynomial mutation (Deb & Agrawal) of genes in [0, 1], each with
        probability ``rate``: (M, *G) -> (M, *G)."""
        u = torch.rand(genomes.shape, generator=gen)
        chosen = torch.rand(genomes.shape, generator=gen) < rate
        power = self.mutation_strength + 1.0
        lower = u < 0.5
        # Distance to the bound the gene moves towards, so a step never leaves [0, 1].
        room = torch.where(lower, genomes, 1.0 - genomes)
        base = torch.where(lower, 2 * u, 2 * (1 - u)) + torch.where(
            lower, 1 - 2 * u, 2 * u - 1) * (1.0 - room) ** power
        step = base ** (1.0 / power) - 1.0
        step = torch.where(lower, step, -step)
        return torch.where(chosen, (genomes + step).clamp(0.0, 1.0), genomes)
