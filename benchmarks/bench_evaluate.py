"""How long does a whole evaluation take: 1,000 images, FGSM, PGD and the genetic attack, 3 eps?

Run as ``python benchmarks/bench_evaluate.py [--full] [--out runs/bench/evaluate.json]``
(3-5 minutes on 2 cores; ``--full`` adds the evaluation without the cascade, which takes
longer). The reference ConvNet is trained 10 epochs on the `mnist` subset (not timed),
then ``evaluate(model, test split, ["fgsm", "pgd", "genetic"], [0.1, 0.2, 0.3],
cascade=True)`` is timed, sanity checks included: each attack runs only on the samples
the earlier ones left robust (AutoAttack's cascade). Target (issue 16): under 5 minutes.

With ``--full`` the same evaluation runs without the cascade too (every attack on every
sample), and the two worst cases are compared per eps: the cascade must not be weaker.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from robustness.bench import Target, at_most, machine_line, print_targets, write_record
from robustness.data import load_dataset
from robustness.evaluation import evaluate
from robustness.models import build_model
from robustness.train import train

ATTACKS = ["fgsm", "pgd", "genetic"]
EPS = [0.1, 0.2, 0.3]
TARGET_S = 300.0


def timed(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
          cascade: bool) -> tuple[float, Any]:
    """Seconds of one evaluate() call, and its report."""
    start = time.perf_counter()
    report = evaluate(model, (x, y), ATTACKS, EPS, cascade=cascade)
    return time.perf_counter() - start, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="test images (default: %(default)s)")
    parser.add_argument("--full", action="store_true",
                        help="also time the evaluation without the cascade")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/evaluate.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    print(machine_line())
    data = load_dataset("mnist")
    if args.n > data.x_test.shape[0]:
        parser.error(f"--n must be at most {data.x_test.shape[0]} (the mnist test split); "
                     f"got {args.n}")
    model = build_model("convnet", data.input_shape, data.num_classes, seed=0)
    train(model, data.x_train, data.y_train, epochs=10, seed=0, progress=False)
    model.eval()
    x, y = data.x_test[:args.n], data.y_test[:args.n]

    seconds, report = timed(model, x, y, cascade=True)
    print(f"\nevaluate({args.n} images, {ATTACKS}, eps {EPS}, cascade=True): {seconds:.0f} s, "
          f"clean {report.clean_accuracy:.3f}")
    rows = []
    for r in report.results:
        rows.append({"row": r.label, "eps": r.eps, "robust_accuracy": r.robust_accuracy,
                     "n_attacked": r.n_attacked, "seconds": r.seconds, "queries": r.queries})
        print(f"  {r.label:<40} eps {r.eps:g}: robust {r.robust_accuracy:.3f}, attacked "
              f"{r.n_attacked:>4}, {r.seconds:6.1f} s")
    worst = {w.eps: w.robust_accuracy for w in report.worst_case}
    by_attack: dict[str, float] = {}
    for r in report.results:  # r.attack: the attack alone, without the cascade mark
        by_attack[r.attack] = by_attack.get(r.attack, 0.0) + r.seconds
    where = ", ".join(f"{name} {sec:.0f} s" for name, sec in by_attack.items())
    genetic = [r for r in report.results if r.attack == "genetic"]
    attacked = sum(r.n_attacked for r in genetic)
    targets: list[Target] = [at_most(
        f"evaluate, {args.n} images, fgsm+pgd+genetic at 3 eps, cascade", seconds, TARGET_S,
        unit=" s", missed_because=f"attacks {where}: the genetic attack's {attacked} "
        "images (what PGD left robust, over the 3 eps) keep their generations while their "
        "fitness, extrapolated at its gain per generation since the first, could still fool "
        "the model")]
    summary = ["worst case " + ", ".join(f"eps {e:g}: {a:.3f}" for e, a in worst.items())]
    full: dict[str, Any] = {}
    if args.full:
        full_seconds, full_report = timed(model, x, y, cascade=False)
        full_worst = {w.eps: w.robust_accuracy for w in full_report.worst_case}
        print(f"\nwithout the cascade: {full_seconds:.0f} s; worst case "
              + ", ".join(f"eps {e:g}: {a:.3f}" for e, a in full_worst.items()))
        full = {"seconds": full_seconds, "worst_case": full_worst}
        summary.append(f"without the cascade {full_seconds:.0f} s "
                       f"({seconds / full_seconds:.2f} x); worst case "
                       + ", ".join(f"eps {e:g}: {a:.3f}" for e, a in full_worst.items()))
        # One sample may differ: batch composition changes float rounding (tested bound).
        targets.append(at_most("cascade worst case - full worst case, largest over eps",
                               max(worst[e] - full_worst[e] for e in EPS), 1 / args.n))
    print_targets(targets)
    write_record(args.out, "evaluate", targets, summary=summary, n=args.n, attacks=ATTACKS,
                 eps=EPS, seconds=seconds, clean_accuracy=report.clean_accuracy, rows=rows,
                 worst_case=worst, full=full)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
