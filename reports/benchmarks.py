"""``docs/benchmarks.md``: every benchmark's targets, met or missed, with the machine it ran on.

Rendered from the JSON records the benchmarks write (:func:`robustness.bench.write_record`):
``{"benchmark", "command", "when", "machine", "targets": [{"name", "goal", "measured",
"met", "spread", "unit", "note"}], "summary": [lines], ...}``. Nothing here measures; it
only renders.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from robustness.core.text import figure


def _measured(target: dict[str, Any]) -> str:
    unit = target.get("unit") or ""
    text = f"{figure(target['measured'])}{unit}"
    if target.get("spread"):
        low, high = target["spread"]
        text += f" ({figure(low)}-{figure(high)})"
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_benchmarks(records: Iterable[dict[str, Any]], *, title: str = "Benchmarks",
                      how: str = "") -> str:
    """Markdown of benchmark records: a summary of every target, then one section each.

    Parameters
    ----------
    records
        Benchmark records, in the order to show them.
    title
        The page's heading.
    how
        A paragraph under the heading saying how the page was made and how to re-run it.
    """
    records = list(records)
    targets = [(r["benchmark"], t) for r in records for t in r.get("targets", [])]
    met = sum(bool(t["met"]) for _, t in targets)
    lines = [f"# {title}", ""]
    if how:
        lines += [how, ""]
    machines = sorted({r["machine"]["cpu"] for r in records})
    lines += [f"Machine{'s' if len(machines) > 1 else ''}: "
              + "; ".join(f"`{m}`" for m in machines) + ".", "",
              f"## Targets: {met} of {len(targets)} met", "",
              "Measured is the median, with the min-max over repeats where there are repeats "
              "(a ratio's spread is over rounds timed together).", "",
              "| benchmark | target | measured | goal | verdict |", "|---|---|---|---|---|"]
    for bench, t in targets:
        verdict = "met" if t["met"] else "**missed**"
        lines.append(f"| {bench} | {_cell(t['name'])} | {_measured(t)} | "
                     f"{t['goal']}{t.get('unit') or ''} | {verdict} |")
    for r in records:
        m = r["machine"]
        lines += ["", f"## {r['benchmark']}", "",
                  f"- command: `{r['command']}`",
                  f"- ran {r['when']} on `{m['cpu']}`, {m['threads']} torch threads of "
                  f"{m['cpus']} CPUs, torch {m['torch']}, load average "
                  f"{m['load_average']:.2f}"]
        lines += [f"- {line}" for line in r.get("summary", [])]
        missed = [t for t in r.get("targets", []) if not t["met"]]
        noted = [t for t in r.get("targets", []) if t.get("note")]
        if missed:
            lines += ["- missed:"] + [f"  - {t['name']}: {_measured(t)} against "
                                      f"{t['goal']}{t.get('unit') or ''}"
                                      + (f". {t['note']}" if t.get("note") else "")
                                      for t in missed]
        kept = [t for t in noted if t["met"]]
        if kept:
            lines += ["- notes:"] + [f"  - {t['name']}: {t['note']}" for t in kept]
    return "\n".join(lines) + "\n"
