"""Features of a model's hidden layer, captured by a forward hook (for t-SNE and densities).

By default the feature is the **penultimate layer**: the input of the model's last
``nn.Linear`` (in module registration order), which is what the classifier head sees.
``layer=NAME`` takes the output of any named sub-module instead (``model.named_modules()``
names, e.g. ``"net.6"``). The model runs in eval mode, without gradients, and its mode is
restored afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustness.core.modes import eval_mode
from robustness.core.validation import check_images, check_int, did_you_mean, invalid

OWNER = "features"


def penultimate_layer(model: nn.Module) -> str:
    """Name of the model's last ``nn.Linear``, whose input is the penultimate feature.

    Raises
    ------
    ParameterError
        The model has no ``nn.Linear``: name a layer explicitly.
    """
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise invalid(OWNER, "layer", "a layer name (the model has no nn.Linear, so the "
                      "penultimate layer cannot be found by itself)", "none", raw=True)
    return linears[-1]


def features(model: nn.Module, x: torch.Tensor, *, layer: str | None = None,
             batch_size: int = 512, with_logits: bool = False
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Hidden-layer features of ``x``.

    Parameters
    ----------
    model
        Any classifier ``(N, C, H, W) -> (N, K)``.
    x
        Images, shape ``(N, C, H, W)``, floats in ``[0, 1]``.
    layer
        ``None``: the input of the last ``nn.Linear`` (penultimate layer). A name: the
        output of that sub-module.
    batch_size
        Images per forward pass.

    with_logits
        Also return the model's outputs ``(N, K)`` from the same forward passes.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        ``(N, D)`` float32, each sample's feature flattened (and the logits).
    """
    check_images(OWNER, x, name="x")
    check_int(OWNER, "batch_size", batch_size, low=1)
    modules = dict(model.named_modules())
    default = layer is None
    name = penultimate_layer(model) if layer is None else layer
    if name not in modules or name == "":
        hint = did_you_mean(name, [n for n in modules if n])
        raise invalid(OWNER, "layer", f"the name of one of the model's modules{hint}", name)
    captured: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        value = inputs[0] if default else output
        if not isinstance(value, torch.Tensor):
            raise invalid(OWNER, "layer", "a module whose output is one tensor", type(value)
                          .__name__, raw=True)
        captured.append(value.detach().reshape(len(value), -1).to(torch.float32))

    handle = modules[name].register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            for start in range(0, len(x), batch_size):
                before = len(captured)
                outputs.append(model(x[start:start + batch_size]))
                if len(captured) != before + 1:
                    # A module called twice per forward (or never) has no single feature.
                    raise invalid(OWNER, "layer", "a module that runs once per forward pass",
                                  f"{name!r} ran {len(captured) - before} times", raw=True)
    finally:
        handle.remove()
    return (torch.cat(captured), torch.cat(outputs)) if with_logits else torch.cat(captured)


__all__ = ["features", "penultimate_layer"]
