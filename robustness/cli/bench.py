"""``robustness bench``: the quick speed benchmark, from the installed package alone."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustness.cli.common import OUT_HELP, add_overwrite_option, add_seed_option
from robustness.core.argtypes import positive_int, positive_int_list


def add_bench_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness bench`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "bench", help="quick speed benchmark: our attacks against the model's floor and "
                      "torchattacks / foolbox, with every target met or missed (1-2 min)",
        description="Train the reference ConvNet briefly on mnist, time PGD-10 and FGSM (ours "
                    "against one forward + backward of the model, channels_last, torchattacks "
                    "when installed, and foolbox) at each --batch, and run the genetic attack "
                    "untargeted on a few images. Prints each timing as median (min-max) over "
                    "--repeats rounds and one line per target, met or missed by how much; "
                    "writes OUT/bench.json and OUT/benchmarks.md. The full benchmarks are "
                    "`nox -s bench` in a clone of the repository.")
    p.add_argument("--out", type=Path, default=Path("runs/bench/quick"),
                   help=f"{OUT_HELP} (default: %(default)s)")
    add_overwrite_option(p)
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="timed rounds per section after one warm-up, times 128 / batch for a "
                        "batch below 128 (default: %(default)s)")
    p.add_argument("--batch", type=positive_int_list, default=[32, 256],
                   help="comma-separated batch sizes (default: 32,256)")
    add_seed_option(p, "the model's training")
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    """``robustness bench``: all-or-nothing into ``--out``."""
    from reports.benchmarks import render_benchmarks
    from robustness.bench import run_quick
    from robustness.core.io import run_directory, write_text

    with run_directory(args.out, overwrite=args.overwrite) as out:
        record = run_quick(out / "bench.json", repeats=args.repeats, batches=tuple(args.batch),
                           seed=args.seed)
        write_text(out / "benchmarks.md", render_benchmarks(
            [record], title="Quick benchmark",
            how="Written by `robustness bench`; the full set is `nox -s bench`."))
    print(f"\nWrote {args.out / 'bench.json'} and benchmarks.md.")
    return 0
