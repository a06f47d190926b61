"""Figures as PNG files, drawn with matplotlib's object API.

A bare :class:`matplotlib.figure.Figure` (not pyplot) touches no global backend or
figure state, so figures are safe to draw from tests, servers and worker threads.
matplotlib is imported lazily.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from robustness.core.io import atomic_write
from robustness.core.validation import check_int, invalid

if TYPE_CHECKING:
    import torch

    from attacks.fooling import FoolingResult


def image_grid(path: str | os.PathLike[str], images: torch.Tensor, titles: Sequence[str], *,
               columns: int = 10, suptitle: str | None = None) -> Path:
    """Save images (N, C, H, W) in [0, 1] as a titled PNG grid, atomically.

    Three-channel images are drawn in colour, any other channel count in grey (the
    channel mean). Titles may span lines.
    """
    from matplotlib.figure import Figure

    columns = check_int("image_grid", "columns", columns, low=1)
    n = images.shape[0]
    if len(titles) != n:
        raise invalid("image_grid", "titles", f"one title per image ({n})",
                      f"{len(titles)} titles", raw=True)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols) if n else 1
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig = Figure(figsize=(1.4 * cols, (1.3 + 0.2 * lines) * rows + (0.4 if suptitle else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        img = images[i].detach().cpu()  # (C, H, W)
        if img.shape[0] == 3:
            ax.imshow(img.permute(1, 2, 0).numpy(), vmin=0.0, vmax=1.0)
        else:
            ax.imshow(img.mean(0).numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def attack_examples_png(x: torch.Tensor, x_adv: torch.Tensor, labels: Sequence[int],
                        predictions: Sequence[int], confidence: Sequence[float], *,
                        class_names: Sequence[str] = (), columns: int = 8) -> bytes:
    """Clean image, adversarial image and perturbation of the first ``columns`` samples.

    Parameters
    ----------
    x, x_adv
        ``(N, C, H, W)`` clean and adversarial images in [0, 1].
    labels, predictions, confidence
        True label, the model's prediction on ``x_adv`` and its softmax probability.
    class_names
        Names by label (default: the label numbers).

    Returns
    -------
    bytes
        A PNG: row 1 clean (true label), row 2 adversarial (prediction and confidence),
        row 3 the perturbation ``x_adv - x`` on a symmetric colour scale.
    """
    import io

    from matplotlib.figure import Figure

    n = min(int(x.shape[0]), check_int("attack_examples_png", "columns", columns, low=1))

    def name(k: int) -> str:
        return class_names[k] if 0 <= k < len(class_names) else str(k)

    fig = Figure(figsize=(1.45 * max(n, 1), 5.0), layout="constrained")
    axes = fig.subplots(3, max(n, 1), squeeze=False)
    delta = (x_adv[:n] - x[:n]).detach().cpu().mean(1)  # (n, H, W): channel mean
    scale = float(delta.abs().max()) or 1.0
    for i in range(n):
        clean, adv = x[i].detach().cpu().mean(0), x_adv[i].detach().cpu().mean(0)
        axes[0, i].imshow(clean.numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        axes[0, i].set_title(f"true {name(int(labels[i]))}", fontsize=7)
        axes[1, i].imshow(adv.numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        fooled = int(predictions[i]) != int(labels[i])
        axes[1, i].set_title(f"{'-> ' if fooled else ''}{name(int(predictions[i]))} "
                             f"({float(confidence[i]):.2f})", fontsize=7,
                             color="#cf222e" if fooled else "black")
        axes[2, i].imshow(delta[i].numpy(), cmap="coolwarm", vmin=-scale, vmax=scale)
        axes[2, i].set_title(f"max |d| {float(delta[i].abs().max()):.2f}", fontsize=6)
    for ax in axes.flat:
        ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def fooling_grid(result: FoolingResult, path: str | os.PathLike[str], *,
                 columns: int = 5) -> Path:
    """The elites of a fooling-image search, each titled with its class and confidence."""
    # Truncate rather than round, so 0.9999996 is not shown as 1.000000.
    titles = [f"class {c}\np={math.floor(float(p) * 1e6) / 1e6:.6f}"
              for c, p in zip(result.classes, result.confidence, strict=True)]
    return image_grid(path, result.images, titles, columns=columns)
