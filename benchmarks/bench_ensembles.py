"""How much faster is an N-member ensemble than N single models, and which layout wins?

Run as ``python benchmarks/bench_ensembles.py [--members 10,50] [--experiment quick]
[--out runs/bench/ensembles.json]`` (about 15 minutes on 2 cores, most of it the N = 50
side). On the reference ConvNet and the 4,000-image `mnist` training split, in one
process, for each N:

1. **Training**: ``ensembles.train_members`` (N members, a plain loop, channels_last,
   bf16 autocast where the CPU has native bf16) against N x ``robustness.train.train`` of a
   single model the default way (contiguous, float32), same data, epochs and batch
   size. Target (issue 16): ratio <= 0.6 at N = 10 and 50.
2. **Inference and attack steps** on 1,000 test images: the Ensemble's member logits,
   and one forward + backward w.r.t. the input (the unit of a gradient attack),
   against N x the same for single default models. Target: inference ratio <= 0.6.
3. **Layouts** (first N only) for one forward + backward of N members (batch 256): loop
   contiguous, loop channels_last, ``torch.func.vmap`` over stacked member weights, and
   training-epoch time per precision (fp32, bf16) in both layouts.

Then, with ``--experiment quick`` (default) or ``full``, ``robustness experiment
ensembles`` from scratch in a fresh directory, timed: targets <= 2 min (``--quick``) and
<= 20 min (full); once in this process (``--backend local``, the default) and, the quick
one, once on worker processes (``--backend processes``: one per CPU, one torch thread
each). ``--members none --experiment full`` times the full run alone, in a record of its
own (``runs/bench/ensembles-full.json``), next to the default record.

The local runs also count the FLOPs of their convolutions and matrix products, by dtype
(:class:`ModelFlops`, in the run's own process, so the counting is in the time), and the
best rate this CPU runs the same ConvNet at (forward, and forward + backward, in
channels_last, per dtype and pass; with every thread in one process, or every CPU at its
single-thread rate, whichever is faster). Their quotient is a floor: no run of the same
work in eager PyTorch, on any backend, can be faster on this CPU than its convolutions
alone at those rates. A target below the floor needs less work, another CPU or faster
kernels, not less overhead.

Times of sections 2 and 3 are medians over rounds timed round-robin
(``robustness.bench.interleaved_times``). Training alternates too: at least 5 rounds,
each training the next ~N / rounds members both ways (which side goes first alternates);
the ensemble side resumes the earlier rounds' members from its run directory, so its
rounds add up to one ``train_members`` of N. The ratio is the median of the rounds'.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ensembles import Ensemble, train_members
from ensembles.members import default_precision
from ensembles.results import ExperimentResult
from robustness.bench import (
    Target,
    Timing,
    at_most,
    floor_step,
    interleaved_times,
    machine_line,
    print_targets,
    write_record,
)
from robustness.core.backend import usable_cpus
from robustness.data import load_dataset
from robustness.models import build_model
from robustness.train import train

TARGET = 0.6
CHILD = "--child-experiment"  # internal: one counted experiment run (see time_experiment)


class ModelFlops(TorchDispatchMode):
    """Counts the FLOPs of every operation torch has a FLOP formula for (convolutions
    forward and backward, matrix products), by the dtype of its first input and by pass:
    ``flops["torch.float32 forward"]``, ``flops["torch.float32 backward"]`` (a backward
    convolution; the backward of a linear layer is two matrix products, counted forward).

    A dispatch mode, not ``torch.utils.flop_counter.FlopCounterMode``: that one's module
    tracking fails inside ``torch.autograd.grad``, which every gradient attack calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            dtype = str(next(a.dtype for a in args if isinstance(a, torch.Tensor)))
            key = f"{dtype} {'backward' if 'backward' in func.__name__ else 'forward'}"
            self.flops[key] = self.flops.get(key, 0) + int(formula(*args, **kwargs,
                                                                    out_val=out))
        return out


