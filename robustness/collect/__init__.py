"""The collection web app: people try to fool the model, reviewers accept what they submit,
and accepted examples train the next model version through the DADC loop.

``robustness collect --model CKPT --db sqlite:///runs/collect/collect.db`` serves it; see
:mod:`robustness.collect.app` for the HTTP contract and ``docs/collect.md``. Needs the
``collect`` extra (``pip install '.[collect]'``).
"""
