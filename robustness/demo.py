"""The demo: train the reference ConvNet on `mnist`, attack it, print and save the figures.

Everything is real: a model trained from scratch in the run, attacked with our
FGSM and PGD (cross-checked against torchattacks' PGD at the same settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from attacks.base import Attack
from attacks.gradient import FGSM, PGD
from reports.figures import image_grid
from robustness.checkpoint import CheckpointMeta, save_checkpoint
from robustness.core.io import write_json, write_text
from robustness.core.provenance import library_versions
from robustness.core.text import markdown_table
from robustness.core.validation import check_float, check_int, invalid
from robustness.data import load_dataset
from robustness.models import build_model
from robustness.train import accuracy, train

PGD_STEPS = 20


def _torchattacks_pgd(eps: float, steps: int, step_size: float, seed: int) -> Attack | None:
    """torchattacks' PGD through our adapter, or None when torchattacks is not installed."""
    try:
        from attacks.adapters import TorchattacksAttack
    except ImportError:
        return None
    try:
        return TorchattacksAttack("PGD", eps=eps, alpha=step_size, steps=steps,
                                  random_start=True, seed=seed)
    except ImportError:
        return None


def run_demo(out: str | Path, *, epochs: int = 10, eps: Sequence[float] = (0.1, 0.2, 0.3),
             n_eval: int = 1000, seed: int = 0, progress: bool = True,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, attack, report. Writes ``model.safetensors``, ``results.json``, ``results.md``
    and ``examples.png`` to ``out`` and returns the results dictionary.

    Parameters
    ----------
    out
        Run directory (created if missing).
    epochs
        Training epochs for the ConvNet (10 reach ~0.96 test accuracy in ~15 s).
    eps
        L-inf budgets to attack at, each in [0, 1].
    n_eval
        Number of test images to attack (the `mnist` test split has 1,000).
    seed
        Seeds the model initialisation, training and the attacks' random starts.
    echo
        Where progress lines go (``print`` by default).
    """
    owner = "demo"
    check_int(owner, "epochs", epochs, low=1)
    check_int(owner, "n_eval", n_eval, low=1)
    check_int(owner, "seed", seed, low=0)
    if not eps:
        raise invalid(owner, "eps", "a non-empty list of budgets", list(eps))
    eps = [check_float(owner, "eps", e, low=0.0, high=1.0) for e in eps]
    out = Path(out)
    started = time.perf_counter()

    data = load_dataset("mnist", seed=seed)
    x, y = data.x_test[:n_eval], data.y_test[:n_eval]
    echo(f"Data: {data.name}, {len(data.x_train)} train / {len(data.x_test)} test images "
         f"({data.split}); attacking {len(x)} test images.")
    model = build_model("convnet", data.input_shape, data.num_classes, seed=seed)
    t0 = time.perf_counter()
    history = train(model, data.x_train, data.y_train, epochs=epochs, seed=seed,
                    progress=progress, description="ConvNet")
    train_s = time.perf_counter() - t0
    model.eval()
    clean = accuracy(model, x, y)
    echo(f"Trained the reference ConvNet for {epochs} epochs in {train_s:.1f} s: "
         f"clean test accuracy {clean:.3f}.")
    save_checkpoint(model, out / "model.safetensors", CheckpointMeta(
        architecture="convnet", input_shape=data.input_shape, num_classes=data.num_classes,
        classes=data.classes, dataset=data.name, seed=seed, accuracy=clean))

    results: list[dict[str, Any]] = []
    examples: dict[str, torch.Tensor] = {}
    for e in eps:
        step = 2.5 * e / PGD_STEPS
        attacks: list[tuple[str, Attack | None]] = [
            ("FGSM", FGSM(eps=e, seed=seed)),
            (f"PGD-{PGD_STEPS}", PGD(eps=e, steps=PGD_STEPS, step_size=step, seed=seed)),
            (f"torchattacks PGD-{PGD_STEPS}", _torchattacks_pgd(e, PGD_STEPS, step, seed)),
        ]
        for label, attack in attacks:
            if attack is None:
                continue
            batch = attack(model, x, y)
            row = {
                "attack": label,
                "eps": e,
                "norm": batch.norm,
                "robust_accuracy": batch.robust_accuracy(y),
                "success_rate": batch.success_rate,
                "median_perturbation": float(batch.perturbation_norm.median()),
                "seconds": batch.wall_time_s,
                "description": batch.attack,
            }
            results.append(row)
            echo(f"  eps {e:.2f}  {label:<24} robust accuracy {row['robust_accuracy']:.3f}"
                 f"  ({row['seconds']:.1f} s)")
            if label.startswith("PGD"):
                examples[f"{e:g}"] = batch.x_adv[:10]

    table = markdown_table(
        ["attack", "eps", "robust accuracy", "success rate", "median L-inf", "seconds"],
        [[r["attack"], r["eps"], r["robust_accuracy"], r["success_rate"],
          r["median_perturbation"], r["seconds"]] for r in results])
    summary = {
        "clean_accuracy": clean,
        "n_samples": len(x),
        "results": results,
        "model": {"architecture": "convnet", "epochs": epochs, "train_seconds": train_s,
                  "history": history.to_dict()},
        "dataset": data.to_dict_meta(),
        "seed": seed,
        "versions": library_versions(),
        "seconds": time.perf_counter() - started,
    }
    write_json(out / "results.json", summary)
    write_text(out / "results.md", f"# Demo: reference ConvNet on mnist\n\nClean accuracy "
               f"{clean:.3f} on {len(x)} test images.\n\n{table}\n")
    if examples:
        grid = torch.cat([x[:10], *examples.values()])
        titles = [f"clean {int(c)}" for c in y[:10]] + [
            f"eps {k}" for k in examples for _ in range(10)]
        image_grid(out / "examples.png", grid, titles, columns=10,
                   suptitle="Clean test images and their PGD adversarials")
    echo("")
    echo(f"Clean accuracy: {clean:.3f} ({len(x)} images)")
    echo(table)
    echo(f"\nWrote {out / 'results.json'}, results.md, model.safetensors, examples.png "
         f"in {summary['seconds']:.0f} s.")
    return summary
