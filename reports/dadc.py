"""A DADC run (``dadc.json`` of ``robustness dadc``) as a table and a figure.

The figure has one panel per evaluation set (accuracy per round, DADC and control arm,
95% Wilson bands) and one for the collection itself: the fraction of tries that fooled
the current model per round, and the examples each arm has added so far.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

ARM_STYLE = {"dadc": ("C3", "o", "DADC"), "control": ("C0", "s", "control (standard)")}


def _series(doc: dict[str, Any], set_name: str, arm: str) -> list[dict[str, Any]]:
    """Round 0 (shared) then the arm's rounds, ordered."""
    rows = [r for r in doc.get("table", []) if r.get("set") == set_name
            and r.get("arm") in (arm, "base")]
    return sorted(rows, key=lambda r: r["round"])


def _ticks(doc: dict[str, Any]) -> list[int]:
    return list(range(int(doc.get("config", {}).get("rounds", 0)) + 1))


def dadc_figure_png(doc: dict[str, Any]) -> bytes:
    """PNG bytes of the run's figure (see the module docstring)."""
    from matplotlib.figure import Figure

    sets = list(doc.get("sets", {}))
    fig = Figure(figsize=(4.0 * (len(sets) + 1), 3.8), layout="constrained")
    axes = fig.subplots(1, len(sets) + 1, squeeze=False)[0]
    for ax, name in zip(axes, sets, strict=False):
        for arm, (colour, marker, label) in ARM_STYLE.items():
            rows = _series(doc, name, arm)
            if not rows:
                continue
            xs = [r["round"] for r in rows]
            ax.plot(xs, [r["accuracy"] for r in rows], marker=marker, color=colour, label=label)
            ax.fill_between(xs, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows],
                            color=colour, alpha=0.15, linewidth=0)
        ax.set_title(doc["sets"][name], fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks(_ticks(doc))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    rounds = doc.get("rounds", [])
    xs = [r["round"] for r in rounds]
    rate = [r.get("fooling_rate") for r in rounds]
    ax.plot(xs, [v if v is not None else float("nan") for v in rate], marker="o", color="C2",
            label="fooling rate of the source")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("round")
    ax.set_ylabel("fraction of tries that fooled the model")
    ax.set_title("collection", fontsize=9)
    twin = ax.twinx()
    total_d = total_c = 0
    added_d, added_c = [], []
    for r in rounds:
        total_d += int(r.get("trained", 0))
        total_c += int(r.get("control_added", 0))
        added_d.append(total_d)
        added_c.append(total_c)
    twin.bar([x - 0.15 for x in xs], added_d, width=0.3, color="C3", alpha=0.4,
             label="added (DADC)")
    twin.bar([x + 0.15 for x in xs], added_c, width=0.3, color="C0", alpha=0.4,
             label="added (control)")
    twin.set_ylabel("training examples added so far")
    ax.set_xticks(_ticks(doc))
    ax.set_zorder(twin.get_zorder() + 1)  # the rate line above the bars
    ax.patch.set_visible(False)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    ax.legend(handles, labels, fontsize=7, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_dadc_figure(doc: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`dadc_figure_png` atomically."""
    from reports.tsne import write_png

    return write_png(path, dadc_figure_png(doc))


def dadc_rows(doc: dict[str, Any]) -> list[list[object]]:
    """One row per (round, arm): accuracy [95% CI] on each evaluation set."""
    sets = list(doc.get("sets", {}))
    cells: dict[tuple[int, str], dict[str, str]] = {}
    for r in doc.get("table", []):
        cells.setdefault((r["round"], r["arm"]), {})[r["set"]] = \
            f"{r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    added = {r["round"]: r for r in doc.get("rounds", [])}
    rows: list[list[object]] = []
    for (round_, arm), by_set in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        info = added.get(round_, {})
        n_added = info.get("trained") if arm == "dadc" else info.get("control_added")
        rows.append([round_, "start" if arm == "base" else arm,
                     *[by_set.get(s, "-") for s in sets], n_added if round_ else None])
    return rows


def dadc_headers(doc: dict[str, Any]) -> list[str]:
    """Column names of :func:`dadc_rows`."""
    return ["round", "arm", *doc.get("sets", {}), "added"]


def dadc_markdown(doc: dict[str, Any]) -> str:
    """``dadc.md``: what was run, the verdict lines, the table of rounds x arms x sets."""
    cfg = doc.get("config", {})
    threat = doc.get("evaluation_attack") or {}
    lines = ["# Dynamic adversarial data collection", "",
             f"Data {doc.get('dataset', {}).get('name', cfg.get('data'))}: "
             f"{doc.get('initial')} initial training images, a pool of {doc.get('pool')}; "
             f"source `{cfg.get('source')}`, {cfg.get('rounds')} rounds of up to "
             f"{cfg.get('per_round')}, retrain `{cfg.get('retrain')}`."]
    if threat:
        lines += ["", f"Fixed and fresh sets: `{threat['attack']}` at eps {threat['eps']:g} "
                      f"({threat['norm']}, {threat['threat_model']})."]
    lines += ["", "## Verdict", ""] + [f"- {line}" for line in doc.get("lines", [])]
    found = [f for f in doc.get("findings", []) if f.get("severity") in ("warning", "error")]
    lines += ["", "Do not trust these numbers yet:" if found
              else "No sanity check raised a warning or an error in the last round."]
    lines += [f"- **{f['severity']}** `{f['check']}` ({f['arm']}): {f['message']}"
              for f in found]
    headers = dadc_headers(doc)
    lines += ["", "## Rounds", "", "| " + " | ".join(headers) + " |",
              "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join("-" if v is None else str(v) for v in row) + " |"
              for row in dadc_rows(doc)]
    lines += ["", "Accuracy [95% Wilson interval]; `added`: training examples the arm "
                  "gained that round (the control arm exactly as many as the DADC arm)."]
    return "\n".join(lines) + "\n"


__all__ = ["dadc_figure_png", "dadc_headers", "dadc_markdown", "dadc_rows",
           "write_dadc_figure"]
