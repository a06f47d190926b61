"""What a DADC run is asked to do: :class:`DadcConfig`, checked before any work starts."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from robustness.core.validation import (
    MAX_ITERATIONS,
    check_choice,
    check_float,
    check_int,
    invalid,
)

OWNER = "run_dadc"
RETRAIN = ("finetune", "scratch")
BUILT_IN_SOURCES = ("fgsm", "pgd", "genetic", "fooling", "file:PATH.npz")


@dataclass(frozen=True)
class DadcConfig:
    """One DADC run: data, starting model, the source of fooling examples, and the rounds.

    Parameters
    ----------
    data
        Dataset name as :func:`robustness.data.load_dataset` takes it (``mnist``,
        ``fashion-mnist``, ``digits``, ``idx:DIR``, ``PATH.npz``).
    rounds
        Collection rounds after round 0 (the starting model), >= 1.
    per_round
        Examples each arm adds per round: the DADC arm up to this many fooling examples,
        the control arm exactly as many standard pool examples as the DADC arm added.
    source
        Where candidates come from: a registry attack spec (``fgsm``, ``pgd``,
        ``'pgd(steps=40)'``, ``genetic``, ...), ``fooling`` (unbounded fooling images
        evolved from noise) or ``file:PATH.npz`` (examples collected elsewhere).
    eps
        The budget of a bounded source, and of the fixed and fresh evaluation attacks.
    initial
        Training images the starting model is trained on; the rest of the training split
        is the pool. Default: a quarter of the training split.
    model
        Architecture of the starting model (and of ``retrain="scratch"``); ``auto``: the
        ConvNet for images of at least 28 x 28, else the MLP.
    start_model
        A checkpoint to start from instead of training round 0.
    retrain
        ``finetune``: continue training the current model on its whole training set;
        ``scratch``: train a fresh model on it each round.
    eval_attack
        The attack of the fixed and fresh evaluation sets. Default: the source when it is
        a bounded attack, else ``pgd``.
    fooling_label
        What unbounded fooling images are trained as: ``none`` (default: measured, never
        trained on) or ``class:K`` (a class of the dataset that means "none of these").
    epochs, finetune_epochs
        Epochs of round 0 (and of ``scratch``) and of each fine-tuning round.
    n_eval
        Test images evaluated per round (``None``: all).
    heldout_fraction
        ``file:`` sources: the fraction of contributor groups held out as a test set.
    fooling_confidence
        ``fooling`` source: the confidence in its class at which an evolved image counts as
        fooling the model (Nguyen et al. used 0.9999).
    checks
        Run the evaluation's sanity checks on round 0 and the last round (their findings
        say when a number is not to be trusted yet).
    seed
        Seeds the split, the pool order, the attacks and training.
    """

    data: str = "mnist"
    rounds: int = 5
    per_round: int = 400
    source: str = "pgd"
    eps: float | None = None
    initial: int | None = None
    model: str = "auto"
    start_model: str | None = None
    retrain: str = "finetune"
    eval_attack: str | None = None
    fooling_label: str = "none"
    epochs: int = 6
    finetune_epochs: int = 8
    n_eval: int | None = 1000
    heldout_fraction: float = 0.3
    fooling_confidence: float = 0.99
    checks: bool = True
    seed: int = 0
    data_root: str | None = None

    @classmethod
    def quick(cls, **overrides: Any) -> DadcConfig:
        """A small run (2 rounds of 150, 300 test images) that shows the loop in minutes."""
        base: dict[str, Any] = dict(rounds=2, per_round=150, initial=800, epochs=4,
                                    finetune_epochs=2, n_eval=300)
        return cls(**{**base, **overrides})

    def __post_init__(self) -> None:
        check_int(OWNER, "rounds", self.rounds, low=1, high=MAX_ITERATIONS)
        check_int(OWNER, "per_round", self.per_round, low=1)
        if self.initial is not None:
            check_int(OWNER, "initial", self.initial, low=1)
        check_int(OWNER, "epochs", self.epochs, low=1, high=MAX_ITERATIONS)
        check_int(OWNER, "finetune_epochs", self.finetune_epochs, low=1, high=MAX_ITERATIONS)
        if self.n_eval is not None:
            check_int(OWNER, "n_eval", self.n_eval, low=1)
        check_int(OWNER, "seed", self.seed, low=0)
        check_choice(OWNER, "retrain", self.retrain, RETRAIN)
        check_float(OWNER, "heldout_fraction", self.heldout_fraction, low=0.0, high=1.0,
                    low_open=True, high_open=True)
        check_float(OWNER, "fooling_confidence", self.fooling_confidence, low=0.0, high=1.0,
                    low_open=True, high_open=True)
        if not isinstance(self.checks, bool):
            raise invalid(OWNER, "checks", "True or False", self.checks)
        if self.eps is not None:
            check_float(OWNER, "eps", self.eps, low=0.0, low_open=True)
        if not isinstance(self.source, str) or not self.source.strip():
            raise invalid(OWNER, "source", f"one of {', '.join(BUILT_IN_SOURCES)} or an "
                          "attack spec", self.source)
        if self.source.startswith("file:"):
            path = self.source[len("file:"):]
            if not path.endswith(".npz"):
                raise invalid(OWNER, "source", "file:PATH.npz (an .npz of collected "
                              "examples)", self.source)
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise invalid(OWNER, "source", "file:PATH.npz naming a readable file",
                              self.source)
        label = self.fooling_label
        if not isinstance(label, str) or not (label == "none" or (
                label.startswith("class:") and label[6:].isdigit())):
            raise invalid(OWNER, "fooling_label", "'none' or 'class:K' (K a class index)",
                          label)

    @property
    def source_kind(self) -> str:
        """``attack``, ``fooling`` or ``file``."""
        if self.source == "fooling":
            return "fooling"
        return "file" if self.source.startswith("file:") else "attack"

    @property
    def fooling_class(self) -> int | None:
        """The class fooling images are trained as, or None (not trained on)."""
        return None if self.fooling_label == "none" else int(self.fooling_label[6:])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (compared on resume: a different run is refused)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DadcConfig:
        """Inverse of :meth:`to_dict` (unknown keys are refused)."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise invalid(OWNER, "config", f"keys among {sorted(known)}", extra)
        return cls(**data)

    def with_(self, **changes: Any) -> DadcConfig:
        """A copy with ``changes`` (checked again)."""
        return replace(self, **changes)


__all__ = ["BUILT_IN_SOURCES", "RETRAIN", "DadcConfig"]
