"""Save and load a model with its metadata, without ever unpickling.

A checkpoint is one safetensors file: the state dict's tensors plus a JSON
metadata record (architecture, dataset, input shape, classes, seed, accuracy,
library versions) and a SHA-256 digest over tensors and metadata. Loading
parses only the safetensors header and raw tensor bytes, so a hostile file
cannot execute code; a truncated file, a file edited after saving, or weights
that do not fit the declared architecture each give a :class:`CheckpointError`
that says which.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from robustness.core.io import atomic_write
from robustness.core.provenance import library_versions
from robustness.core.validation import SEED_MAX, ParameterError, invalid
from robustness.models import MODELS, build_model

FORMAT = "robustness-checkpoint"
FORMAT_VERSION = 1
FILENAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, tampered with, or does not fit its model."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its model.

    ``architecture`` names a reference model of :mod:`robustness.models`
    (``"convnet"``, ``"lenet"``, ``"mlp"``) so it can be rebuilt from the file alone,
    or ``"custom:ClassName"`` for a user's module, which must then be passed to
    :func:`load_checkpoint`.
    """

    architecture: str
    input_shape: tuple[int, int, int]
    num_classes: int
    classes: tuple[str, ...] = ()
    dataset: str = ""
    seed: int | None = None
    accuracy: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckpointMeta:
        """Inverse of :meth:`to_dict`."""
        return cls(
            architecture=str(d["architecture"]),
            input_shape=tuple(int(v) for v in d["input_shape"]),  # type: ignore[arg-type]
            num_classes=int(d["num_classes"]),
            classes=tuple(str(c) for c in d.get("classes", ())),
            dataset=str(d.get("dataset", "")),
            seed=None if d.get("seed") is None else int(d["seed"]),
            accuracy=None if d.get("accuracy") is None else float(d["accuracy"]),
            versions=dict(d.get("versions", {})),
            extra=dict(d.get("extra", {})),
        )


def held_out_seed(data: str, meta: CheckpointMeta | None, default: int = 0) -> int:
    """The seed that splits ``data`` so its test part holds none of the model's training images.

    A checkpoint trained on ``data`` was trained on the split its own seed made; any other
    seed would mix training images into the test set. For other data (or a checkpoint
    that does not record its dataset and seed) ``default`` is used.
    """
    from robustness.data import canonical_dataset_name

    if meta is not None and meta.seed is not None and meta.dataset and \
            canonical_dataset_name(data) == canonical_dataset_name(meta.dataset):
        return meta.seed
    return default


