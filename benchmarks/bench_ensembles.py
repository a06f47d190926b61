"""How much faster is an N-member ensemble than N single models, and which layout wins?

Run as ``python benchmarks/bench_ensembles.py [--members 5] [--out runs/bench/ensembles.json]``
(a few minutes on 2 cores). On the reference ConvNet and the 4,000-image `mnist`
training split, in one process:

1. **Training**: ``ensembles.train_members`` (N members, a plain loop, channels_last,
   bf16 autocast where the CPU has AMX) against N x ``robustness.train.train`` of a
   single model the default way (contiguous, float32), same data, epochs and batch
   size. Target: ratio <= 0.6.
2. **Inference and attack steps** on 1,000 test images: the Ensemble's member logits,
   and one forward + backward w.r.t. the input (the unit of a gradient attack),
   against N x the same for single default models.
3. **Layouts** for one forward + backward of N members (batch 256): loop contiguous,
   loop channels_last, ``torch.func.vmap`` over stacked member weights (contiguous and
   channels_last), and training-epoch time per precision (fp32, bf16) in both layouts.

Times of section 2 and 3 are medians over repeats, timed round-robin (see
``bench_attacks.interleaved_medians``); training is timed once per side (it is long
and the sides run back to back). The ratio of the first section is therefore
sensitive to load changes; the script prints the load average.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench_attacks import floor_step, interleaved_medians
from machine import cpu_features, machine_line
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F

from ensembles import Ensemble, train_members
from ensembles.members import default_precision
from robustness.core.modes import predict
from robustness.data import load_dataset
from robustness.models import build_model
from robustness.train import train

TARGET = 0.6


def vmap_step(members: list[nn.Module], channels_last: bool) -> Any:
    """One forward + backward w.r.t. the input through all members, stacked with vmap."""
    params, buffers = stack_module_state(members)  # type: ignore[arg-type]
    base = copy.deepcopy(members[0]).to("meta")

    def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
            x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xa = x.detach().requires_grad_(True)
        xin = xa.contiguous(memory_format=torch.channels_last) if channels_last else xa
        logits = torch.vmap(one, in_dims=(0, 0, None))(params, buffers, xin)  # (N, B, K)
        loss = sum(F.cross_entropy(z, y, reduction="sum") for z in logits)
        (grad,) = torch.autograd.grad(loss, xa)
        return grad

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=5, help="N (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="training epochs per member (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats of sections 2 and 3 (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ensembles.json"),
                        help="where to write the JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    n = args.members

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    precision = default_precision()
    print(machine_line())
    print(f"ensemble training precision {precision}")
    data = load_dataset("mnist")
    shape, k = data.input_shape, data.num_classes

    # 1. Training: N default single-model runs vs one ensemble run.
    start = time.perf_counter()
    singles = []
    for i in range(n):
        model = build_model("convnet", shape, k, seed=i)
        train(model, data.x_train, data.y_train, epochs=args.epochs, seed=i, progress=False)
        singles.append(model.eval())
    single_train = time.perf_counter() - start
    start = time.perf_counter()
    ensemble = train_members(data, n, plan="uniform", epochs=args.epochs, progress=False)
    ensemble_train = time.perf_counter() - start
    train_ratio = ensemble_train / single_train

    # 2. Inference and attack steps, ensemble vs N x single default model.
    x, y = data.x_test, data.y_test
    xb, yb = x[:256], y[:256]
    times = interleaved_medians({
        "single_predict": lambda: [predict(m, x) for m in singles],
        "ensemble_predict": lambda: ensemble.member_predictions(x),
        "single_grad": lambda: [floor_step(m, xb, yb) for m in singles],
        "ensemble_grad": lambda: floor_step(ensemble.with_aggregation("logit_mean"), xb, yb),
    }, repeats=args.repeats)
    predict_ratio = times["ensemble_predict"] / times["single_predict"]
    grad_ratio = times["ensemble_grad"] / times["single_grad"]

    # 3. Layouts of one forward + backward of N members, and of one training epoch.
    contiguous = [copy.deepcopy(m).eval() for m in singles]
    channels_last = [copy.deepcopy(m).to(memory_format=torch.channels_last).eval()
                     for m in singles]
    loop_cf, loop_cl = Ensemble(contiguous, "logit_mean"), Ensemble(channels_last, "logit_mean",
                                                                    channels_last=True)
    layouts = interleaved_medians({
        "loop, contiguous": lambda: floor_step(loop_cf, xb, yb),
        "loop, channels_last": lambda: floor_step(loop_cl, xb, yb),
        "vmap, contiguous": lambda: vmap_step(contiguous, False)(xb, yb),
        "vmap, channels_last": lambda: vmap_step(channels_last, True)(xb, yb),
    }, repeats=args.repeats)

    def epoch(fmt: torch.memory_format, prec: str) -> None:
        model = build_model("convnet", shape, k, seed=0).to(memory_format=fmt)
        train(model, data.x_train.contiguous(memory_format=fmt), data.y_train, epochs=1,
              progress=False, precision=prec)

    epochs = interleaved_medians({
        f"{name}, {prec}": (lambda fmt=fmt, prec=prec: epoch(fmt, prec))
        for name, fmt in (("contiguous", torch.contiguous_format),
                          ("channels_last", torch.channels_last))
        for prec in ("fp32", "bf16")}, repeats=max(1, args.repeats // 2))

    print(f"\n1. Training {n} ConvNet members x {args.epochs} epochs on "
          f"{data.x_train.shape[0]} images")
    print(f"  {n} x single train() (contiguous, fp32)   {single_train:8.1f} s")
    print(f"  train_members (channels_last, {precision})  {ensemble_train:8.1f} s   "
          f"ratio {train_ratio:.2f}  (target <= {TARGET}: "
          f"{'met' if train_ratio <= TARGET else 'NOT met'})")
    print(f"\n2. Inference on {x.shape[0]} images and attack steps on {xb.shape[0]}")
    print(f"  predict: {n} singles {times['single_predict']:.3f} s, ensemble "
          f"{times['ensemble_predict']:.3f} s, ratio {predict_ratio:.2f}")
    print(f"  forward+backward w.r.t. input: {n} singles {times['single_grad']:.3f} s, "
          f"ensemble {times['ensemble_grad']:.3f} s, ratio {grad_ratio:.2f}")
    print(f"\n3. Layouts: one forward + backward of {n} members (batch {xb.shape[0]})")
    base = layouts["loop, contiguous"]
    for name, t in layouts.items():
        print(f"  {name:<22} {t * 1e3:8.1f} ms   x{t / base:.2f} of loop, contiguous")
    print("   one training epoch of one member:")
    base = epochs["contiguous, fp32"]
    for name, t in epochs.items():
        print(f"  {name:<22} {t:8.2f} s    x{t / base:.2f} of contiguous, fp32")

    result = {
        "members": n, "epochs": args.epochs, "load_average": load, "precision": precision,
        "cpu": cpu_features(),
        "training": {"single_x_n_s": single_train, "ensemble_s": ensemble_train,
                     "ratio": train_ratio, "target": TARGET, "met": train_ratio <= TARGET},
        "inference": {**times, "predict_ratio": predict_ratio, "grad_ratio": grad_ratio},
        "layouts_forward_backward_s": layouts, "layouts_training_epoch_s": epochs,
        "torch": torch.__version__, "threads": threads,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
