"""How fast are the attacks, relative to the cost of the model itself and to the peers?

Run as ``python benchmarks/bench_attacks.py [--out runs/bench/attacks.json]`` (about 10
minutes on 2 cores). On the reference ConvNet, briefly trained, in one process:

* the floor: one forward + backward pass w.r.t. the input (cross-entropy loss), of the
  model as given and with channels_last weights;
* PGD-10 (L-inf, eps 0.3, step 0.03) for ours, torchattacks, foolbox and, if it is
  installed, ART, at batch 32 and 256; ratio = time / (10 x floor as given);
* FGSM (eps 0.3); ratio = time / floor;
* our genetic attack against foolbox's GenAttack, both targeted at ``(y + 1) mod 10`` at
  eps 0.3 on 50 images the model classifies correctly, with the same generation cap:
  success, median queries, total model inputs; ours untargeted; and targeted PGD (200
  steps, 5 restarts) as the white-box bound on what a targeted attack can reach there.

Times are medians over rounds after a warm-up, timed round-robin together with the floor
(``robustness.bench.interleaved_times``), and each ratio's spread is over those rounds;
batch 32 gets 4x the rounds of batch 256, since its calls are short and noisier.
Our full call adds a shape check, the layout probe and one verification forward pass
on the samples no step scored (success is re-evaluated, not trusted, except where a
step's own logits scored those very pixels); ``ours (attack loop)`` is ``_run`` alone.
foolbox also re-runs the model once to report success; torchattacks and ART do not. The
script ends with the issue-16 targets, met or missed, and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks.adapters import QueryCounter
from attacks.genetic import GeneticAttack
from attacks.gradient import PGD
from robustness.bench import (
    FGSM_NOTE,
    GENETIC_SUCCESS_TARGET,
    PGD_EPS,
    PGD_STEP,
    PGD_STEPS,
    Target,
    at_least,
    at_most,
    genetic_summary,
    gradient_sections,
    machine_line,
    print_targets,
    write_record,
)
from robustness.data import load_dataset
from robustness.models import build_model
from robustness.train import train

EPS = PGD_EPS
PAPER_MEDIAN_QUERIES = 996  # GenAttack's MNIST figure: 100% success, median 996 queries
FEWER_CALLS_TARGET = 3.0  # >= 3x fewer model inputs than foolbox's GenAttack


def art_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object] | None:
    """ART's ProjectedGradientDescent at the same settings, or None if ART is not installed."""
    if importlib.util.find_spec("art") is None:
        return None
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(),
                                   input_shape=tuple(x.shape[1:]), nb_classes=10,
                                   clip_values=(0.0, 1.0))
    attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=EPS, eps_step=PGD_STEP,
                                      max_iter=PGD_STEPS, num_random_init=1, batch_size=x.shape[0],
                                      verbose=False)
    x_np, y_np = x.numpy(), y.numpy()
    return lambda: attack.generate(x=x_np, y=y_np)



def genetic_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generations: int) -> list[dict[str, Any]]:
    """Ours vs foolbox's GenAttack, targeted at ``(y + 1) mod 10``, same generation cap."""
    import foolbox as fb

    target = (y + 1) % 10
    ours = GeneticAttack(eps=EPS, population=10, generations=generations, targeted=True)
    counter = QueryCounter(model)
    batch = ours(counter, x, y, target=target)
    rows = [_genetic_row("ours (GeneticAttack)", model, x, batch.x_adv, target, batch.queries,
                         batch.wall_time_s, counter,
                         "per-sample queries; a sample stops when it succeeds")]

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
    rows.append(_genetic_row("foolbox GenAttack", model, x, x_adv, target, queries, seconds,
                             counter, "scores every sample until all succeed; "
                             "queries = model inputs / samples"))
    return rows


def _genetic_row(name: str, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                 target: torch.Tensor, queries: torch.Tensor, seconds: float,
                 counter: QueryCounter, note: str) -> dict[str, Any]:
    """One library's row; model inputs and calls as the counter saw them (all overhead in)."""
    with torch.no_grad():
        hit = model(x_adv).argmax(1) == target
    return {"library": name, "success_rate": float(hit.float().mean()),
            "median_queries": float(queries.double().median()),
            "median_queries_successful": float(queries[hit].double().median()) if hit.any()
            else None,
            "model_inputs": counter.rows, "model_calls": counter.calls,
            "queries_on_failures": int(queries[~hit].sum()),
            "seconds": seconds, "max_linf": float((x_adv - x).abs().amax()), "note": note}


def pgd_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
              targeted: bool) -> torch.Tensor:
    """(B,) bool: where a strong white-box attack (PGD-200, 5 restarts) at eps 0.3,
    targeted at ``(y + 1) mod 10`` or not, succeeds: about as far as any attack gets on
    these images."""
    attack = PGD(eps=EPS, steps=200, step_size=0.01, restarts=5, targeted=targeted,
                 early_stop=True)
    target = (y + 1) % 10 if targeted else None
    return attack(model, x, y, target=target).success


def unreached(y: torch.Tensor, reached: torch.Tensor) -> str:
    """The labels of the images the white-box bound misses, e.g. ``"7 of label 0"``."""
    counts = collections.Counter(y[~reached].tolist())
    return ", ".join(f"{k} of label {label}" for label, k in sorted(counts.items())) or "none"


