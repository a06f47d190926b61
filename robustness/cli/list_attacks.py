"""``robustness list-attacks``: the attack names the registry knows."""

from __future__ import annotations

import argparse
from typing import Any


def add_list_attacks_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness list-attacks`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "list-attacks", help="list the attack names the registry knows",
        description="List attack names usable with --attack.")
    return p


def cmd_list_attacks(args: argparse.Namespace) -> int:
    """``robustness list-attacks``."""
    from attacks.registry import available_attacks

    for name in available_attacks():
        print(name)
    return 0
