"""How fast are the attacks, relative to the cost of the model itself?

Run as ``python benchmarks/bench_attacks.py [--out runs/bench/attacks.json]`` (a few
minutes on 2 cores). On the reference ConvNet, briefly trained, with a batch of
256 MNIST test images, it measures in one process:

* the floor: one forward + backward pass w.r.t. the input (cross-entropy loss);
* PGD-10 (L-inf, eps 0.3, step 0.03) for ours, torchattacks, foolbox and, if it is
  installed, ART; ratio = time / (10 x floor);
* FGSM (eps 0.3); ratio = time / floor;
* our genetic attack against foolbox's GenAttack (targeted, eps 0.3) on 50 images
  the model classifies correctly: success rate, median queries, seconds.

Times are medians over repeats after a warm-up, timed round-robin together with
the floor so that load changes on a shared machine affect all rows alike. Our
template adds one verification forward pass after the attack (success is
re-evaluated, never trusted); the table shows ours both with it
(``attack(model, x, y)``) and without it (``PGD._run``). foolbox also re-runs the
model once to report success; torchattacks and ART do not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import cpu_features, machine_line
from torch import nn
from torch.nn import functional as F

from attacks.adapters import FoolboxAttack, QueryCounter, TorchattacksAttack
from attacks.base import Attack
from attacks.gradient import FGSM, PGD
from robustness.data import load_dataset
from robustness.models import build_model
from robustness.train import train

EPS = 0.3
STEP = 0.03
STEPS = 10
BATCH = 256


@dataclass
class Row:
    """One line of a result table."""

    library: str
    seconds: float
    ratio: float | None = None
    note: str = ""


def interleaved_medians(fns: dict[str, Callable[[], object]], *,
                        repeats: int) -> dict[str, float]:
    """Median wall time of each function after one warm-up call each.

    The functions are timed round-robin, one call each per round, so that a change of
    load on a shared machine hits all of them alike instead of whichever ran then.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def floor_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One forward + backward w.r.t. the input: (N, C, H, W) -> gradient (N, C, H, W)."""
    xa = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
    return grad


def gradient_rows(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  repeats: int) -> tuple[float, list[Row]]:
    """Time ``kind`` (``"pgd"`` or ``"fgsm"``) for every library against the floor.

    Returns the floor (seconds of one forward + backward) and one row per library,
    with ratio = time / (steps x floor). The floor is timed in the same rounds as the
    attacks, as ``steps`` consecutive passes.
    """
    import foolbox as fb
    import torchattacks

    steps = STEPS if kind == "pgd" else 1
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
    if kind == "pgd":
        attack: Attack = PGD(eps=EPS, steps=STEPS, step_size=STEP)
        ta: Any = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS)
        fa: Any = fb.attacks.LinfPGD(steps=STEPS, abs_stepsize=STEP)
        ta_adapter: Attack = TorchattacksAttack("PGD", eps=EPS, alpha=STEP, steps=STEPS)
        fb_adapter: Attack = FoolboxAttack("LinfPGD", eps=EPS, abs_stepsize=STEP, steps=STEPS)
    else:
        attack = FGSM(eps=EPS)
        ta = torchattacks.FGSM(model, eps=EPS)
        fa = fb.attacks.FGSM()
        ta_adapter = TorchattacksAttack("FGSM", eps=EPS)
        fb_adapter = FoolboxAttack("FGSM", eps=EPS)

    def floor() -> None:
        for _ in range(steps):
            floor_step(model, x, y)

    loop = f"{type(attack).__name__}._run only"
    fns: dict[str, Callable[[], object]] = {
        "floor": floor,
        "ours (incl. verification)": partial(attack, model, x, y),
        "ours (attack loop)": partial(attack._run, model, x, y, None),
        "torchattacks": partial(ta, x, y),
        "foolbox": partial(fa, fmodel, x, y, epsilons=EPS),
        "torchattacks via adapter": partial(ta_adapter, model, x, y),
        "foolbox via adapter": partial(fb_adapter, model, x, y),
    }
    notes = {
        "ours (incl. verification)": "+1 forward to re-evaluate success",
        "ours (attack loop)": loop,
        "foolbox": "+1 forward for its own success check",
        "torchattacks via adapter": "our template + query counting",
        "foolbox via adapter": "our template + query counting",
        "ART": "numpy in and out",
    }
    art = art_pgd(model, x, y) if kind == "pgd" else None
    if art is not None:
        fns["ART"] = art
    medians = interleaved_medians(fns, repeats=repeats)
    base = medians.pop("floor")
    rows = [Row(name, seconds, seconds / base, notes.get(name, ""))
            for name, seconds in medians.items()]
    return base / steps, rows


def art_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object] | None:
    """ART's ProjectedGradientDescent at the same settings, or None if ART is not installed."""
    if importlib.util.find_spec("art") is None:
        return None
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(),
                                   input_shape=tuple(x.shape[1:]), nb_classes=10,
                                   clip_values=(0.0, 1.0))
    attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=EPS, eps_step=STEP,
                                      max_iter=STEPS, num_random_init=1, batch_size=x.shape[0],
                                      verbose=False)
    x_np, y_np = x.numpy(), y.numpy()
    return lambda: attack.generate(x=x_np, y=y_np)


