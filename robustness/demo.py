"""The demo: train the reference ConvNet on `mnist`, attack it, print and save the figures.

Everything is real: a model trained from scratch in the run, attacked with our
FGSM and PGD (cross-checked against torchattacks' PGD at the same settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from attacks.gradient import PGD
from reports.figures import image_grid
from reports.markdown import demo_markdown, findings_markdown
from robustness.checkpoint import CheckpointMeta, save_checkpoint
from robustness.core.io import write_json, write_text
from robustness.core.provenance import library_versions
from robustness.core.text import markdown_table
from robustness.core.validation import MAX_ITERATIONS, check_float, check_int, invalid
from robustness.data import load_dataset
from robustness.evaluation import evaluate
from robustness.models import build_model
from robustness.train import accuracy, train

PGD_STEPS = 20
LABELS = {"fgsm": "FGSM", f"pgd(steps={PGD_STEPS})": f"PGD-{PGD_STEPS}"}  # as the table shows them


def _torchattacks_available() -> bool:
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        return False
    return True


def run_demo(out: str | Path, *, epochs: int = 10, eps: Sequence[float] = (0.1, 0.2, 0.3),
             n: int = 1000, seed: int = 0, progress: bool = True,
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
    n
        Number of test images to attack (the `mnist` test split has 1,000).
    seed
        Seeds the model initialisation, training and the attacks' random starts.
    echo
        Where progress lines go (``print`` by default).
    """
    owner = "demo"
    check_int(owner, "epochs", epochs, low=1, high=MAX_ITERATIONS)
    check_int(owner, "n", n, low=1)
    check_int(owner, "seed", seed, low=0)
    if not eps:
        raise invalid(owner, "eps", "a non-empty list of budgets", list(eps))
    # A zero budget attacks nothing: its "robust accuracy" would be clean accuracy.
    eps = [check_float(owner, "eps", e, low=0.0, high=1.0, low_open=True) for e in eps]
    out = Path(out)
    started = time.perf_counter()

    data = load_dataset("mnist", seed=seed)
    if n > len(data.x_test):  # never silently fewer
        raise invalid(owner, "n", f"at most {len(data.x_test)}, the test images of "
                      f"{data.name}", n)
    x, y = data.x_test[:n], data.y_test[:n]
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

    # Every number goes through evaluate(): CIs, the per-sample worst case, the checks.
    # The Dataset (its first n test images: x, y) so the report names the data it measured.
    report = evaluate(model, data, ["fgsm", f"pgd(steps={PGD_STEPS})"], eps, n=len(x),
                      seed=seed, echo=echo)
    rows = [(LABELS[r.attack], r) for r in report.results]
    if _torchattacks_available():
        # The cross-check: torchattacks' PGD with the same step size as ours, per eps.
        for e in eps:
            spec = ("torchattacks:PGD", {"steps": PGD_STEPS, "alpha": 2.5 * e / PGD_STEPS,
                                         "random_start": True})
            check = evaluate(model, data, [spec], [e], n=len(x), seed=seed, checks=False,
                             echo=echo)
            rows += [(f"torchattacks PGD-{PGD_STEPS}", r) for r in check.results]
    rows.sort(key=lambda row: row[1].eps)
    results = [{"attack": label, "eps": r.eps, "norm": r.norm, "threat_model": r.threat_model,
                "robust_accuracy": r.robust_accuracy, "ci_low": r.ci_low, "ci_high": r.ci_high,
                "success_rate": r.success_rate, "median_perturbation": r.median_perturbation,
                "seconds": r.seconds, "description": r.description} for label, r in rows]
    table = markdown_table(
        ["attack", "eps", "robust accuracy", "95% CI", "success rate", "median L-inf",
         "seconds"],
        [[r["attack"], r["eps"], r["robust_accuracy"], f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
          r["success_rate"], r["median_perturbation"], r["seconds"]] for r in results])
    summary = {
        "clean_accuracy": clean,
        "n_samples": len(x),
        "results": results,
        "worst_case": [asdict(w) for w in report.worst_case],
        "findings": [asdict(f) for f in report.findings],
        "report": report.to_dict(),
        "model": {"architecture": "convnet", "epochs": epochs, "train_seconds": train_s,
                  "history": history.to_dict()},
        "dataset": data.to_dict_meta(),
        "seed": seed,
        "versions": library_versions(),
        "seconds": time.perf_counter() - started,
    }
    write_json(out / "results.json", summary)
    write_text(out / "results.md", demo_markdown(report, table))
    # The grid shows PGD adversarials of the first ten images (re-crafted: the report
    # keeps outcomes, not images).
    examples = {f"{e:g}": PGD(eps=e, steps=PGD_STEPS, seed=seed)(model, x[:10], y[:10]).x_adv
                for e in eps}
    grid = torch.cat([x[:10], *examples.values()])
    titles = [f"clean {int(c)}" for c in y[:10]] + [
        f"eps {k}" for k in examples for _ in range(len(x[:10]))]
    image_grid(out / "examples.png", grid, titles, columns=10,
               suptitle="Clean test images and their PGD adversarials")
    echo("")
    echo(f"Clean accuracy: {clean:.3f} ({len(x)} images)")
    echo(table)
    echo("")
    echo("\n".join(findings_markdown(report)))
    return summary
