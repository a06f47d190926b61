"""Adversarial robustness testing harness for PyTorch classifiers.

Core: datasets (:mod:`robustness.data`), reference models (:mod:`robustness.models`),
training (:mod:`robustness.train`), checkpoints (:mod:`robustness.checkpoint`) and the
``robustness`` command line (:mod:`robustness.cli`). Attacks live in :mod:`attacks`.
"""

__version__ = "0.1.0"
