"""``robustness train``: train a reference model; writes OUT/model.safetensors and train.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.cli.common import (
    add_data_options,
    add_epochs_option,
    add_no_progress_option,
    add_out_option,
    add_seed_option,
    as_typed,
    load_data,
)
from robustness.core.argtypes import number, positive_int

if TYPE_CHECKING:
    from robustness.train import Adversary


def add_train_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness train`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "train", help="train a reference model and save a checkpoint",
        description="Train a reference model on a dataset; writes OUT/model.safetensors "
                    "(weights + metadata) and OUT/train.json (history, accuracy).")
    add_data_options(p, data_root_help="directory of the Fashion-MNIST IDX files (only with "
                                       "--data fashion-mnist; default "
                                       "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--model", default="convnet", choices=["convnet", "lenet", "mlp"],
                   help="architecture: 'convnet' (the original experiment's, needs >= 27x27 "
                        "images), 'lenet', 'mlp' (default: %(default)s)")
    add_epochs_option(p)
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="mini-batch size (default: %(default)s)")
    p.add_argument("--lr", type=number, default=1e-3,
                   help="Adam learning rate (default: %(default)s)")
    add_seed_option(p, "initialisation, shuffling, dropout and the data split")
    p.add_argument("--adversarial-eps", type=number, default=None, metavar="EPS",
                   help="adversarial training: mix FGSM examples at this L-inf eps into "
                        "every batch (50/50 loss, as in the original experiment)")
    add_out_option(p)
    add_no_progress_option(p)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    """``robustness train``: all-or-nothing into ``--out``."""
    from robustness.core.io import run_directory

    with run_directory(args.out, overwrite=args.overwrite) as out:
        return _train(args, out)


def _train(args: argparse.Namespace, out: Path) -> int:
    import time
    from dataclasses import replace

    from robustness.checkpoint import CheckpointMeta, meta_problem, save_checkpoint
    from robustness.core.io import write_json
    from robustness.core.provenance import library_versions
    from robustness.core.validation import check_float, invalid
    from robustness.models import build_model
    from robustness.train import accuracy, attack_hook, train

    data = load_data(args)
    adversary: Adversary | None = None
    if args.adversarial_eps is not None:
        from attacks.gradient import FGSM

        eps = check_float("robustness train", "--adversarial-eps", args.adversarial_eps,
                          low=0.0, high=1.0)
        adversary = attack_hook(FGSM(eps=eps))
    with as_typed(f"--model {args.model}", f"--data {args.data!r}"):
        model = build_model(args.model, data.input_shape, data.num_classes, seed=args.seed)
    meta = CheckpointMeta(architecture=args.model, input_shape=data.input_shape,
                          num_classes=data.num_classes, classes=data.classes, dataset=data.name,
                          seed=args.seed,
                          extra={"epochs": args.epochs, "adversarial_eps": args.adversarial_eps})
    problem = meta_problem(meta)  # known before training, not after it
    if problem:
        raise invalid("robustness train", "--data", "images and classes a checkpoint can "
                      "record", f"{args.data!r}: {problem}", raw=True)
    start = time.perf_counter()
    with as_typed(f"--epochs {args.epochs}", f"--batch-size {args.batch_size}",
                  f"--lr {args.lr:g}"):
        history = train(model, data.x_train, data.y_train, epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        adversary=adversary, progress=not args.no_progress,
                        description=args.model)
    seconds = time.perf_counter() - start
    acc = accuracy(model, data.x_test, data.y_test)
    meta = replace(meta, accuracy=acc)
    save_checkpoint(model, out / "model.safetensors", meta)
    write_json(out / "train.json", {
        "test_accuracy": acc, "train_seconds": seconds, "history": history.to_dict(),
        "model": args.model, "dataset": data.to_dict_meta(), "seed": args.seed,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "adversarial_eps": args.adversarial_eps, "versions": library_versions()})
    print(f"Trained {args.model} on {data.name} for {args.epochs} epochs in {seconds:.1f} s: "
          f"test accuracy {acc:.4f} ({len(data.x_test)} images).")
    print(f"Wrote {args.out / 'model.safetensors'} and {args.out / 'train.json'}")
    return 0
