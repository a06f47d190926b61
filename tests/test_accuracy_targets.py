"""Slow end-to-end checks: the reference ConvNet reaches its published-level accuracy."""

from __future__ import annotations

import pytest

from robustness.data import FASHION_MNIST_DIR, load_dataset
from robustness.models import build_model
from robustness.train import accuracy, train

pytestmark = pytest.mark.slow


def test_convnet_reaches_095_on_mnist_subset() -> None:
    data = load_dataset("mnist")
    model = build_model("convnet", data.input_shape, data.num_classes, seed=0)
    train(model, data.x_train, data.y_train, epochs=10, seed=0, progress=False)
    assert accuracy(model, data.x_test, data.y_test) >= 0.95


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(),
                    reason="needs `apt-get install dataset-fashion-mnist`")
def test_convnet_reaches_085_on_fashion_mnist() -> None:
    data = load_dataset("fashion-mnist")
    model = build_model("convnet", data.input_shape, data.num_classes, seed=0)
    train(model, data.x_train, data.y_train, epochs=3, seed=0, progress=False)
    assert accuracy(model, data.x_test, data.y_test) >= 0.85
