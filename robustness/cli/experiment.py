"""``robustness experiment ensembles``: the original ensemble experiment, re-measured.

Writes ``OUT/results.json`` and ``OUT/results.md`` (tables with the published numbers
beside ours, and a one-line "max beats mean" verdict per threat model), plus the
trained models and members, which a re-run with the same settings reuses.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from robustness.cli.common import DATA_HELP, add_seed_option
from robustness.core.argtypes import choice_list, int_list, positive_fraction, positive_int
from robustness.core.backend import add_backend_options

# = ensembles.sampling.PLANS, copied to keep `robustness --help` torch-free (tests check it).
SAMPLING_NAMES = ("bootstrap", "subsample", "uniform")

# Options the --quick preset sets unless given explicitly (see ExperimentConfig.quick).
_TUNABLE = ("members", "n", "n_adaptive", "n_genetic", "pgd_steps", "generations",
            "population", "epochs")

_ensemble_sizes = functools.partial(int_list, low=1,
                                    expected="ensemble sizes >= 1 such as 5,25,50")


def add_experiment_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness experiment ensembles`` on the sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "experiment", help="re-run a published experiment (ensembles)",
        description="Re-run a published experiment end to end and compare with its numbers.")
    which = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    e = which.add_parser(
        "ensembles", help="ensembles vs adversarial examples (Gölge 2017), corrected",
        description="Baseline ConvNet, FGSM adversarial training, and ensembles of N members "
                    "for each sampling plan (uniform, bootstrap, subsample) and aggregation "
                    "(mean, max, vote), under transfer FGSM from the baseline, adaptive "
                    "white-box PGD on the ensemble, and the genetic black-box attack. Writes "
                    "OUT/results.json and OUT/results.md; trained members are kept in OUT and "
                    "reused by a re-run (a killed run resumes).")
    e.add_argument("--data", default="mnist", help=DATA_HELP + " (default: %(default)s)")
    e.add_argument("--data-root", default=None, help="directory of the dataset files")
    e.add_argument("--members", type=_ensemble_sizes, default=None,
                   help="ensemble sizes, nested (default: 5,25,50; --quick: 2,5)")
    e.add_argument("--samplings", type=choice_list(SAMPLING_NAMES), default=None,
                   help="sampling plans (default: uniform,bootstrap,subsample)")
    e.add_argument("--eps", type=positive_fraction, default=0.2,
                   help="L-inf budget of FGSM, PGD and the genetic attack; 0.2 is the budget "
                        "of the original's saved adversarials (default: %(default)s)")
    e.add_argument("--train-eps", type=positive_fraction, default=0.3,
                   help="FGSM budget during adversarial training, as in the original "
                        "(default: %(default)s)")
    e.add_argument("--genetic-members", type=_ensemble_sizes, default=None,
                   help="ensemble sizes the genetic attack runs on, a subset of --members "
                        "(default: the largest; it costs ~100 forward passes per image)")
    e.add_argument("--n", type=positive_int, default=None,
                   help="test images for clean and transfer accuracy (default: 1000; quick 300)")
    e.add_argument("--n-adaptive", type=positive_int, default=None,
                   help="test images for adaptive PGD (default: 100)")
    e.add_argument("--n-genetic", type=positive_int, default=None,
                   help="test images for the genetic attack (default: 25; quick 30)")
    e.add_argument("--pgd-steps", type=positive_int, default=None,
                   help="PGD steps (default: 20; quick 10)")
    e.add_argument("--generations", type=positive_int, default=None,
                   help="genetic attack generations (default: 80; quick 50)")
    e.add_argument("--population", type=positive_int, default=None,
                   help="genetic attack population (default: 8)")
    e.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs of every model and member (default: 6; quick 3)")
    e.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="training precision (default: bf16 on CPUs with AMX, else fp32)")
    e.add_argument("--recipe", choices=["harness", "original"], default="harness",
                   help="how the baseline and the FGSM-trained model are trained: 'harness' "
                        "(Adam, --epochs) or 'original' (the original code's Adadelta lr 0.1 "
                        "for 14 epochs, label smoothing 0.1 on the baseline) (default: "
                        "%(default)s)")
    add_seed_option(e, "the data split, every model and member")
    e.add_argument("--quick", action="store_true",
                   help="smaller N, fewer images and epochs: a few minutes on 2 cores")
    e.add_argument("--progress", action="store_true", help="progress bars on stderr")
    add_backend_options(e, "member training and the ensembles' attacks")
    e.add_argument("--out", required=True, type=Path,
                   help="run directory; an earlier run of the same configuration there is "
                        "resumed (finished models and members are reused)")
    e.add_argument("--overwrite", action="store_true",
                   help="discard an earlier run in --out and start from scratch")
    return p


def cmd_experiment(args: argparse.Namespace) -> int:
    """``robustness experiment ensembles``: resumes into ``--out`` (``--overwrite``: afresh)."""
    import shutil

    from ensembles.experiment import ExperimentConfig, run_experiment
    from robustness.cli.common import as_options
    from robustness.core.backend import backend_from_args
    from robustness.core.io import check_output_dir

    # Resumable: an existing run in --out is reused, so only a file or an unwritable
    # location is refused here (before any training); --overwrite starts from scratch.
    check_output_dir(args.out, overwrite=True)

    given = {k: getattr(args, k) for k in _TUNABLE if getattr(args, k) is not None}
    if "members" in given:
        given["members"] = tuple(given["members"])
    common: dict[str, Any] = {"data": args.data, "eps": args.eps, "train_eps": args.train_eps,
                              "seed": args.seed, "recipe": args.recipe}
    if args.genetic_members is not None:
        common["genetic_members"] = tuple(args.genetic_members)
    if args.samplings is not None:
        common["samplings"] = tuple(args.samplings)
    if args.precision is not None:
        common["precision"] = args.precision
    with as_options("experiment ensembles", "robustness experiment ensembles", vars(args)):
        cfg = (ExperimentConfig.quick(**common, **given) if args.quick
               else ExperimentConfig(**common, **given))

    backend = backend_from_args(args, "experiment ensembles")  # before anything is removed

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.overwrite and args.out.exists():
        shutil.rmtree(args.out)
    try:
        result = run_experiment(cfg, args.out, root=args.data_root, echo=echo,
                                progress=args.progress, backend=backend)
    finally:
        backend.close()
    from reports.page import write_run_page

    write_run_page(args.out)  # the same page `robustness report` makes
    print((args.out / "results.md").read_text(encoding="utf-8"))
    print(f"Wrote {args.out}/results.json, results.md and report.html in "
          f"{result['seconds'] / 60:.1f} min.")
    return 0
