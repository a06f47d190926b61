"""``robustness report RUN_DIR [RUN_DIR ...] --out DIR``: one page from any run directories."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustness.cli.common import add_out_option


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness report`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "report", help="turn run directories into one self-contained HTML page (and md, json)",
        description="Read run directories written by evaluate, demo, attack, fool or "
                    "experiment ensembles (JSON and safetensors files only: nothing is "
                    "re-run) and write OUT/report.html (self-contained: CSS inline, figures "
                    "embedded, no network, no JavaScript), OUT/report.md and OUT/report.json "
                    "(the merged data). Several evaluated runs on the same samples are "
                    "compared per sample (exact sign test); others are shown side by side "
                    "with the reason they are not paired.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run directories to report on")
    p.add_argument("--title", default="Robustness report", help="page title")
    add_out_option(p)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    """``robustness report``: all-or-nothing into ``--out``."""
    from reports.page import build_report
    from robustness.core.io import run_directory

    with run_directory(args.out, overwrite=args.overwrite) as out:
        doc = build_report(args.runs, out, title=args.title)
    for line in doc["verdict"]:
        print(line)
    for run in doc["runs"]:
        for problem in run["problems"]:
            print(f"{run['title']}: {problem}")
    print(f"Wrote {args.out}/report.html, report.md, report.json "
          f"({len(doc['runs'])} run(s), {len(doc['comparisons'])} paired comparison(s))")
    return 0
