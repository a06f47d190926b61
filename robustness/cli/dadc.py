"""``robustness dadc``: rounds of dynamic adversarial data collection with a control arm."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from robustness.cli.common import add_seed_option, as_options
from robustness.core.argtypes import count_or_all, number, positive_int
from robustness.core.backend import add_backend_options

_FIELDS = ("data", "rounds", "per_round", "source", "eps", "initial", "retrain", "eval_attack",
           "fooling_label", "epochs", "finetune_epochs", "heldout_fraction", "seed")


def add_dadc_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness dadc`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "dadc", help="dynamic adversarial data collection: train on what fools the model, "
                     "round after round, against a control arm",
        description="Round 0 trains a starting model on --initial training images (or takes "
                    "--model CKPT); the rest of the training split is the pool. Each round, "
                    "--source proposes candidates against the current model from pool images "
                    "(never test images); those that really fool it join its training data "
                    "and it is retrained. A control arm gets exactly as many standard pool "
                    "images per round. Both are evaluated on clean test images, a fixed "
                    "adversarial set crafted on the round-0 model, a fresh attack, and the "
                    "held-out groups of a file: source. Resumable: re-run the same command "
                    "after a crash. Writes OUT/dadc.json, dadc.md, dadc.png, report.html and "
                    "every round's examples, checkpoints and reports.")
    p.add_argument("--data", default="mnist",
                   help="dataset: mnist, fashion-mnist, digits, idx:DIR or PATH.npz "
                        "(default: %(default)s)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="directory of the dataset's IDX files (fashion-mnist)")
    p.add_argument("--rounds", type=positive_int, default=None, help="rounds after round 0 "
                   "(default: 5; --quick: 2)")
    p.add_argument("--per-round", type=positive_int, default=None,
                   help="examples each arm adds per round (default: 400; --quick: 150)")
    p.add_argument("--source", default=None,
                   help="fgsm, pgd, genetic or any attack spec ('pgd(steps=40)'); fooling "
                        "(unbounded fooling images); or file:PATH.npz (collected examples: "
                        "x, y, optional group and classes) (default: pgd)")
    p.add_argument("--eps", type=number, default=None,
                   help="budget of a bounded source and of the fixed and fresh evaluation "
                        "attacks, e.g. 0.3")
    p.add_argument("--initial", type=positive_int, default=None,
                   help="training images of round 0; the rest is the pool (default: a quarter "
                        "of the training split; --quick: 800)")
    p.add_argument("--model", default=None,
                   help="start from this checkpoint (or run directory) instead of training "
                        "round 0")
    p.add_argument("--arch", default=None,
                   help="architecture trained from scratch: convnet, lenet, mlp (default: "
                        "convnet for images of at least 28x28, else mlp)")
    p.add_argument("--retrain", choices=("finetune", "scratch"), default=None,
                   help="finetune the current model on its whole training set, or train a "
                        "fresh one each round (default: finetune)")
    p.add_argument("--eval-attack", default=None,
                   help="attack of the fixed and fresh sets (default: the source when it is a "
                        "bounded attack, else pgd)")
    p.add_argument("--fooling-label", default=None,
                   help="how unbounded fooling images are trained: none (default: measured, "
                        "never trained on) or class:K (a class meaning 'none of these')")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs of round 0 and of --retrain scratch (default: 6; --quick: 4)")
    p.add_argument("--finetune-epochs", type=positive_int, default=None,
                   help="epochs of each fine-tuning round (default: 8; --quick: 2)")
    p.add_argument("--n-eval", type=count_or_all, default=argparse.SUPPRESS,
                   help="test images evaluated per round, or 'all' (default: 1000; --quick: "
                        "300)")
    p.add_argument("--heldout-fraction", type=number, default=None,
                   help="file: sources: fraction of contributor groups held out as a test "
                        "set (default: 0.3)")
    p.add_argument("--quick", action="store_true",
                   help="a small preset (2 rounds of 150, 800 initial, 300 test images)")
    add_seed_option(p, "the split, the pool order, the attacks and training")
    add_backend_options(p, "each round's candidate attacks and evaluation attacks")
    p.add_argument("--out", required=True, type=Path,
                   help="run directory; an earlier run of the same configuration there is "
                        "resumed, another configuration's is refused")
    return p


def cmd_dadc(args: argparse.Namespace) -> int:
    """``robustness dadc``: runs, or resumes, into ``--out``."""
    from reports.page import write_run_page
    from robustness.core.backend import backend_from_args
    from robustness.core.io import check_output_dir
    from robustness.dadc import DadcConfig, run_dadc

    check_output_dir(args.out, overwrite=True)  # a file or unwritable place: refused now
    given = {k: getattr(args, k) for k in _FIELDS if getattr(args, k) is not None}
    if args.model is not None:
        given["start_model"] = args.model
    if args.arch is not None:
        given["model"] = args.arch
    if args.data_root is not None:
        given["data_root"] = str(args.data_root)
    if hasattr(args, "n_eval"):  # given on the command line ('all' is None)
        given["n_eval"] = args.n_eval
    with as_options("run_dadc", "robustness dadc", {*vars(args), "n_eval"},
                    renames={"start_model": "--model", "model": "--arch",
                             "source": "--source"}):
        cfg = DadcConfig.quick(**given) if args.quick else DadcConfig(**given)

        def echo(line: str) -> None:
            print(line, flush=True)

        backend = backend_from_args(args, "dadc")
        try:
            result = run_dadc(cfg, args.out, echo=echo, progress=sys.stderr.isatty(),
                              backend=backend)
        finally:
            backend.close()
    write_run_page(args.out)
    print(f"Wrote {args.out}/dadc.json, dadc.md, dadc.png and report.html in "
          f"{result['seconds'] / 60:.1f} min.")
    return 0
