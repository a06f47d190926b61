"""Training ensemble members: fast, seeded, resumable, in this process or on Ray.

Layout. Each member is one task of a :mod:`robustness.core.backend`: locally they are
trained one after another; with ``backend="ray"`` one Ray task per member. Each is trained in
``channels_last`` memory format and, on CPUs with native bfloat16 (AMX or AVX512-BF16),
with bfloat16 autocast.
``benchmarks/bench_ensembles.py`` measures the alternatives on the machine at hand:
stacking members with ``torch.func.vmap`` (or grouped convolutions) was slower than
the loop on CPU; ``channels_last`` roughly halves a ConvNet's time.

Resuming. With ``out_dir``, the configuration is written to ``ensemble.json`` first and
every finished member is saved atomically to ``members/member-NNN.safetensors``. A
killed run, started again with the same arguments, loads the finished members
(verifying their checksums) and trains only the missing ones; a different
configuration in the same directory is refused rather than mixed in. Member ``i``
depends only on ``(seed, i)``, so asking for more members later extends the ensemble.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ensembles.ensemble import Ensemble
from ensembles.sampling import SamplingPlan, member_seeds
from robustness.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from robustness.core.backend import Backend, get_backend
from robustness.core.io import write_json
from robustness.core.validation import (
    MAX_ITERATIONS,
    ParameterError,
    check_choice,
    check_float,
    check_images,
    check_int,
    check_labels,
    invalid,
)
from robustness.data import Dataset
from robustness.models import build_model
from robustness.train import PRECISIONS, train

MANIFEST = "ensemble.json"
MEMBER_DIR = "members"


class EnsembleResumeError(ParameterError):
    """``out_dir`` holds members trained with a different configuration."""


def default_precision() -> str:
    """``"bf16"`` on CPUs with native bfloat16 arithmetic (AMX tiles, or AVX512-BF16),
    else ``"fp32"``: on AVX2 alone bf16 autocast is emulated and slower than float32.

    Measured for one member's epoch (``benchmarks/bench_ensembles.py``): AVX512-BF16
    without AMX, channels_last bf16 0.71 x contiguous fp32 against 0.96 x for
    channels_last fp32; AMX about 0.5 x.
    """
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        supported = getattr(torch.cpu, probe, None)
        if supported is not None and supported():
            return "bf16"
    return "fp32"


@dataclass(frozen=True)
class MemberConfig:
    """Everything that determines member ``i`` besides ``i`` itself."""

    architecture: str
    plan: SamplingPlan
    seed: int
    epochs: int
    batch_size: int
    lr: float
    precision: str
    data_digest: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the manifest)."""
        return {"architecture": self.architecture, "plan": self.plan.to_dict(),
                "seed": self.seed, "epochs": self.epochs, "batch_size": self.batch_size,
                "lr": self.lr, "precision": self.precision, "data_digest": self.data_digest}


