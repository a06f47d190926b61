"""Build a report from run directories: read, compare, render (HTML, Markdown, JSON).

:func:`build_report` is what ``robustness report RUN_DIR ... --out DIR`` runs;
:func:`write_run_page` writes ``report.html`` into a single run's own directory (what
``robustness evaluate`` does at the end). Both read files only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reports.compare import compare
from reports.html import curves, findings_of, page_markdown, render_page, verdict_lines
from reports.runs import Run, RunReadError, read_run
from robustness.core.io import write_json, write_text

REPORT_FORMAT = "robustness-report"
REPORT_VERSION = 1


def read_runs(paths: Sequence[str | os.PathLike[str]]) -> list[Run]:
    """Read every run directory; titles are made unique (``parent/name`` on a clash).

    Raises
    ------
    RunReadError
        When no directory holds anything usable, naming each one and why.
    """
    runs: list[Run] = []
    errors: list[str] = []
    seen: set[Path] = set()
    for p in paths:
        try:
            run = read_run(p)
        except RunReadError as e:
            errors.append(str(e))
            continue
        if run.path.resolve() in seen:
            errors.append(f"{p} was given twice; it is shown once")
            continue
        seen.add(run.path.resolve())
        runs.append(run)
    if not runs:
        raise RunReadError(" ".join(errors) or "No run directory was given.")
    names = [r.title for r in runs]
    for r in runs:
        if names.count(r.title) > 1:
            r.title = f"{r.path.resolve().parent.name}/{r.path.name}"
    for i, r in enumerate(runs):  # still equal (same parent name): number them
        if [x.title for x in runs].count(r.title) > 1:
            r.title = f"{r.title} #{i + 1}"
    # The usable runs are reported; the unusable ones say why on the page.
    runs[0].problems.extend(errors)
    return runs


def report_document(runs: Sequence[Run], *, title: str) -> tuple[dict[str, Any], str, str]:
    """``(report.json document, HTML, Markdown)`` for ``runs``."""
    paired, unpaired = compare(list(runs))
    doc = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "title": title,
        "verdict": verdict_lines(runs, paired, unpaired),
        "findings": [{"run": who, "severity": sev, "check": check, "message": msg}
                     for who, sev, check, msg in findings_of(runs)],
        "curves": curves(runs),
        "comparisons": [c.to_dict() for c in paired],
        "not_paired": [{"a": u.a, "b": u.b, "reason": u.reason} for u in unpaired],
        "runs": [r.to_dict() for r in runs],
    }
    return doc, render_page(runs, paired, unpaired, title=title), \
        page_markdown(runs, paired, unpaired, title=title)


def build_report(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                 title: str = "Robustness report") -> dict[str, Any]:
    """Read ``paths``, compare them and write ``out/report.html``, ``report.md`` and
    ``report.json`` (the merged data the page shows); return that document."""
    runs = read_runs(paths)
    doc, page, md = report_document(runs, title=title)
    out = Path(out)
    write_text(out / "report.html", page)
    write_text(out / "report.md", md)
    write_json(out / "report.json", doc)
    return doc


def write_run_page(run_dir: str | os.PathLike[str], *, name: str | None = None) -> Path:
    """Write ``report.html`` for one run into its own directory; return its path.

    ``name`` is how the page calls the run (default: the directory's name; a command
    writing into a temporary directory passes its final name).
    """
    run = read_run(run_dir)
    run.title = name or run.title
    _, page, _ = report_document([run], title=f"Robustness report: {run.title}")
    return write_text(Path(run_dir) / "report.html", page)


__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "build_report", "read_runs", "report_document",
           "write_run_page"]
