"""A user's own architecture: nothing here knows about the harness.

``robustness ... --model my_models:small_resnet --weights small_resnet.safetensors``
imports this module (run from this directory, or put it on ``PYTHONPATH``), calls the
factory with no arguments and loads the weights into what it returns.
"""

from __future__ import annotations

from torch import nn


class Block(nn.Module):
    """A residual block: two 3x3 convolutions and a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.relu = nn.ReLU()

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.relu(x + self.body(x))


def small_resnet() -> nn.Module:
    """A small ResNet for 1 x 28 x 28 images and 10 classes: (N, 1, 28, 28) -> (N, 10)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        Block(16), nn.MaxPool2d(2),                      # 14 x 14
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        Block(32), nn.MaxPool2d(2),                      # 7 x 7
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10))
