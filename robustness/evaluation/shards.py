"""Finished tasks of an evaluation kept on disk, so a restarted run redoes none of them.

With ``evaluate(..., resume_dir=DIR)`` every task (attack x eps x shard) is written to
``DIR`` the moment its result reaches the driver, whichever backend ran it. A re-run of
the same evaluation (same model weights, samples, attacks, budgets, seed, shard size,
source model and library versions) loads those results instead of attacking again;
anything else gets its own sub-directory, keyed by a digest of all of that, so results
of different evaluations never mix. Files are safetensors, written atomically: a crash mid-write
leaves the previous state, never half a shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robustness.core.io import write_tensors

if TYPE_CHECKING:
    from robustness.evaluation.engine import Task, TaskResult

_TENSORS = ("fooled", "perturbation_norm", "queries", "gradient_evaluations")
_TEXT = ("norm", "threat_model", "description")


def model_digest(model: nn.Module) -> str:
    """SHA-256 over a model's class, parameter and buffer names, shapes and values."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


class ShardStore:
    """The finished tasks of one evaluation in ``root/<digest of the evaluation>/``."""

    def __init__(self, root: str | os.PathLike[str], key: dict[str, Any]) -> None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / digest
        self.key = key

    def _path(self, task: Task) -> Path:
        name = json.dumps([task.spec.label, task.eps, task.start, task.stop]
                          + ([list(task.samples)] if task.samples is not None else []))
        return self.dir / f"task-{hashlib.sha256(name.encode()).hexdigest()[:16]}.safetensors"

    def load(self, task: Task) -> TaskResult | None:
        """The saved result of ``task``, or None (not run yet, or unreadable: run again)."""
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        from robustness.evaluation.engine import TaskResult

        path = self._path(task)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in _TENSORS}
        except (SafetensorError, OSError, KeyError):
            return None
        if meta.get("task") != self._path(task).name or len(tensors["fooled"]) != task.size:
            return None
        return TaskResult(task=task, seconds=float(meta["seconds"]),
                          **tensors, **{k: meta[k] for k in _TEXT})

    def save(self, result: TaskResult) -> None:
        """Write one finished task (atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "evaluation.json"
        if not key_file.exists():  # what these shards are of, for a person looking
            key_file.write_text(json.dumps(self.key, indent=2, sort_keys=True), encoding="utf-8")
        path = self._path(result.task)
        write_tensors(path, {k: getattr(result, k) for k in _TENSORS},
                      metadata={"task": path.name, "seconds": repr(result.seconds),
                                **{k: getattr(result, k) for k in _TEXT}})
