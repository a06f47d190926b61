"""Adversarial robustness testing harness for PyTorch classifiers.

Core: datasets (:mod:`robustness.data`), reference models (:mod:`robustness.models`),
training (:mod:`robustness.train`), checkpoints (:mod:`robustness.checkpoint`),
evaluation (:func:`robustness.evaluate` -> :class:`robustness.RobustnessReport`), CI
gates (:mod:`robustness.gates`) and the ``robustness`` command line
(:mod:`robustness.cli`). Attacks live in :mod:`attacks`, ensembles in :mod:`ensembles`,
renderers in :mod:`reports`.

Export policy (shared with ``attacks`` and ``ensembles``): the package re-exports what a
user builds or calls. ``import robustness`` stays light (no torch) so the pytest plugin
loads fast: the names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "evaluate": "robustness.evaluation",
    "RobustnessReport": "robustness.evaluation",
    "ParameterError": "robustness.core.validation",
    "load_dataset": "robustness.data",
    "Dataset": "robustness.data",
    "build_model": "robustness.models",
    "train": "robustness.train",
    "accuracy": "robustness.train",
    "save_checkpoint": "robustness.checkpoint",
    "load_checkpoint": "robustness.checkpoint",
}
__all__ = [
    "Dataset",
    "ParameterError",
    "RobustnessReport",
    "accuracy",
    "build_model",
    "evaluate",
    "load_checkpoint",
    "load_dataset",
    "save_checkpoint",
    "train",
]

if TYPE_CHECKING:
    from robustness.checkpoint import load_checkpoint, save_checkpoint
    from robustness.core.validation import ParameterError
    from robustness.data import Dataset, load_dataset
    from robustness.evaluation import RobustnessReport, evaluate
    from robustness.models import build_model
    from robustness.train import accuracy, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'robustness' has no attribute {name!r}")
