"""Reference models: output shapes for the shapes they support, clear errors otherwise."""

from __future__ import annotations

import pytest
import torch

from robustness.core.validation import ParameterError
from robustness.models import MODELS, ModelShapeError, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 27, 40)])
def test_models_map_images_to_logits(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, shape, 7, seed=0).eval()
    out = model(torch.rand(5, *shape))
    assert out.shape == (5, 7)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_small_models_handle_8x8_digits(name: str) -> None:
    assert build_model(name, (1, 8, 8), 10)(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_convnet_says_clearly_when_images_are_too_small() -> None:
    with pytest.raises(ModelShapeError, match=r"H, W >= 27.*Got \(1, 8, 8\).*'lenet' or 'mlp'"):
        build_model("convnet", (1, 8, 8), 10)


def test_convnet_is_the_original_architecture() -> None:
    model = build_model("convnet", (1, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (64, (8, 8), (2, 2)), (128, (6, 6), (2, 2)), (128, (5, 5), (1, 1))]
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.2, 0.5]
    # 'same' padding then two 'valid' convs: 28 -> 14 -> 5 -> 1
    assert model.features(torch.rand(1, 1, 28, 28)).shape == (1, 128)


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("convnet", (1, 28, 28), 10, seed=4)
    after = torch.rand(1)
    b = build_model("convnet", (1, 28, 28), 10, seed=4)
    c = build_model("convnet", (1, 28, 28), 10, seed=5)
    assert torch.equal(before, after)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "resnet"}, r"'name' parameter of build_model must be one of"),
    ({"input_shape": (28, 28)}, r"'input_shape' parameter of ConvNet must be a tuple \(C, H, W\)"),
    ({"num_classes": 1}, r"'num_classes' parameter of ConvNet must be an int in the range \[2"),
    ({"seed": -1}, r"'seed' parameter of build_model"),
])
def test_bad_model_arguments_are_named(kwargs: dict, match: str) -> None:
    args = {"name": "convnet", "input_shape": (1, 28, 28), "num_classes": 10, **kwargs}
    seed = args.pop("seed", None)
    with pytest.raises(ParameterError, match=match):
        build_model(args["name"], args["input_shape"], args["num_classes"], seed=seed)
