"""Markdown documents: the summaries written beside every run's JSON."""

from __future__ import annotations

import os
from pathlib import Path

from robustness.core.io import write_text
from robustness.evaluation.report import RobustnessReport


def findings_markdown(report: RobustnessReport) -> list[str]:
    """The sanity checks' findings as Markdown list lines (or one line saying there are none)."""
    if not report.findings:
        return ["No sanity check raised a finding."]
    return ["## Findings", "", *(f"- **{f.severity}** `{f.check}`: {f.message}"
                                 for f in report.findings)]


def report_markdown(report: RobustnessReport) -> str:
    """A :class:`RobustnessReport` as Markdown: clean accuracy, the table, the findings."""
    model = report.provenance.get("model", {}).get("description", "model")
    data = report.provenance.get("dataset", {}).get("name", "data")
    lines = [f"# Robustness report: {model} on {data}", "",
             f"Clean accuracy **{report.clean_accuracy:.3f}** on {report.n_samples} samples.",
             "", report.table(), "", *findings_markdown(report)]
    return "\n".join(lines) + "\n"


def write_report(report: RobustnessReport, directory: str | os.PathLike[str]) -> Path:
    """Write ``report.json`` and ``report.md`` into ``directory``; return the JSON path."""
    path = report.save(directory)
    write_text(Path(directory) / "report.md", report_markdown(report))
    return path
