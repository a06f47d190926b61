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


def fooling_grid(result: FoolingResult, path: str | os.PathLike[str], *,
                 columns: int = 5) -> Path:
    """The elites of a fooling-image search, each titled with its class and confidence."""
    # Truncate rather than round, so 0.9999996 is not shown as 1.000000.
    titles = [f"class {c}\np={math.floor(float(p) * 1e6) / 1e6:.6f}"
              for c, p in zip(result.classes, result.confidence, strict=True)]
    return image_grid(path, result.images, titles, columns=columns)
