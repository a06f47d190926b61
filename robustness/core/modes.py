"""Model modes and the one batched no-grad forward pass every layer uses.

torch is imported inside :func:`predict` only, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@contextmanager
def eval_mode(*models: nn.Module, switch: bool = True) -> Iterator[None]:
    """Run a block with ``models`` in eval mode, then restore every submodule's own flag.

    Restoring per submodule (not ``model.train(was_training)``) matters for models whose
    parts are deliberately in different modes, e.g. frozen batch norm inside a training
    model. With ``switch=False`` the modes are only restored, not changed.
    """
    seen = {id(m): m for m in models}.values()  # one model may be passed twice
    modes = [(sub, sub.training) for model in seen for sub in model.modules()]
    try:
        if switch:
            for model in seen:
                model.eval()
        yield
    finally:
        for sub, mode in modes:
            sub.training = mode


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, without gradients, in batches.

    Shapes: x (N, C, H, W) -> logits (N, K). Every submodule's mode is restored after.
    """
    import torch

    with eval_mode(model), torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
