"""Model modes and the one batched no-grad forward pass every layer uses.

torch is imported inside the functions only, so importing this module stays light.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

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

    A batch is at most ``batch_size`` rows, and no larger than the cache-sized passes of
    :func:`pass_rows` (rows of ~125 images for the reference ConvNet: a forward of 1,000
    images took 0.7x the time so): the same logits up to float rounding.

    Shapes: x (N, C, H, W) -> logits (N, K). Every submodule's mode is restored after.
    """
    import torch

    with eval_mode(model), torch.no_grad():
        size = max(1, min(batch_size, balanced_rows(x.shape[0], pass_rows(model, x))))
        return torch.cat([model(x[i:i + size]) for i in range(0, x.shape[0], size)])


# The probe that decides whether the channels_last layout may be used: a few images, and
# logits that must agree within this tolerance (relative to the logits' scale).
LAYOUT_PROBE = 8
LAYOUT_RTOL = 1e-4
V = TypeVar("V")


class ModelVerdicts(Generic[V]):
    """Verdicts about running a model, each kept while :func:`model_key` is unchanged.

    An evaluation calls attacks on the same model for every shard, eps and restart; a
    check that costs forward passes (the output check, the layout probe) need not be
    repeated until the model or the inputs' shape change. Weak keys: a model is not kept
    alive by the cache.
    """

    def __init__(self) -> None:
        self._known: weakref.WeakKeyDictionary[nn.Module, tuple[Hashable, V]] = \
            weakref.WeakKeyDictionary()

    def get(self, model: nn.Module, key: Hashable) -> V | None:
        """The verdict kept for ``model`` under ``key``, or None."""
        known = self._known.get(model)
        return known[1] if known is not None and known[0] == key else None

    def put(self, model: nn.Module, key: Hashable, verdict: V) -> None:
        """Keep ``verdict`` for ``model`` while its key stays ``key``."""
        self._known[model] = (key, verdict)


# Does the model run in channels_last with the same logits? The probe's two forward
# passes were ~3% of a PGD-10 call at batch 32.
_LAYOUT_VERDICTS: ModelVerdicts[bool] = ModelVerdicts()