def best_rates(keys: list[str], repeats: int = 15) -> dict[str, float]:
    """FLOP/s: the fastest this CPU runs the reference ConvNet (channels_last, batch 64 to
    512) for each key of :class:`ModelFlops` (``"torch.float32 forward"``, ...; bf16 under
    autocast), with this process's torch threads or, if faster, as the sum of every usable
    CPU at the single-thread rate (an upper bound for worker processes of one thread:
    one thread alone runs at least as fast as beside another).

    A forward key's rate is the best of no-grad forward passes. A backward key's is the
    best of whole forward + backward steps (input and weight gradients): the backward
    alone runs slower than that (the forward is the faster part), so the floor it gives
    stays a lower bound.
    """
    model = build_model("convnet", (1, 28, 28), 10, seed=0).to(
        memory_format=torch.channels_last)  # type: ignore[call-overload]
    threads = torch.get_num_threads()
    rates: dict[str, float] = {}
    for key in keys:
        dtype, kind = key.split()
        bf16 = dtype == str(torch.bfloat16)
        best = 0.0
        for batch, single in itertools.product((64, 128, 256, 512), (False, True)):
            if single and threads == 1 and usable_cpus() == 1:
                continue  # the same as the first
            x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
            y = torch.zeros(batch, dtype=torch.long)

            def run(x: torch.Tensor = x, y: torch.Tensor = y, grad: bool = kind == "backward",
                    bf16: bool = bf16) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    if grad:
                        F.cross_entropy(model(x.requires_grad_(True)), y).backward()
                    else:
                        with torch.no_grad():
                            model(x)

            counter = ModelFlops()
            with counter:
                run()
            flops = sum(counter.flops.values())
            torch.set_num_threads(1 if single else threads)
            try:
                seconds = interleaved_times({"run": run}, repeats=repeats)["run"].samples
            finally:
                torch.set_num_threads(threads)
            best = max(best, flops / min(seconds) * (usable_cpus() if single else 1))
        rates[key] = best
    return rates


def floor_seconds(flops: dict[str, int], rates: dict[str, float]) -> float:
    """Seconds the FLOPs of each :class:`ModelFlops` key take at that key's best rate."""
    return sum(n / rates[key] for key, n in flops.items())


def floor_line(flops: dict[str, int], rates: dict[str, float], seconds: float) -> str:
    """What a run's FLOPs take at the best rates: the floor, and the run's time over it."""
    floor = floor_seconds(flops, rates)
    parts = ", ".join(f"{n / 1e12:.1f} TFLOP {d.removeprefix('torch.')} at "
                      f"{rates[d] / 1e9:.0f} GFLOP/s" for d, n in sorted(flops.items()))
    return (f"floor of its convolutions and matrix products {floor:.0f} s ({parts}, the best "
            f"rates this CPU runs the ConvNet at in eager PyTorch, in one process or as "
            f"single-thread workers): the run took "
            f"{seconds / floor:.2f} x it")


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


def plain_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A single model's logits the default way: one no-grad pass of all of ``x``."""
    with torch.no_grad():
        return model(x)


def training_blocks(data: Any, n: int, epochs: int, blocks: int,
                    out_dir: Path) -> tuple[list[nn.Module], Ensemble, Timing, Timing]:
    """Section 1, alternating: ``blocks`` rounds, each training the next ~n / blocks
    members both ways (the first side alternates between rounds).

    The ensemble side calls ``train_members(data, hi, out_dir=...)``: it resumes the
    members of earlier rounds (their loading is counted) and trains the new ones, so its
    rounds add up to one ``train_members(data, n)``. Returns the single models, the
    ensemble, and the (blocks,) seconds of each side per round.
    """
    bounds = [round(n * b / blocks) for b in range(blocks + 1)]
    shape, k = data.input_shape, data.num_classes
    # Warm-up, untimed: each side's first epoch pays one-time costs (kernel selection,
    # allocator growth) that would otherwise land on the first round only.
    warm_x, warm_y = data.x_train[:512], data.y_train[:512]
    train(build_model("convnet", shape, k, seed=0), warm_x, warm_y, epochs=1, progress=False)
    train_members((warm_x, warm_y), 1, plan="uniform", epochs=1, progress=False,
                  num_classes=k)
    singles: list[nn.Module] = []
    ensemble: Ensemble | None = None
    single_s: list[float] = []
    ensemble_s: list[float] = []
    for b, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        def single_side(lo: int = lo, hi: int = hi) -> None:
            for i in range(lo, hi):
                model = build_model("convnet", shape, k, seed=i)
                train(model, data.x_train, data.y_train, epochs=epochs, seed=i,
                      progress=False)
                singles.append(model.eval())

        def ensemble_side(hi: int = hi) -> None:
            nonlocal ensemble
            ensemble = train_members(data, hi, plan="uniform", epochs=epochs,
                                     out_dir=out_dir, progress=False)

        sides = [(single_side, single_s), (ensemble_side, ensemble_s)]
        for fn, seconds in sides if b % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    assert ensemble is not None and len(singles) == n
    return singles, ensemble, Timing(tuple(single_s)), Timing(tuple(ensemble_s))