def _digest(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A checkpoint path may name the file or the run directory holding ``model.safetensors``."""
    p = Path(path)
    return p / FILENAME if p.is_dir() else p


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], meta: CheckpointMeta) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically.

    Parameters
    ----------
    model
        The module to save (its ``state_dict``).
    path
        A ``.safetensors`` file, or a directory (then ``DIR/model.safetensors``).
    meta
        Its metadata; ``versions`` is filled in if empty.

    Returns
    -------
    Path
        The file written. A crash mid-write leaves no partial file behind.
    """
    if not isinstance(meta, CheckpointMeta):
        raise invalid("save_checkpoint", "meta", "a CheckpointMeta", type(meta).__name__, raw=True)
    target = resolve_path(path)
    problem = meta_problem(meta)
    if problem:
        raise CheckpointError(f"Refusing to save a checkpoint with impossible metadata: "
                              f"{problem}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not meta.versions:
        meta = CheckpointMeta(**{**meta.__dict__, "versions": library_versions()})
    # safetensors refuses shared storage; clone so tied or viewed weights save cleanly.
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(f"Refusing to save a model with non-finite (NaN or inf) weights "
                              f"in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}: it "
                              f"diverged during training; nothing was written to {target}.")
    meta_json = json.dumps(meta.to_dict(), sort_keys=True)
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "meta": meta_json,
        "sha256": _digest(tensors, meta_json),
    }
    return atomic_write(target, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Read and verify a checkpoint's metadata without building the model."""
    return _read(resolve_path(path))[1]


def _read(file: Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    if not file.exists():
        raise CheckpointError(f"No checkpoint at {file}: the file does not exist.")
    if not file.is_file():
        raise CheckpointError(f"No checkpoint at {file}: it is a directory (or another "
                              f"non-file), not a safetensors checkpoint file.")
    try:
        tensors = load_file(file)
        from safetensors import safe_open

        with safe_open(file, framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{file} is not a readable safetensors checkpoint (truncated or corrupt?): {e}"
        ) from e
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{file} is a safetensors file but not a robustness checkpoint (no '{FORMAT}' "
            f"header); save it with robustness.checkpoint.save_checkpoint."
        )
    if header.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{file} has checkpoint format version {header.get('format_version')!r}; "
            f"this harness reads version {FORMAT_VERSION}."
        )
    meta_json = header.get("meta", "")
    if _digest(tensors, meta_json) != header.get("sha256"):
        raise CheckpointError(
            f"{file} failed its integrity check: weights or metadata changed after saving "
            f"(SHA-256 mismatch). Do not trust this file; re-train or re-save the model."
        )
    try:
        meta = CheckpointMeta.from_dict(json.loads(meta_json))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{file} has unreadable metadata: {e}") from e
    problem = meta_problem(meta)
    if problem:
        raise CheckpointError(f"{file} has impossible metadata: {problem}.")
    return tensors, meta


MAX_SIDE, MAX_CHANNELS, MAX_CLASSES = 4096, 64, 100_000  # far beyond any image classifier here


def meta_problem(meta: CheckpointMeta) -> str:
    """What makes ``meta`` impossible (empty if nothing): checked before anything is built
    when loading, and before training starts by commands that will save a checkpoint."""
    shape = meta.input_shape
    if len(shape) != 3 or not 1 <= shape[0] <= MAX_CHANNELS or not all(
            1 <= side <= MAX_SIDE for side in shape[1:]):
        return (f"input shape {tuple(shape)} (expected (C, H, W) with C <= {MAX_CHANNELS} and "
                f"H, W <= {MAX_SIDE})")
    if not 2 <= meta.num_classes <= MAX_CLASSES:
        return f"num_classes {meta.num_classes} (expected 2 to {MAX_CLASSES:,})"
    from robustness.data import DATASET_SHAPES

    known = DATASET_SHAPES.get(meta.dataset.strip().lower())
    if known is not None and (tuple(shape), meta.num_classes) != known:
        return (f"dataset '{meta.dataset}' has images of shape {known[0]} in {known[1]} "
                f"classes, the metadata declares input shape {tuple(shape)} and "
                f"{meta.num_classes} classes")
    if meta.seed is not None and not 0 <= meta.seed <= SEED_MAX:
        return f"seed {meta.seed} (expected an int in [0, {SEED_MAX}])"
    if meta.classes and len(meta.classes) != meta.num_classes:
        return (f"{len(meta.classes)} class names for num_classes {meta.num_classes} (one name "
                f"per class, or none)")
    return ""


def _check_shapes(file: Path, meta: CheckpointMeta, tensors: dict[str, torch.Tensor]) -> None:
    """Compare the file's tensor shapes with those the metadata implies, building the model
    on the ``meta`` device (no memory): absurd or forged metadata never allocates."""
    try:
        with torch.device("meta"):
            expected = build_model(meta.architecture, meta.input_shape, meta.num_classes)
    except ParameterError as e:  # e.g. a ConvNet declared for 8x8 images
        raise CheckpointError(f"{file} has impossible metadata: {e}") from None
    for name, t in expected.state_dict().items():
        got = tensors.get(name)
        if got is None or tuple(got.shape) != tuple(t.shape):
            have = "missing" if got is None else f"shape {tuple(got.shape)}"
            raise CheckpointError(
                f"The weights in {file} do not fit its metadata ('{meta.architecture}', input "
                f"shape {tuple(meta.input_shape)}, {meta.num_classes} classes): {name} should "
                f"have shape {tuple(t.shape)}, the file has {have}.")


def load_checkpoint(path: str | os.PathLike[str], *,
                    model: nn.Module | None = None) -> tuple[nn.Module, CheckpointMeta]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path
        The ``.safetensors`` file or the run directory containing ``model.safetensors``.
    model
        For ``custom:`` architectures, an instance of the user's module to load the
        weights into. For reference architectures it may be omitted: the model is
        rebuilt from the metadata.

    Returns
    -------
    (nn.Module, CheckpointMeta)
        The model in eval mode, and its metadata.
    """
    file = resolve_path(path)
    tensors, meta = _read(file)
    if model is None:
        if meta.architecture not in MODELS:
            raise CheckpointError(
                f"{file} holds a '{meta.architecture}' model, which the harness cannot rebuild "
                f"by itself; pass an instance: load_checkpoint(path, model=YourModule(...))."
            )
        _check_shapes(file, meta, tensors)
        model = build_model(meta.architecture, meta.input_shape, meta.num_classes)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"The weights in {file} do not fit the model ({type(model).__name__}, declared "
            f"architecture '{meta.architecture}', input shape {meta.input_shape}): {e}"
        ) from e
    model.eval()
    return model, meta
