"""Robustness gates for the model in ``model/`` (train it first, see README.md).

Every ``robustness`` marker in this file is merged (the closest wins per key), so the
module-level marker names the model and data once and each test adds its thresholds.
Paths are relative to the project root (where pytest finds its configuration).
"""

import pytest

from robustness.gates import Threshold

pytestmark = pytest.mark.robustness(model="model/model.safetensors", data="mnist")


@pytest.mark.robustness(eps=0.1, robust_accuracy=0.45, max_drop=0.05)
def test_convnet_resists_small_linf_perturbations(robustness_gate):
    # Runs the budget's attacks (fast: FGSM + 10-step PGD on 500 test images) and fails
    # with the full table if the worst case across attacks is below 0.45.
    report = robustness_gate.check()

    # Any further threshold is a plain assertion that explains itself when it fails.
    assert report >= Threshold(robust_accuracy=0.55, eps=0.1, attack="fgsm")