def section(data: Any, n: int, epochs: int, repeats: int, layouts: bool) -> dict[str, Any]:
    """Sections 1-3 for ensembles of ``n`` members."""
    blocks = min(n, max(5, repeats))  # >= 5 rounds, so the ratio has a spread
    with tempfile.TemporaryDirectory(prefix="bench-members-") as tmp:
        singles, ensemble, single_t, ensemble_t = training_blocks(
            data, n, epochs, blocks, Path(tmp) / "members")
    single_train, ensemble_train = sum(single_t.samples), sum(ensemble_t.samples)

    x, y = data.x_test, data.y_test
    xb, yb = x[:256], y[:256]
    times = interleaved_times({
        "single_predict": lambda: [plain_forward(m, x) for m in singles],
        "ensemble_predict": lambda: ensemble.member_predictions(x),
        "single_grad": lambda: [floor_step(m, xb, yb) for m in singles],
        "ensemble_grad": lambda: floor_step(ensemble.with_aggregation("logit_mean"), xb, yb),
    }, repeats=repeats)
    result: dict[str, Any] = {
        "members": n, "single_x_n_train_s": single_train, "ensemble_train_s": ensemble_train,
        # Round by round: a load change hits both sides of a round alike.
        "train_ratio": ensemble_t / single_t, "training_rounds": blocks,
        "predict_ratio": times["ensemble_predict"] / times["single_predict"],
        "grad_ratio": times["ensemble_grad"] / times["single_grad"],
        "seconds": {name: t.summary() for name, t in times.items()}}
    print(f"\nN = {n}: training {n} ConvNet members x {epochs} epochs on "
          f"{data.x_train.shape[0]} images")
    print(f"  {n} x single train() (contiguous, fp32)   {single_train:8.1f} s")
    print(f"  train_members                          {ensemble_train:8.1f} s   ratio "
          f"{result['train_ratio'].text()} over {blocks} alternating rounds (whole "
          f"{ensemble_train / single_train:.2f})")
    print(f"  predict on {x.shape[0]} images: ratio {result['predict_ratio'].text()}; "
          f"forward+backward w.r.t. input (batch {xb.shape[0]}): ratio "
          f"{result['grad_ratio'].text()}")
    if layouts:
        result["layouts"] = layout_section(singles, xb, yb, data, repeats)
    return result


