"""Writing results into a run directory: atomically, so nothing half-written is left behind.

torch and safetensors are imported only by :func:`write_tensors`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Write through ``write(tmp_path)`` into a temp file beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_json(path: str | os.PathLike[str], *, default_name: str) -> Any:
    """Read a JSON document: ``path`` itself, or ``path/default_name`` for a run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    return json.loads(p.read_text(encoding="utf-8"))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON (numbers stay numbers; NaN is refused)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")

    return atomic_write(Path(path), write)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    return atomic_write(Path(path), write)


def write_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as a safetensors file (loadable without unpickling)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(Path(path), lambda tmp: save_file(clean, tmp, metadata=metadata))
