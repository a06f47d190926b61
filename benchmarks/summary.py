"""Write ``docs/benchmarks.md`` from the benchmark records in ``runs/bench/*.json``.

Run as ``python benchmarks/summary.py [--runs runs/bench] [--out docs/benchmarks.md]``;
``nox -s bench`` runs it after the benchmarks. Every record says when, how and on what
machine it was measured, so a page assembled from runs of different days stays honest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reports.benchmarks import render_benchmarks
from robustness.core.io import write_text

# The page's order; records of other benchmarks follow in name order.
ORDER = ("attacks", "evaluate", "ensembles", "ensembles-full", "memory", "tsne", "collect",
         "ray", "quick")

HOW = ("Written by `nox -s bench` (`benchmarks/summary.py`, from `runs/bench/*.json`); do not "
       "edit by hand. Every timing is a ratio to something measured in the same run (the "
       "model's own floor or a peer library), timed round-robin. Re-run all of it with "
       "`nox -s bench`, one benchmark with `nox -s bench -- attacks`, or the quick subset "
       "from an installed package with `robustness bench`.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    records = []
    for path in sorted(args.runs.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or "benchmark" not in record:
            print(f"skipped {path}: not a benchmark record (written by an older script?)")
            continue
        records.append(record)
    if not records:
        print(f"no benchmark records in {args.runs}; run `nox -s bench` first", file=sys.stderr)
        return 1
    rank = {name: i for i, name in enumerate(ORDER)}
    records.sort(key=lambda r: (rank.get(r["benchmark"], len(ORDER)), r["benchmark"]))
    write_text(args.out, render_benchmarks(records, how=HOW))
    print(f"wrote {args.out} ({len(records)} benchmarks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
