"""Small reference classifiers. Any ``nn.Module`` mapping (N, C, H, W) in [0, 1] to logits works.

The reference models are built from a name, an input shape and a class count so
that a checkpoint can rebuild them from its metadata alone (see
:mod:`robustness.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robustness.core.validation import ParameterError, check_int, invalid

InputShape = tuple[int, int, int]


class ModelShapeError(ParameterError):
    """A reference architecture cannot be built for the requested input shape."""


def _check_shape(owner: str, input_shape: InputShape, num_classes: int) -> InputShape:
    if (not isinstance(input_shape, tuple | list) or len(input_shape) != 3
            or not all(isinstance(d, int) and d > 0 for d in input_shape)):
        raise invalid(owner, "input_shape", "a tuple (C, H, W) of three positive ints", input_shape)
    check_int(owner, "num_classes", num_classes, low=2)
    c, h, w = input_shape
    return (int(c), int(h), int(w))


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvNet(nn.Module):
    """The ConvNet of the original ensemble experiment (cleverhans ``model_mnist``).

    dropout 0.2 on the input; conv 64 8x8 stride 2 'same', ReLU; conv 128 6x6
    stride 2 'valid', ReLU; conv 128 5x5 stride 1 'valid', ReLU; dropout 0.5;
    flatten; dense ``num_classes``.

    Parameters
    ----------
    input_shape
        (C, H, W). The two 'valid' convolutions need H, W >= 27 (MNIST's 28 works,
        8x8 digits do not).
    num_classes
        Number of output logits K.

    Shapes
    ------
    (N, C, H, W) -> (N, K) logits.
    """

    def __init__(self, input_shape: InputShape = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        c, h, w = _check_shape("ConvNet", input_shape, num_classes)
        # 'same' padding with stride 2 (TensorFlow semantics): output ceil(n / 2).
        sizes = []
        for n in (h, w):
            s1 = -(-n // 2)
            s2 = _conv_out(s1, 6, 2, 0)
            s3 = _conv_out(s2, 5, 1, 0)
            sizes.append(s3)
        if min(sizes) < 1:
            raise ModelShapeError(
                f"The 'input_shape' parameter of ConvNet must have H, W >= 27 "
                f"(its stride-2 6x6 and 5x5 'valid' convolutions need room). Got {input_shape} "
                f"instead; use 'lenet' or 'mlp' for small images."
            )
        self.input_shape = (c, h, w)
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Dropout(0.2),
            _SamePadStride2(8),
            nn.Conv2d(c, 64, 8, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 128, 6, stride=2),
            nn.ReLU(),
            nn.Conv2d(128, 128, 5, stride=1),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(128 * sizes[0] * sizes[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, K) logits."""
        return self.classifier(self.features(x))


class _SamePadStride2(nn.Module):
    """TensorFlow-style 'same' padding for a stride-2 convolution of the given kernel size."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h = max((-(-h // 2) - 1) * 2 + self.kernel - h, 0)
        pad_w = max((-(-w // 2) - 1) * 2 + self.kernel - w, 0)
        return nn.functional.pad(
            x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class LeNet(nn.Module):
    """A LeNet-5-style net: two padded 5x5 conv + max-pool stages, then 120-84-K dense.

    Builds for any input with H, W >= 4 (8x8 digits included).

    Shapes
    ------
    (N, C, H, W) -> (N, K) logits.
    """

    def __init__(self, input_shape: InputShape = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        c, h, w = _check_shape("LeNet", input_shape, num_classes)
        if h < 4 or w < 4:
            raise ModelShapeError(
                f"The 'input_shape' parameter of LeNet must have H, W >= 4 (two 2x2 poolings). "
                f"Got {input_shape} instead."
            )
        self.input_shape = (c, h, w)
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = 16 * (h // 2 // 2) * (w // 2 // 2)
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, K) logits."""
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """A small multilayer perceptron: flatten, two hidden ReLU layers of ``hidden`` units.

    Builds for any input shape.

    Shapes
    ------
    (N, C, H, W) -> (N, K) logits.
    """

    def __init__(self, input_shape: InputShape = (1, 28, 28), num_classes: int = 10,
                 hidden: int = 256) -> None:
        super().__init__()
        c, h, w = _check_shape("MLP", input_shape, num_classes)
        check_int("MLP", "hidden", hidden, low=1)
        self.input_shape = (c, h, w)
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, K) logits."""
        return self.classifier(self.features(x))


MODELS: dict[str, Callable[..., nn.Module]] = {"convnet": ConvNet, "lenet": LeNet, "mlp": MLP}


def build_model(name: str, input_shape: InputShape, num_classes: int, *,
                seed: int | None = None) -> nn.Module:
    """Build a reference model by name.

    Parameters
    ----------
    name
        One of ``"convnet"``, ``"lenet"``, ``"mlp"``.
    input_shape
        (C, H, W) of the inputs.
    num_classes
        Number of classes K.
    seed
        If given, the weights are initialised from this seed without touching the
        caller's global random state: same seed, same weights.

    Returns
    -------
    nn.Module
        Maps (N, C, H, W) floats in [0, 1] to (N, K) logits.
    """
    if name not in MODELS:
        raise invalid("build_model", "name", f"one of {', '.join(map(repr, MODELS))}", name)
    if seed is None:
        return MODELS[name](tuple(input_shape), num_classes)
    check_int("build_model", "seed", seed, low=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](tuple(input_shape), num_classes)


def penultimate(model: nn.Module) -> nn.Module:
    """Return the layer whose output is the penultimate representation (before the classifier).

    The reference models expose ``features``; for other modules the caller names a layer.
    """
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise invalid("penultimate", "model", "a module with a 'features' submodule",
                      type(model).__name__, raw=True)
    return features