def genetic_targets(rows: list[dict[str, Any]], untargeted: dict[str, Any],
                    bound: float, untargeted_bound: float, misses: str = "") -> list[Target]:
    """The genetic attack's issue-16 targets; ``misses`` names the images the targeted
    white-box bound does not reach (:func:`unreached`)."""
    ours, theirs = rows
    n = untargeted["n"]
    missed = n - round(untargeted["success_rate"] * n)
    why = (f"targeted PGD-200 with 5 restarts reaches only {bound:.0%} of these images at "
           f"eps {EPS}: the rest have no targeted example a strong white-box attack finds, "
           f"on this briefly trained model (the paper's figure is on its own MNIST model)"
           + (f"; it misses {misses} (target label + 1)" if misses else ""))
    fewer = theirs["model_inputs"] / max(ours["model_inputs"], 1)
    won = ours["median_queries_successful"]
    return [
        at_least("genetic targeted success", ours["success_rate"], GENETIC_SUCCESS_TARGET,
                 note=f"white-box bound {bound:.2f}",
                 missed_because=why if bound < GENETIC_SUCCESS_TARGET else ""),
        at_most("genetic targeted median queries among successes",
                float("inf") if won is None else won, PAPER_MEDIAN_QUERIES),
        at_least("genetic untargeted success", untargeted["success_rate"],
                 GENETIC_SUCCESS_TARGET, note=f"white-box bound {untargeted_bound:.2f}",
                 missed_because=f"{missed} of {n} images not fooled within "
                                f"{untargeted['generations']} generations; a score-based "
                                f"search without gradients falls short of PGD there"),
        at_least("genetic model inputs, foolbox GenAttack / ours", fewer, FEWER_CALLS_TARGET,
                 note=f"success ours {ours['success_rate']:.2f}, foolbox "
                      f"{theirs['success_rate']:.2f}",
                 missed_because=f"the images ours does not fool take "
                 f"{ours['queries_on_failures'] / max(ours['model_inputs'], 1):.0%} of its "
                 "inputs: give_up keeps an image while its fitness, extrapolated at its gain "
                 "per generation since the first eighth of the run, could still fool the "
                 "model (extrapolating the last window alone was cheaper but gave up on "
                 "images the whole budget fools)"),
        at_least("genetic targeted success, ours - foolbox GenAttack",
                 ours["success_rate"] - theirs["success_rate"], 0.0),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/attacks.json"),
                        help="where to write the JSON results (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed rounds per section after one warm-up, times 128 / batch "
                        "for a batch below 128 (default: %(default)s)")
    parser.add_argument("--generations", type=int, default=500,
                        help="generation cap for both genetic attacks (default: %(default)s)")
    parser.add_argument("--train-epochs", type=int, default=3,
                        help="epochs of quick training of the ConvNet (default: %(default)s)")
    args = parser.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    print(machine_line())
    data = load_dataset("mnist")
    model = build_model("convnet", data.input_shape, data.num_classes, seed=0)
    train(model, data.x_train, data.y_train, epochs=args.train_epochs, seed=0, progress=False)
    model.eval()
    with torch.no_grad():
        correct = model(data.x_test).argmax(1) == data.y_test
    print(f"ConvNet trained {args.train_epochs} epochs: clean accuracy "
          f"{float(correct.float().mean()):.3f}")

    def art(x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], object]]:
        fn = art_pgd(model, x, y)
        return {"ART": fn} if fn is not None else {}

    targets, sections = gradient_sections(model, data.x_test, data.y_test, batches=(32, 256),
                                          repeats=args.repeats, extra=art)
    if importlib.util.find_spec("art") is None:
        print("\nART: not installed, skipped")

    gx, gy = data.x_test[correct][:50], data.y_test[correct][:50]
    rows = genetic_rows(model, gx, gy, args.generations)
    untargeted = genetic_summary(model, gx, gy, targeted=False, generations=args.generations)
    reached = pgd_bound(model, gx, gy, targeted=True)
    bound = float(reached.float().mean())
    untargeted_bound = float(pgd_bound(model, gx, gy, targeted=False).float().mean())
    misses = unreached(gy, reached)
    print(f"\nGenetic, targeted at (y + 1) mod 10, eps {EPS}, population 10, "
          f"<= {args.generations} generations, {gx.shape[0]} images")
    print(f"  {'library':<22} {'success':>8} {'med. queries':>13} {'(successes)':>12} "
          f"{'inputs':>9} {'seconds':>8}  note")
    for g in rows:
        won = g["median_queries_successful"]
        print(f"  {g['library']:<22} {g['success_rate']:>8.2f} {g['median_queries']:>13.0f} "
              f"{'-' if won is None else f'{won:.0f}':>12} {g['model_inputs']:>9} "
              f"{g['seconds']:>8.1f}  {g['note']}")
    print(f"  ours, untargeted: success {untargeted['success_rate']:.2f}, median queries "
          f"{untargeted['median_queries']:.0f}")
    print(f"  PGD-200 x 5 restarts (white-box bound): targeted success {bound:.2f}, "
          f"untargeted {untargeted_bound:.2f}; targeted, it misses {misses}")
    targets += genetic_targets(rows, untargeted, bound, untargeted_bound, misses)

    print_targets(targets)
    write_record(args.out, "attacks", targets, summary=[FGSM_NOTE], gradient=sections,
                 genetic={"targeted": rows, "untargeted": untargeted,
                          "targeted_pgd_bound": bound, "untargeted_pgd_bound": untargeted_bound,
                          "generations": args.generations},
                 art="run" if importlib.util.find_spec("art") else "skipped (not installed)",
                 model={"name": "convnet", "data": "mnist", "epochs": args.train_epochs,
                        "clean_accuracy": float(correct.float().mean())})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
