"""Dynamic adversarial data collection (DADC): find what fools the model, train on it,
measure, repeat, against a control arm given the same number of standard examples.

``run_dadc(DadcConfig(data="mnist", source="pgd", eps=0.3), "runs/dadc")`` from Python,
``robustness dadc --data mnist --source pgd --eps 0.3 --out runs/dadc`` from a shell.
See :mod:`robustness.dadc.loop` for the steps and ``docs/dadc.md`` for measured runs.
"""

from __future__ import annotations

from robustness.dadc.config import DadcConfig
from robustness.dadc.loop import run_dadc

__all__ = ["DadcConfig", "run_dadc"]
