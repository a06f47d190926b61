"""Adversarial robustness testing harness for PyTorch classifiers.

Core: datasets (:mod:`robustness.data`), reference models (:mod:`robustness.models`),
training (:mod:`robustness.train`), checkpoints (:mod:`robustness.checkpoint`),
evaluation (:func:`robustness.evaluate` -> :class:`robustness.RobustnessReport`) and the
``robustness`` command line (:mod:`robustness.cli`). Attacks live in :mod:`attacks`.

``import robustness`` stays light (no torch) so the pytest plugin can load lazily;
``evaluate`` and ``RobustnessReport`` are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RobustnessReport", "evaluate"]

if TYPE_CHECKING:
    from robustness.evaluation import evaluate
    from robustness.evaluation.report import RobustnessReport


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from robustness.evaluation import evaluate

        return evaluate
    if name == "RobustnessReport":
        from robustness.evaluation.report import RobustnessReport

        return RobustnessReport
    raise AttributeError(f"module 'robustness' has no attribute {name!r}")