def layout_section(singles: list[nn.Module], xb: torch.Tensor, yb: torch.Tensor, data: Any,
                   repeats: int) -> dict[str, Any]:
    """Section 3: layouts of one forward + backward of the members, and of training."""
    shape, k = data.input_shape, data.num_classes
    contiguous = [copy.deepcopy(m).eval() for m in singles]
    channels_last = [copy.deepcopy(m).to(memory_format=torch.channels_last).eval()
                     for m in singles]
    loop_cf, loop_cl = Ensemble(contiguous, "logit_mean"), Ensemble(channels_last, "logit_mean",
                                                                    channels_last=True)
    steps = interleaved_times({
        "loop, contiguous": lambda: floor_step(loop_cf, xb, yb),
        "loop, channels_last": lambda: floor_step(loop_cl, xb, yb),
        "vmap, contiguous": lambda: vmap_step(contiguous, False)(xb, yb),
        "vmap, channels_last": lambda: vmap_step(channels_last, True)(xb, yb),
    }, repeats=repeats)

    def epoch(fmt: torch.memory_format, prec: str) -> None:
        model = build_model("convnet", shape, k, seed=0).to(memory_format=fmt)
        train(model, data.x_train.contiguous(memory_format=fmt), data.y_train, epochs=1,
              progress=False, precision=prec)

    epochs = interleaved_times({
        f"{name}, {prec}": (lambda fmt=fmt, prec=prec: epoch(fmt, prec))
        for name, fmt in (("contiguous", torch.contiguous_format),
                          ("channels_last", torch.channels_last))
        for prec in ("fp32", "bf16")}, repeats=max(1, repeats // 2))
    print(f"  layouts, one forward + backward of {len(singles)} members (batch "
          f"{xb.shape[0]}):")
    base = steps["loop, contiguous"]
    for name, t in steps.items():
        print(f"    {name:<22} {t.median * 1e3:8.1f} ms   x{(t / base).median:.2f}")
    print("  one training epoch of one member:")
    base = epochs["contiguous, fp32"]
    for name, t in epochs.items():
        print(f"    {name:<22} {t.median:8.2f} s    x{(t / base).median:.2f}")
    return {"forward_backward_s": {n: t.summary() for n, t in steps.items()},
            "training_epoch_s": {n: t.summary() for n, t in epochs.items()}}


def experiment_argv(kind: str, backend: str, out: Path) -> list[str]:
    """The arguments of ``robustness experiment ensembles`` for one run."""
    return ["experiment", "ensembles", "--out", str(out),
            *(["--quick"] if kind == "quick" else []), "--backend", backend]


def time_experiment(kind: str, backend: str = "local",
                    ) -> tuple[float, dict[str, float], dict[str, Any] | None]:
    """Seconds of ``robustness experiment ensembles [--quick] --backend B`` from scratch
    (a fresh process), the seconds of its phases (``timings_s`` of its results.json) and,
    for ``local``, its FLOPs (:func:`count_child`) and, measured here after the timed run,
    the best rates (:func:`best_rates`): ``{"flops": {key: n}, "rates": {key: FLOP/s}}``."""
    with tempfile.TemporaryDirectory(prefix="bench-experiment-") as tmp:
        out = Path(tmp) / "out"
        argv = experiment_argv(kind, backend, out)
        # Local: in a child that counts FLOPs (the workers of other backends are not).
        command = [sys.executable, __file__, CHILD, *argv] if backend == "local" else \
            [sys.executable, "-m", "robustness.cli", *argv]
        print(f"\nrobustness {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        phases = dict(ExperimentResult.load(out).timings_s)
    if backend != "local":
        return seconds, phases, None
    flops = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, phases, {"flops": flops, "rates": best_rates(sorted(flops))}


def count_child(argv: list[str]) -> dict[str, int]:
    """Run the CLI with ``argv`` under :class:`ModelFlops` (in the timed process: the
    counting is in the time, the rates are not); return its FLOPs by key."""
    from robustness.cli import main as cli

    counter = ModelFlops()
    # stdout: the JSON line only; the CLI's own output is dropped, as in the other runs
    with counter, open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        status = cli(argv)
    if status != 0:
        raise SystemExit(status)
    return counter.flops


def phase_line(phases: dict[str, float]) -> str:
    """Where an experiment's time went: its single models (trained and attacked), member
    training, and attacking the ensembles."""
    train = sum(v for k, v in phases.items() if k.startswith("train_"))
    # "evaluate": the attack phase's wall time; "evaluate_<plan>": its tasks' seconds
    # (worker time when they run in parallel). Records before "evaluate" have only those.
    attack = phases.get("evaluate", sum(v for k, v in phases.items()
                                        if k.startswith("evaluate_")))
    single = phases.get("baseline", 0.0) + phases.get("adversarially_trained", 0.0)
    return (f"baseline and FGSM-trained model {single:.0f} s, training members {train:.0f} s, "
            f"attacking the ensembles {attack:.0f} s")


def layout_gains(layouts: dict[str, Any]) -> str:
    """What channels_last and bf16 bought one member on this CPU (section 3): the gains
    an ensemble's speed rests on."""
    step = layouts["forward_backward_s"]
    epoch = layouts["training_epoch_s"]
    cl = step["loop, channels_last"]["median"] / step["loop, contiguous"]["median"]
    best = epoch["channels_last, bf16"]["median"] / epoch["contiguous, fp32"]["median"]
    return (f"on this CPU channels_last runs a member's forward + backward at x{cl:.2f} and "
            f"trains an epoch with bf16 at x{best:.2f} of contiguous fp32")


def member_sizes(text: str) -> list[int]:
    """``--members``: ``"10,50"`` -> [10, 50]; ``"none"`` -> [] (time only the experiment)."""
    if text == "none":
        return []
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ensemble sizes >= 1 (e.g. 10,50) or 'none', got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=member_sizes, default=[10, 50],
                        help="comma-separated N, or 'none' to time only the experiment "
                        "(default: 10,50)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="training epochs per member (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds of sections 2 and 3 (default: %(default)s)")
    parser.add_argument("--experiment", choices=("none", "quick", "full"), default="quick",
                        help="also time `robustness experiment ensembles` (default: quick)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the JSON results (default: runs/bench/"
                        "ensembles.json; with --members none, ensembles-EXPERIMENT.json)")
    args = parser.parse_args(argv)
    if not args.members and args.experiment == "none":
        parser.error("--members none times only the experiment: give --experiment quick or full")
    # The experiment alone is a record of its own, beside the default one.
    name = "ensembles" if args.members else f"ensembles-{args.experiment}"
    args.out = args.out or Path(f"runs/bench/{name}.json")

    torch.set_num_threads(os.cpu_count() or 1)
    precision = default_precision()
    print(machine_line())
    print(f"ensemble training precision {precision}")
    data = load_dataset("mnist")

    targets: list[Target] = []
    sections = []
    why = ""  # what the layouts bought one member: measured with the first N only
    for i, n in enumerate(args.members):
        result = section(data, n, args.epochs, args.repeats, layouts=i == 0)
        why = why or layout_gains(result["layouts"])
        targets += [
            at_most(f"ensemble training / ({n} x one member)", result["train_ratio"], TARGET,
                    note=f"{precision}, channels_last; {result['training_rounds']} "
                    "alternating rounds of ~N / rounds members per side",
                    missed_because=why),
            at_most(f"ensemble inference / ({n} x one member)", result["predict_ratio"],
                    TARGET, missed_because=why)]
        sections.append({**result, "train_ratio": result["train_ratio"].summary(),
                         "predict_ratio": result["predict_ratio"].summary(),
                         "grad_ratio": result["grad_ratio"].summary()})
    summary = [f"N = {s['members']}: forward + backward w.r.t. the input / (N x one member) "
               f"{s['grad_ratio']['median']:.2f}" for s in sections]
    experiment = {}
    if args.experiment != "none":
        seconds, phases, counted = time_experiment(args.experiment)
        assert counted is not None
        floor = floor_line(counted["flops"], counted["rates"], seconds)
        where = phase_line(phases)
        print(f"  {seconds:.0f} s: {where}\n  {floor}")
        experiment = {"kind": args.experiment, "seconds": seconds, "phases_s": phases,
                      "flops": counted["flops"], "best_flop_rates": counted["rates"],
                      "floor_s": floor_seconds(counted["flops"], counted["rates"])}
        title, bound = ("ensemble experiment --quick from scratch", 120) \
            if args.experiment == "quick" else ("ensemble experiment (full) from scratch", 1200)
        below = "; the target is below that floor: it needs less work, another CPU or " \
            "faster kernels than eager PyTorch's, not less overhead" \
            if experiment["floor_s"] > bound else ""
        targets.append(at_most(title, seconds, bound, unit=" s", note=floor,
                               missed_because=where + below))
        if args.experiment == "quick":  # the full run is long enough once
            # The same run on worker processes, one per CPU with one torch thread each.
            on_workers, worker_phases, _ = time_experiment(args.experiment, "processes")
            print(f"  {on_workers:.0f} s: {phase_line(worker_phases)}")
            experiment["processes"] = {"seconds": on_workers, "phases_s": worker_phases}
            targets.append(at_most(f"{title}, --backend processes", on_workers, bound,
                                   unit=" s",
                                   note=f"{usable_cpus()} worker processes of 1 torch "
                                   "thread; " + floor_line(counted["flops"], counted["rates"],
                                                           on_workers),
                                   missed_because=phase_line(worker_phases) + below))
    if args.experiment != "full" and args.members:
        summary.append("the full ensemble experiment (target <= 20 min) is not timed by "
                       "default: `python benchmarks/bench_ensembles.py --members none "
                       "--experiment full` (record ensembles-full)")
    print_targets(targets)
    write_record(args.out, name, targets, summary=summary, sizes=sections,
                 epochs=args.epochs, precision=precision, experiment=experiment)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == CHILD:
        print(json.dumps(count_child(sys.argv[2:])))
        sys.exit(0)
    sys.exit(main())
