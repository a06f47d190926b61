"""Ensemble training on Ray (local CPUs) against the local backend, and Ray's cost per task.

Run as ``python benchmarks/bench_ray.py [--members 4] [--out runs/bench/ray.json]``
(needs ``pip install '.[ray]'``; a few minutes on 2 cores). In one process:

1. **Ensemble training**: ``train_members`` of N reference ConvNets on the 4,000-image
   ``mnist`` training split, ``--backend local`` (one member after another, torch using
   every core) against ``--backend ray`` on a local Ray instance with every CPU (one task
   per member, 1 CPU and 1 torch thread each). Ratio: Ray wall time / local wall time.
   Ray's workers are started (and warmed) before the timed run; their start-up is printed
   separately, as a cluster pays it once.
2. **Overhead per task**: wall time of 200 tasks that do nothing but read a shared 4,000-
   image tensor from the object store, per task (what one member, shard or candidate
   batch pays on top of its work), and the time to put that tensor into the store.

On one machine Ray can only win where the local path leaves cores idle: with 2 cores and
torch already using both, expect a ratio near 1 (plus overhead); it scales with machines,
which ``docs/scaling.md`` projects from these two numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ensembles.members import train_members
from robustness.bench import Timing, machine_line, write_record
from robustness.core.backend import RayBackend, RayOptions
from robustness.data import load_dataset


def _noop(item: int, *, x: torch.Tensor) -> int:
    return item + int(x.shape[0] > 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=4, help="N (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="training epochs per member (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each backend, alternating (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ray.json"))
    args = parser.parse_args(argv)
    try:
        import ray
    except ImportError:
        print("bench_ray: Ray is not installed (pip install '.[ray]'); skipped")
        return 0
    print(machine_line())
    cpus = os.cpu_count() or 1
    data = load_dataset("mnist")
    kwargs: dict[str, Any] = {"architecture": "convnet", "epochs": args.epochs,
                              "progress": False, "seed": 0}

    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
    backend = RayBackend(RayOptions(cpus_per_task=1))
    list(backend.run(_noop, list(range(cpus)), {"x": data.x_train}))  # start the workers
    startup = time.perf_counter() - start
    print(f"Ray start-up (init + {cpus} workers): {startup:.1f} s")

    times: dict[str, list[float]] = {"local": [], "ray": []}
    for _ in range(args.repeats):
        for name in ("local", "ray"):
            t = time.perf_counter()
            train_members(data, args.members, backend="local" if name == "local" else backend,
                          **kwargs)
            times[name].append(time.perf_counter() - t)
            print(f"  {name}: {args.members} members in {times[name][-1]:.1f} s", flush=True)

    n_tasks = 200
    t = time.perf_counter()
    ref = ray.put(data.x_train)
    put_s = time.perf_counter() - t
    del ref
    per_task = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        list(backend.run(_noop, list(range(n_tasks)), {"x": data.x_train}))
        per_task.append((time.perf_counter() - t) / n_tasks)
    ray.shutdown()

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["ray"] / med["local"]
    print(f"\nEnsemble training, {args.members} ConvNet members x {args.epochs} epochs, median "
          f"of {args.repeats} (min-max):")
    for name, ts in times.items():
        print(f"  {name:6s} {med[name]:6.1f} s ({min(ts):.1f}-{max(ts):.1f})")
    print(f"ratio ray / local: {ratio:.2f} (Ray: {cpus} tasks of 1 CPU at a time; local: one "
          f"member at a time on {torch.get_num_threads()} threads)")
    print(f"overhead per Ray task: {statistics.median(per_task) * 1e3:.1f} ms (median of "
          f"{args.repeats} x {n_tasks} empty tasks); putting the {tuple(data.x_train.shape)} "
          f"training tensor into the object store: {put_s * 1e3:.0f} ms, once per run")
    spread = Timing(tuple(times["ray"])) / Timing(tuple(times["local"]))
    write_record(args.out, "ray", [], summary=[
        f"ensemble training, {args.members} members x {args.epochs} epochs: ray / local "
        f"{spread.text()} (Ray: {cpus} tasks of 1 CPU at a time)",
        f"Ray start-up {startup:.1f} s, once; overhead per task "
        f"{statistics.median(per_task) * 1e3:.1f} ms; object-store put of the training "
        f"tensor {put_s * 1e3:.0f} ms"],
        cpus=cpus, members=args.members, epochs=args.epochs, times_s=times,
        ratio_ray_over_local=ratio, startup_s=startup,
        overhead_per_task_s=statistics.median(per_task), put_s=put_s)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
