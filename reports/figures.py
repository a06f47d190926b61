"""Matplotlib figures. matplotlib is imported lazily, with the non-interactive Agg backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from robustness.rundir import atomic_write


def image_grid(path: str | os.PathLike[str], images: torch.Tensor, titles: Sequence[str], *,
               columns: int = 10, suptitle: str | None = None) -> Path:
    """Save images (N, C, H, W) in [0, 1] as a titled PNG grid.

    Single-channel images are drawn in grey, three-channel ones in colour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].detach().cpu()
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(img.permute(1, 2, 0).numpy().clip(0.0, 1.0))
        ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