def data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the training tensors, so a resumed run is known to use the same data."""
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def member_path(out_dir: str | os.PathLike[str], index: int) -> Path:
    """Where member ``index`` (0-based) of a run directory is saved."""
    return Path(out_dir) / MEMBER_DIR / f"member-{index:03d}.safetensors"


def train_members(
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    n_members: int,
    *,
    plan: SamplingPlan | str = "bootstrap",
    architecture: str = "convnet",
    seed: int = 0,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 1e-3,
    precision: str | None = None,
    aggregation: str = "mean",
    out_dir: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    progress: bool = True,
    backend: str | Backend = "local",
) -> Ensemble:
    """Train (or resume) ``n_members`` members and return them as an :class:`Ensemble`.

    Parameters
    ----------
    data
        A :class:`robustness.data.Dataset` (its training split is used) or a pair
        ``(x (N, C, H, W) in [0, 1], y (N,) int64)``.
    n_members
        N >= 1.
    plan
        Sampling plan: ``"bootstrap"``, ``"subsample"``, ``"uniform"``, ``"kind:fraction"``
        or a :class:`SamplingPlan`.
    architecture
        Reference model name of :func:`robustness.models.build_model`.
    seed
        Ensemble seed; member ``i``'s sample, initialisation and training order come
        from :func:`member_seeds` ``(seed, i)``.
    epochs, batch_size, lr
        Per-member training settings of :func:`robustness.train.train`.
    precision
        ``"fp32"`` or ``"bf16"`` autocast; default :func:`default_precision`.
    aggregation
        Aggregation of the returned ensemble.
    out_dir
        Run directory for resuming (see the module docstring); None keeps nothing.
    num_classes
        K; default ``max(y) + 1`` for tensor pairs, the dataset's for a Dataset.
    progress
        Progress bar over members on stderr.
    backend
        ``"local"`` (this process, one member after another), ``"ray"`` (one Ray task per
        member, on a local Ray instance or the cluster of ``RAY_ADDRESS``) or a
        :class:`~robustness.core.backend.Backend` such as ``RayBackend(RayOptions(
        address=..., cpus_per_task=2))``. Members are the same on either, bit for bit, when
        the local process uses as many torch threads as a Ray task (see
        :mod:`robustness.core.backend`); the driver saves each member as it arrives.

    Returns
    -------
    Ensemble
        In eval mode and ``channels_last``; ``ensemble.plan``, ``ensemble.seed`` and
        ``ensemble.training_log`` (one dict per member: trained or resumed, seconds,
        unique-example fraction, final training loss) describe how it was made.
    """
    owner = "train_members"
    x, y, k = _unpack(owner, data, num_classes)
    check_int(owner, "n_members", n_members, low=1)
    sampling = SamplingPlan.parse(plan)
    check_int(owner, "seed", seed, low=0)
    check_int(owner, "epochs", epochs, low=1, high=MAX_ITERATIONS)
    check_int(owner, "batch_size", batch_size, low=1)
    check_float(owner, "lr", lr, low=0.0, low_open=True)
    precision = default_precision() if precision is None else precision
    check_choice(owner, "precision", precision, PRECISIONS)
    input_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    build_model(architecture, input_shape, k, seed=0)  # validates name and shape up front
    config = MemberConfig(architecture, sampling, seed, epochs, batch_size, lr, precision,
                          data_digest(x, y))
    runner = get_backend(backend, owner=owner)  # before anything is written
    try:
        if out_dir is not None:
            _claim(Path(out_dir), config)
        return _train(runner, config, n_members, x, y, input_shape, k, aggregation, out_dir,
                      progress)
    finally:
        if not isinstance(backend, Backend):  # started here (a local Ray), so stopped here
            runner.close()


def _train(runner: Backend, config: MemberConfig, n_members: int, x: torch.Tensor,
           y: torch.Tensor, input_shape: tuple[int, int, int], k: int, aggregation: str,
           out_dir: str | os.PathLike[str] | None, progress: bool) -> Ensemble:
    x_fast = x.contiguous(memory_format=torch.channels_last)
    members: dict[int, nn.Module] = {}
    log: dict[int, dict[str, Any]] = {}
    for i in range(n_members):  # the run directory first: finished members are not redone
        path = member_path(out_dir, i) if out_dir is not None else None
        if path is not None and path.exists():
            model, meta = load_checkpoint(path)
            if meta.extra.get("config") != config.to_dict() or meta.extra.get("member") != i:
                raise EnsembleResumeError(f"{path} was not trained with this configuration; "
                                          "use another out_dir or delete it.")
            members[i] = model.eval()
            log[i] = {**meta.extra["log"], "resumed": True}
    missing = [i for i in range(n_members) if i not in members]
    bar = tqdm(total=n_members, initial=n_members - len(missing), unit="member",
               desc=f"members ({config.plan.kind}, {runner.name})",
               disable=None if progress else True)  # None: only on a TTY
    # The data goes to the workers once (Ray's object store), not with every member.
    shared = {"config": config, "x": x_fast, "y": y, "input_shape": input_shape, "k": k}
    for pos, (model, entry) in runner.run(_member_task, missing, shared):
        i = missing[pos]
        if out_dir is not None:  # saved as it arrives: a crashed driver resumes from here
            save_checkpoint(model, member_path(out_dir, i), CheckpointMeta(
                architecture=config.architecture, input_shape=input_shape, num_classes=k,
                seed=config.seed, extra={"member": i, "config": config.to_dict(), "log": entry}))
        members[i] = model.eval()
        log[i] = {**entry, "resumed": False}
        bar.update(1)
        bar.set_postfix(loss=f"{entry['final_loss']:.3f}")
    bar.close()
    ordered = [members[i] for i in range(n_members)]
    ensemble = Ensemble(ordered, aggregation, input_shape=input_shape, channels_last=True)
    ensemble.plan = config.plan
    ensemble.seed = config.seed
    ensemble.training_log = [log[i] for i in range(n_members)]
    return ensemble.eval()


def load_members(out_dir: str | os.PathLike[str], n_members: int | None = None, *,
                 aggregation: str = "mean") -> Ensemble:
    """Load the first ``n_members`` saved members of a run directory (all by default)."""
    owner = "load_members"
    root = Path(out_dir)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise invalid(owner, "out_dir", f"a run directory of train_members (with {MANIFEST})",
                      str(root))
    available = 0
    while member_path(root, available).exists():
        available += 1
    n = available if n_members is None else n_members
    if available == 0 or isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= available:
        raise invalid(owner, "n_members", f"an int in [1, {available}] (members saved in "
                      f"{root})", n_members)
    members = [load_checkpoint(member_path(root, i))[0].eval() for i in range(n)]
    return Ensemble(members, aggregation, channels_last=True).eval()


def _unpack(owner: str, data: Dataset | tuple[torch.Tensor, torch.Tensor],
            num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    if isinstance(data, Dataset):
        x, y, k = data.x_train, data.y_train, data.num_classes
    elif isinstance(data, tuple) and len(data) == 2:
        x, y = data
        check_images(owner, x, "data[0]")
        check_labels(owner, y, x.shape[0])
        k = int(y.max()) + 1
    else:
        raise invalid(owner, "data", "a Dataset or a pair (x, y) of tensors", data)
    if num_classes is not None:
        check_int(owner, "num_classes", num_classes, low=2)
        if int(y.max()) >= num_classes:
            raise invalid(owner, "num_classes", f"more than the largest label {int(y.max())}",
                          num_classes)
        k = num_classes
    return x, y, k


def _claim(root: Path, config: MemberConfig) -> None:
    """Write the manifest, or check an existing one matches ``config``."""
    manifest = root / MANIFEST
    if manifest.exists():
        import json

        saved = json.loads(manifest.read_text(encoding="utf-8"))
        wanted = config.to_dict()
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        if diff:
            raise EnsembleResumeError(
                f"{root} holds members trained with a different configuration "
                f"(differs in: {', '.join(diff)}); use another out_dir or delete it.")
        return
    write_json(manifest, config.to_dict())


def _member_task(i: int, *, config: MemberConfig, x: torch.Tensor, y: torch.Tensor,
                 input_shape: tuple[int, int, int], k: int) -> tuple[nn.Module, dict[str, Any]]:
    """Train member ``i``: a pure function of ``(config, i)`` and the data, so it runs
    the same in this process or on a Ray worker."""
    seeds = member_seeds(config.seed, i)
    idx = config.plan.indices(x.shape[0], seeds.sample)
    model = build_model(config.architecture, input_shape, k, seed=seeds.init)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    start = time.perf_counter()
    history = train(model, x[idx], y[idx], epochs=config.epochs, batch_size=config.batch_size,
                    lr=config.lr, seed=seeds.train, progress=False, precision=config.precision,
                    description=f"member {i}")
    entry = {"member": i, "seconds": round(time.perf_counter() - start, 3),
             "sample_size": int(idx.numel()),
             "unique_fraction": round(int(idx.unique().numel()) / x.shape[0], 4),
             "final_loss": history.loss[-1], "train_accuracy": history.train_accuracy[-1],
             "threads": torch.get_num_threads()}
    return model, entry
