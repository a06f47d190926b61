"""The FLOP counter behind the ensemble benchmark's floor (benchmarks/bench_ensembles.py).

The floor says a target cannot be met on a CPU; it is only as good as the count, so the
count is held against the reference ConvNet's FLOPs worked out by hand.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from robustness.models import build_model

# 2 x multiply-adds of one 28 x 28 image: conv 8x8 (1 -> 64, 14 x 14 out), conv 6x6
# (64 -> 128, 5 x 5 out), conv 5x5 (128 -> 128, 1 x 1 out), linear 128 -> 10.
CONVNET_FLOPS = 2 * (14 * 14 * 64 * 8 * 8 + 5 * 5 * 128 * 64 * 36 + 128 * 128 * 25 + 128 * 10)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "bench_ensembles.py"
    spec = importlib.util.spec_from_file_location("bench_ensembles", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_the_convnet_forward_by_hand(bench: ModuleType) -> None:
    model = build_model("convnet", (1, 28, 28), 10, seed=0).eval()
    counter = bench.ModelFlops()
    with counter, torch.no_grad():
        model(torch.rand(3, 1, 28, 28))
    assert counter.flops == {"torch.float32 forward": 3 * CONVNET_FLOPS}


def test_counts_inside_autograd_grad_and_by_dtype(bench: ModuleType) -> None:
    # torch's FlopCounterMode fails inside autograd.grad; every gradient attack calls it.
    model = build_model("convnet", (1, 28, 28), 10, seed=0).eval()
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    counter = bench.ModelFlops()
    with counter:
        (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert grad.shape == x.shape
    # Forward: the convolutions and the linear layer; its backward w.r.t. the input is a
    # matrix product (counted forward). Backward: each convolution's input gradient (the
    # weights' are not asked for), as many FLOPs as its forward.
    linear = 2 * 128 * 10
    assert counter.flops == {"torch.float32 forward": 2 * (CONVNET_FLOPS + linear),
                             "torch.float32 backward": 2 * (CONVNET_FLOPS - linear)}

    counter = bench.ModelFlops()
    with counter, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(2, 1, 28, 28))
    assert counter.flops == {"torch.bfloat16 forward": 2 * CONVNET_FLOPS}


def test_floor_is_the_flops_at_the_best_rates(bench: ModuleType) -> None:
    line = bench.floor_line(
        {"torch.float32 forward": 2 * 10**12, "torch.float32 backward": 10**12},
        {"torch.float32 forward": 1e11, "torch.float32 backward": 5e10}, 60.0)
    assert line.startswith("floor of its convolutions and matrix products 40 s")
    assert "the run took 1.50 x it" in line