def genetic_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generations: int) -> list[dict[str, Any]] | None:
    """Our genetic attack vs foolbox's GenAttack, both targeted at ``(y + 1) mod 10``."""
    if importlib.util.find_spec("attacks.genetic") is None:
        return None
    import foolbox as fb

    from attacks.genetic import GeneticAttack

    target = (y + 1) % 10
    results = []

    batch = GeneticAttack(eps=EPS, population=10, generations=generations, targeted=True)(
        model, x, y, target=target)
    results.append(_genetic_summary("ours (GeneticAttack)", model, x, batch.x_adv, target,
                                    batch.queries, batch.wall_time_s,
                                    "per-sample queries; a sample stops when it succeeds"))

    counter = QueryCounter(model)
    fmodel = fb.PyTorchModel(counter, bounds=(0.0, 1.0), device=x.device)
    criterion = fb.criteria.TargetedMisclassification(target)
    np.random.seed(0)  # noqa: NPY002 - GenAttack samples parents from the global RNG
    torch.manual_seed(0)
    start = time.perf_counter()
    _, x_adv, _ = fb.attacks.GenAttack(steps=generations, population=10)(
        fmodel, x, criterion, epsilons=EPS)
    seconds = time.perf_counter() - start
    queries, _ = counter.per_sample(x.shape[0])
    results.append(_genetic_summary("foolbox GenAttack", model, x, x_adv, target, queries,
                                    seconds, "scores every sample until all succeed; "
                                    "queries = model inputs / samples"))
    return results


def _genetic_summary(name: str, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                     target: torch.Tensor, queries: torch.Tensor, seconds: float,
                     note: str) -> dict[str, Any]:
    with torch.no_grad():
        hit = model(x_adv).argmax(1) == target
    linf = float((x_adv - x).abs().amax())
    return {"library": name, "success_rate": float(hit.float().mean()),
            "median_queries": float(queries.double().median()),
            "median_queries_successful": float(queries[hit].double().median()) if hit.any()
            else None,
            "seconds": seconds, "max_linf": linf, "note": note}


def print_table(title: str, rows: list[Row], unit: str) -> None:
    print(f"\n{title}")
    print(f"  {'library':<28} {'seconds':>9} {unit:>12}  note")
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        print(f"  {r.library:<28} {r.seconds:>9.4f} {ratio:>12}  {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/attacks.json"),
                        help="where to write the JSON results (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats per attack after one warm-up (default: %(default)s)")
    parser.add_argument("--generations", type=int, default=500,
                        help="generation cap for both genetic attacks (default: %(default)s)")
    parser.add_argument("--train-epochs", type=int, default=3,
                        help="epochs of quick training of the ConvNet (default: %(default)s)")
    args = parser.parse_args(argv)

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    print(machine_line())

    data = load_dataset("mnist")
    model = build_model("convnet", data.input_shape, data.num_classes, seed=0)
    train(model, data.x_train, data.y_train, epochs=args.train_epochs, seed=0, progress=False)
    model.eval()
    x, y = data.x_test[:BATCH], data.y_test[:BATCH]
    with torch.no_grad():
        correct = model(data.x_test).argmax(1) == data.y_test
    print(f"ConvNet trained {args.train_epochs} epochs: clean accuracy "
          f"{float(correct.float().mean()):.3f}; batch {tuple(x.shape)}")

    floor, pgd = gradient_rows("pgd", model, x, y, args.repeats)
    print(f"floor (one forward + backward w.r.t. the input): {floor * 1e3:.2f} ms")
    print_table(f"PGD-{STEPS} (L-inf, eps {EPS}, step {STEP})", pgd, f"/ ({STEPS} x floor)")
    fgsm_floor, fgsm = gradient_rows("fgsm", model, x, y, 4 * args.repeats)
    print(f"\nfloor, timed again with FGSM: {fgsm_floor * 1e3:.2f} ms")
    print_table(f"FGSM (eps {EPS})", fgsm, "/ floor")
    if importlib.util.find_spec("art") is None:
        print("\nART: not installed, skipped")

    genetic_x, genetic_y = data.x_test[correct][:50], data.y_test[correct][:50]
    genetic = genetic_rows(model, genetic_x, genetic_y, args.generations)
    if genetic is None:
        print("\ngenetic: attacks.genetic not importable, skipped")
    else:
        print(f"\nGenetic, targeted at (y + 1) mod 10, eps {EPS}, population 10, "
              f"<= {args.generations} generations, {genetic_x.shape[0]} images")
        print(f"  {'library':<22} {'success':>8} {'med. queries':>13} {'(successes)':>12} "
              f"{'seconds':>8}  note")
        for g in genetic:
            won = g["median_queries_successful"]
            print(f"  {g['library']:<22} {g['success_rate']:>8.2f} {g['median_queries']:>13.0f} "
                  f"{'-' if won is None else f'{won:.0f}':>12} {g['seconds']:>8.1f}  {g['note']}")

    results = {
        "torch": torch.__version__, "threads": threads, "load_average": load, "batch": BATCH,
        "cpu": cpu_features(),
        "eps": EPS, "step_size": STEP, "steps": STEPS, "floor_s": floor,
        "fgsm_floor_s": fgsm_floor,
        "pgd10": [asdict(r) for r in pgd], "fgsm": [asdict(r) for r in fgsm],
        "art": "skipped (not installed)" if importlib.util.find_spec("art") is None else "run",
        "genetic": genetic,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
