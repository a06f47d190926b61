"""``robustness demo``: train the reference ConvNet on mnist and attack it (about 1-2 min)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustness.cli.common import (
    OUT_HELP,
    add_epochs_option,
    add_no_progress_option,
    add_overwrite_option,
    add_seed_option,
)
from robustness.core.argtypes import budget_list, positive_int


def add_demo_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness demo`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="train the reference ConvNet on mnist and attack it (about 1-2 min)",
        description="Train the reference ConvNet on the mnist subset, attack it with FGSM and "
                    "PGD at several eps, print a table and write results.json, results.md, "
                    "model.safetensors and examples.png to OUT.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help=f"{OUT_HELP} (default: %(default)s)")
    add_overwrite_option(p)
    add_epochs_option(p)
    p.add_argument("--eps", type=budget_list, default=[0.1, 0.2, 0.3],
                   help="comma-separated L-inf budgets (default: 0.1,0.2,0.3)")
    p.add_argument("--n", "--n-eval", dest="n", type=positive_int, default=1000,
                   help="test images to attack (default: %(default)s; --n-eval is the old "
                        "spelling)")
    add_seed_option(p, "everything random")
    add_no_progress_option(p)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    """``robustness demo``: all-or-nothing into ``--out``."""
    from robustness.cli.common import as_options
    from robustness.core.io import run_directory
    from robustness.demo import run_demo

    with run_directory(args.out, overwrite=args.overwrite) as out, \
            as_options("demo", "robustness demo", vars(args)):
        summary = run_demo(out, epochs=args.epochs, eps=args.eps, n=args.n, seed=args.seed,
                           progress=not args.no_progress)
    print(f"\nWrote {args.out / 'results.json'}, results.md, model.safetensors, examples.png "
          f"in {summary['seconds']:.0f} s.")
    return 0
