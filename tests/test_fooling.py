"""Tests for attacks.fooling: MAP-Elites fooling images on the really trained ConvNet."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from attacks.fooling import FoolingImages, FoolingResult
from reports.figures import fooling_grid
from robustness.core.validation import ParameterError

SHAPE = (1, 28, 28)
TARGET = 0.9999


def _model_confidence(model: nn.Module, result: FoolingResult) -> torch.Tensor:
    """The model's own (K,) softmax probability of each class on its elite."""
    with torch.no_grad():
        probs = model(result.images).double().softmax(1)
    return probs[torch.arange(len(result.classes)), torch.tensor(result.classes)]


def _timed(fooling: FoolingImages, model: nn.Module) -> tuple[FoolingResult, float]:
    """The result of ``fooling.generate`` and the seconds the call took, timed from outside."""
    start = time.perf_counter()
    result = fooling.generate(model, SHAPE)
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def direct_timed(trained_convnet: nn.Module) -> tuple[FoolingResult, float]:
    # Measured: all 10 classes reach 0.9999 by generation 195 (about 6 s on 2 cores).
    return _timed(FoolingImages(generations=400), trained_convnet)


@pytest.fixture(scope="module")
def lowres_timed(trained_convnet: nn.Module) -> tuple[FoolingResult, float]:
    # Measured: all 10 classes reach 0.9999 by generation 83 (about 2 s on 2 cores).
    return _timed(FoolingImages(encoding="lowres", generations=400), trained_convnet)


@pytest.fixture(scope="module")
def direct(direct_timed: tuple[FoolingResult, float]) -> FoolingResult:
    return direct_timed[0]


@pytest.fixture(scope="module")
def lowres(lowres_timed: tuple[FoolingResult, float]) -> FoolingResult:
    return lowres_timed[0]


@pytest.mark.parametrize("which", ["direct", "lowres"])
def test_every_class_fooled_with_target_confidence(
        which: str, request: pytest.FixtureRequest, trained_convnet: nn.Module) -> None:
    result: FoolingResult = request.getfixturevalue(which)
    assert result.classes == tuple(range(10))
    assert result.reached.all()
    assert (result.confidence >= TARGET).all()
    # The model confirms it on the returned images (float32 logits: allow rounding).
    assert (_model_confidence(trained_convnet, result) >= TARGET - 1e-5).all()
    assert torch.allclose(_model_confidence(trained_convnet, result), result.confidence,
                          atol=1e-5)


@pytest.mark.parametrize("which", ["direct", "lowres"])
def test_images_and_bookkeeping(which: str, request: pytest.FixtureRequest) -> None:
    result, seconds = request.getfixturevalue(f"{which}_timed")
    assert result.images.shape == (10, *SHAPE)
    assert result.images.dtype == torch.float32
    assert result.images.min() >= 0.0
    assert result.images.max() <= 1.0
    assert result.generations.dtype == torch.int64
    # Every class was reached, and it took evolving: noise is not already >= TARGET.
    assert bool(result.reached.all()) and bool((result.generations > 0).any())
    # The search stops in the generation the last class reaches the target.
    assert result.model_calls == int(result.generations.max()) + 1
    assert result.queries == result.model_calls * 200
    # wall_time_s times the search, in seconds: nearly all of the seconds-long call.
    assert 0.5 * seconds <= result.wall_time_s <= seconds
    assert result.summary()["wall_time_s"] == result.wall_time_s


def test_lowres_images_are_smoother(direct: FoolingResult, lowres: FoolingResult) -> None:
    def roughness(images: torch.Tensor) -> float:
        return float((images[..., 1:] - images[..., :-1]).abs().mean())

    assert roughness(lowres.images) < 0.5 * roughness(direct.images)


def test_summary_is_json_with_numbers(direct: FoolingResult) -> None:
    summary = json.loads(json.dumps(direct.summary()))
    assert summary["all_reached"] is True
    assert summary["classes"] == list(range(10))
    assert all(isinstance(c, float) and c >= TARGET for c in summary["confidence"])
    assert all(isinstance(g, int) for g in summary["generations"])
    assert summary["generations_run"] == direct.model_calls
    assert summary["queries"] == direct.queries
    assert summary["encoding"] == "direct"
    assert summary["min_confidence"] == min(summary["confidence"])


