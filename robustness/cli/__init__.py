"""The ``robustness`` console script (``robustness = "robustness.cli:main"``).

Every command writes its results into one run directory (``--out``). User errors (bad
arguments, missing data, bad checkpoints) print one line ``robustness COMMAND: error:
...`` to stderr and exit with status 2; no traceback.

One module per command, each with ``add_<command>_parser(sub)`` and ``cmd_<command>(args)``;
shared options and the error handling are in :mod:`robustness.cli.common`. ``robustness
gate`` lives with the gates (:mod:`robustness.gates.cli`). Heavy imports (torch, the data
loaders) happen inside the ``cmd_*`` functions so that ``robustness --help`` is instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from robustness.cli.attack import add_attack_parser, cmd_attack
from robustness.cli.bench import add_bench_parser, cmd_bench
from robustness.cli.collect import add_collect_parser, cmd_collect
from robustness.cli.common import Command, run_command
from robustness.cli.dadc import add_dadc_parser, cmd_dadc
from robustness.cli.demo import add_demo_parser, cmd_demo
from robustness.cli.evaluate import add_evaluate_parser, cmd_evaluate
from robustness.cli.experiment import add_experiment_parser, cmd_experiment
from robustness.cli.fool import add_fool_parser, cmd_fool
from robustness.cli.list_attacks import add_list_attacks_parser, cmd_list_attacks
from robustness.cli.report import add_report_parser, cmd_report
from robustness.cli.train import add_train_parser, cmd_train
from robustness.cli.tsne import add_tsne_parser, cmd_tsne
from robustness.gates.cli import add_gate_parser, cmd_gate

__all__ = ["build_parser", "main"]

# (register the sub-parser, run the command), in `robustness --help` order.
_COMMANDS: tuple[tuple[Callable[[Any], argparse.ArgumentParser], Command], ...] = (
    (add_train_parser, cmd_train),
    (add_demo_parser, cmd_demo),
    (add_attack_parser, cmd_attack),
    (add_evaluate_parser, cmd_evaluate),
    (add_fool_parser, cmd_fool),
    (add_list_attacks_parser, cmd_list_attacks),
    (add_gate_parser, cmd_gate),
    (add_experiment_parser, cmd_experiment),
    (add_report_parser, cmd_report),
    (add_tsne_parser, cmd_tsne),
    (add_dadc_parser, cmd_dadc),
    (add_collect_parser, cmd_collect),
    (add_bench_parser, cmd_bench),
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the usage itself is one ``--help`` away),
    exit status 2, like every other error of the ``robustness`` command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``robustness`` command (all sub-commands)."""
    parser = OneLineParser(
        prog="robustness",
        description="Adversarial robustness testing harness for PyTorch classifiers.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser, handler in _COMMANDS:
        add_parser(sub).set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robustness`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_command(args.command, args.handler, args)