@contextmanager
def fast_layout(model: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Run a block with ``model``'s 4-D weights in ``channels_last``, then restore them.

    Convolutions on CPU run faster in ``channels_last`` for the same result up to float
    rounding: a ConvNet's forward + backward at batch 256 took 0.71-0.89x the time on
    AVX-512, 0.93x on AVX2 (``docs/benchmarks.md``). The weights are converted in place (the
    parameters stay the same objects) and written back into their own storage afterwards,
    also on errors and Ctrl-C; a change the block made to them is kept, not hidden.

    The layout is used only if a probe forward on the first images of ``x`` runs in it
    and gives the same logits within ``LAYOUT_RTOL`` of their scale; a model that
    ``.view``-s a convolution's output, say, fails the probe and keeps its layout. The
    verdict is kept for the next block on the same model while its submodules, hooks,
    modes, weights (storage and in-place version) and the inputs' shape and dtype stay the
    same. A model shared with another thread sees the converted weights during the block.

    Parameters
    ----------
    model
        The model, in the mode the block will use (the probe is a forward in that mode).
    x
        (N, C, H, W) inputs of the block; other shapes leave the model as it is.

    Yields
    ------
    torch.Tensor
        ``x`` in the layout the block runs in: a ``channels_last`` copy if the model's
        weights are in it, else ``x`` itself.
    """
    import torch

    converted, originals = [], []
    if x.dim() == 4:
        for module in model.modules():
            for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                # Also weights that count as both (one input channel): their strides decide
                # which kernel runs.
                if tensor.dim() == 4 and tensor.is_contiguous() \
                        and tensor.stride() != _channels_last_strides(tensor.shape):
                    converted.append(tensor)
                    originals.append(tensor.data)
    if not converted:
        yield x
        return

    def set_layout(channels_last: bool) -> None:
        for tensor, original in zip(converted, originals, strict=True):
            if channels_last:
                tensor.data = torch.empty_like(original, memory_format=torch.channels_last
                                               ).copy_(original)
            else:  # back into the very same storage, with whatever the block wrote
                tensor.data = original.copy_(tensor.data)

    key = model_key(model, x)
    verdict = _LAYOUT_VERDICTS.get(model, key)
    if verdict is False:
        yield x
        return
    probe = x[:LAYOUT_PROBE].detach()
    applied = use = False
    try:
        if verdict:
            set_layout(True)
            applied = use = True
        else:
            with torch.no_grad():
                before = model(probe)
                set_layout(True)
                applied = True
                try:
                    after = model(probe)
                except RuntimeError:  # e.g. .view() of a channels_last activation
                    after = None
            if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) \
                    and before.shape == after.shape:
                scale = float(before.abs().amax()) if before.numel() else 0.0
                use = bool(((before - after).abs() <= LAYOUT_RTOL * max(scale, 1.0)).all())
            _LAYOUT_VERDICTS.put(model, key, use)
            if not use:
                set_layout(False)
                applied = False
        yield torch.empty_like(x, memory_format=torch.channels_last).copy_(x) if use else x
    finally:
        if applied:
            set_layout(False)


# Rows per pass of an attack's forward + backward: as many as keep the largest output of
# any leaf module within this many bytes. Smaller passes stay in the CPU's caches: PGD-10
# in such passes took 0.60-0.87x the time of one pass of the whole batch (LeNet at 1,000
# images, the reference ConvNet at 256-2,000, a 3-channel ConvNet at 256; AVX-512, 2
# cores; `nox -s bench` measures it). The largest output, not the sum: an ensemble's
# members run one after another, and passes sized by their sum were too small to gain
# (1.13x). A small model is never split.
PASS_BYTES = 6 * 2**20
# Passes of fewer rows were not measured: a model whose largest activation needs them
# (over PASS_BYTES / 32, ~190 KiB a row) runs in one pass, as before.
MIN_PASS_ROWS = 32
_ROW_BYTES: ModelVerdicts[float] = ModelVerdicts()  # the largest leaf output of one row
_ROWS_INDEPENDENT: ModelVerdicts[bool] = ModelVerdicts()  # the halves probe


def pass_rows(model: nn.Module, x: torch.Tensor) -> int | None:
    """The most rows of inputs like ``x`` an attack should run through ``model`` at once,
    or None where one pass of all of ``x`` is as good.

    In a pass, no leaf module's output is larger than about ``PASS_BYTES`` (one forward
    of two rows, with hooks, measures them); passes are never below ``MIN_PASS_ROWS``
    rows, so a batch of fewer than 48 rows is never split (nor measured). A batch is
    split only where that gives two passes or more (:func:`balanced_rows`), and only if
    the model treats rows independently: a probe of the first images in one pass and in
    two halves must give the same logits within ``LAYOUT_RTOL`` of their scale, so a
    model that normalises over the batch is never split. Both verdicts are kept while
    :func:`model_key` is unchanged.

    Parameters
    ----------
    model
        The model, in the mode (and layout) the passes will use.
    x
        (N, C, H, W) inputs.

    Returns
    -------
    int or None
        Rows per pass, for ``x`` and any smaller batch of such inputs; None: do not split.
    """
    import torch

    n = x.shape[0]
    if balanced_rows(n, MIN_PASS_ROWS) == n:  # one pass whatever the model: not measured
        return None
    key = model_key(model, x)
    per_row = _ROW_BYTES.get(model, key)
    if per_row is None:
        sizes: list[int] = []

        def count(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                sizes.append(output.numel() * output.element_size())

        leaves = [m for m in model.modules() if next(m.children(), None) is None]
        handles = [m.register_forward_hook(count) for m in leaves]
        try:
            # The probes leave the global RNG alone: an attack seeded before them must draw
            # the same random start whether or not the verdicts were already kept.
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                model(x[:2].detach())  # two rows: batch norm refuses one in train mode
        finally:
            for handle in handles:
                handle.remove()
        per_row = max(sizes, default=0) / 2
        _ROW_BYTES.put(model, key, per_row)
    rows = int(PASS_BYTES // per_row) if per_row else n
    if rows < MIN_PASS_ROWS or balanced_rows(n, rows) == n:
        return None
    independent = _ROWS_INDEPENDENT.get(model, key)
    if independent is None:
        probe = x[:LAYOUT_PROBE].detach()
        half = probe.shape[0] // 2
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            whole = model(probe)
            parts = torch.cat([model(probe[:half]), model(probe[half:])])
        scale = float(whole.abs().amax()) if whole.numel() else 0.0
        independent = whole.shape == parts.shape and \
            bool(((whole - parts).abs() <= LAYOUT_RTOL * max(scale, 1.0)).all())
        _ROWS_INDEPENDENT.put(model, key, independent)
    return rows if independent else None


def balanced_rows(n: int, rows: int | None) -> int:
    """Rows per pass for ``n`` rows in passes of at most about ``rows`` (None: all ``n``):
    ``round(n / rows)`` passes of equal size (the last may be smaller by a few rows), so
    a batch a little over ``rows`` is not split into a full pass and a sliver."""
    if rows is None or n <= rows:
        return n
    passes = round(n / rows)
    return n if passes < 2 else -(-n // passes)


def model_key(model: nn.Module, x: torch.Tensor) -> Hashable:
    """What a verdict about running ``model`` on inputs like ``x`` depends on, cheap to
    compute and compare, so that the verdict can be kept for the next call.

    The inputs' shape (without the batch) and dtype, each submodule (identity, mode,
    forward hooks) and each parameter and buffer (identity, storage, in-place version:
    an optimizer step, ``load_state_dict`` or ``.data =`` changes it; an in-place write
    through ``.data`` is not seen). Shapes: x (N, C, H, W).
    """
    modules = tuple((id(m), m.training, tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
                    for m in model.modules())
    tensors = tuple((id(t), t.data_ptr(), t._version, tuple(t.shape), t.dtype)
                    for t in [*model.parameters(), *model.buffers()])
    return tuple(x.shape[1:]), x.dtype, modules, tensors


def _channels_last_strides(shape: torch.Size) -> tuple[int, ...]:
    """The strides of a ``channels_last`` tensor of (N, C, H, W) ``shape``."""
    _, c, h, w = shape
    return (c * h * w, 1, w * c, c)