def test_fooling_grid_writes_png(direct: FoolingResult, tmp_path: Path) -> None:
    out = fooling_grid(direct, tmp_path / "fooling.png")
    assert out == tmp_path / "fooling.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5000


def test_subset_of_classes_and_unreached_target(trained_convnet: nn.Module) -> None:
    result = FoolingImages(classes=[7, 3], population=16, generations=3).generate(
        trained_convnet, SHAPE)
    assert result.classes == (7, 3)
    assert result.images.shape == (2, *SHAPE)
    assert result.model_calls == 3
    assert result.queries == 48
    assert torch.allclose(_model_confidence(trained_convnet, result), result.confidence,
                          atol=1e-5)
    # Three generations of 16 random images do not fool the model with 0.9999.
    assert not result.reached.any()
    assert (result.generations == -1).all()
    assert result.summary()["all_reached"] is False


def test_deterministic_under_seed_and_rng_untouched(trained_convnet: nn.Module) -> None:
    def run(seed: int) -> FoolingResult:
        return FoolingImages(population=20, generations=6, seed=seed).generate(
            trained_convnet, SHAPE)

    torch.manual_seed(0)
    state = torch.get_rng_state()
    first, second, other = run(1), run(1), run(2)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.confidence, second.confidence)
    assert not torch.equal(first.images, other.images)
    assert torch.equal(torch.get_rng_state(), state)


def test_mode_restored_and_silent(trained_convnet: nn.Module,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    wrapper = nn.Sequential(trained_convnet).train()
    try:
        FoolingImages(population=8, generations=2).generate(wrapper, SHAPE)
        assert all(m.training for m in wrapper.modules())
    finally:
        wrapper.eval()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"classes": [1, 1]}, "classes"),
    ({"classes": [-1]}, "classes"),
    ({"classes": []}, "classes"),
    ({"classes": "01"}, "classes"),
    ({"classes": [True]}, "classes"),
    ({"population": 0}, "population"),
    ({"generations": 0}, "generations"),
    ({"target_confidence": 1.0}, "target_confidence"),
    ({"target_confidence": 0.0}, "target_confidence"),
    ({"target_confidence": math.nan}, "target_confidence"),
    ({"encoding": "cppn"}, "encoding"),
    ({"lowres_size": 0}, "lowres_size"),
    ({"mutation_rate": 0.0}, "mutation_rate"),
    ({"mutation_rate": 1.5}, "mutation_rate"),
    ({"mutation_halflife": 0.0}, "mutation_halflife"),
    ({"mutation_strength": -1.0}, "mutation_strength"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments_name_the_parameter(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(ParameterError, match=f"The '{param}' parameter of FoolingImages"):
        FoolingImages(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("shape", "classes", "param"), [
    ((28, 28), None, "input_shape"),
    ((1, 28, 0), None, "input_shape"),
    ("1x28x28", None, "input_shape"),
    (SHAPE, (10,), "classes"),
])
def test_bad_generate_arguments(trained_convnet: nn.Module, shape: object,
                                classes: tuple[int, ...] | None, param: str) -> None:
    fooling = FoolingImages(classes=classes, population=4, generations=1)
    with pytest.raises(ParameterError, match=f"The '{param}' parameter of FoolingImages"):
        fooling.generate(trained_convnet, shape)  # type: ignore[arg-type]


def test_model_must_be_a_module() -> None:
    with pytest.raises(ParameterError, match="The 'model' parameter of FoolingImages"):
        FoolingImages().generate(lambda x: x, SHAPE)  # type: ignore[arg-type]


def test_fooling_grid_validates_columns(direct: FoolingResult, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="'columns'"):
        fooling_grid(direct, tmp_path / "grid.png", columns=0)
    assert not (tmp_path / "grid.png").exists()
