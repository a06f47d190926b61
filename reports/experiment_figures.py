"""Figures of an ensemble experiment (``results.json`` of ``robustness experiment
ensembles``): accuracy against the number of members, per aggregation, under transfer and
adaptive attacks side by side, with the members' own transfer accuracy beside them."""

from __future__ import annotations

import io
from typing import Any

MEASURES = (("clean", "clean accuracy"), ("transfer", "transfer (FGSM from the baseline)"),
            ("adaptive", "adaptive white-box PGD"))
MARKERS = {"mean": "o", "max": "s", "vote": "^", "logit_mean": "D"}


def accuracy_vs_members_png(doc: dict[str, Any]) -> bytes | None:
    """Three panels (clean, transfer, adaptive): accuracy vs N per sampling x aggregation,
    95% intervals as error bars; best and mean member (transfer) as grey markers. None if
    the document holds no ensemble rows."""
    rows = [r for r in doc.get("ensembles", []) if isinstance(r, dict)
            and not r.get("with_baseline") and isinstance(r.get("n_members"), int)]
    if not rows:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, len(MEASURES), sharey=True)
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault((str(r.get("sampling")), str(r.get("aggregation"))), []).append(r)
    samplings = sorted({s for s, _ in series})
    for ax, (key, title) in zip(axes, MEASURES, strict=True):
        for (sampling, agg), points in sorted(series.items()):
            points = sorted(points, key=lambda p: p["n_members"])
            ns = [p["n_members"] for p in points]
            acc = [p.get(key) for p in points]
            if any(a is None for a in acc):
                continue
            ci = [p.get(f"{key}_ci") or [a, a] for p, a in zip(points, acc, strict=True)]
            err = [[a - c[0] for a, c in zip(acc, ci, strict=True)],
                   [c[1] - a for a, c in zip(acc, ci, strict=True)]]
            colour = f"C{list(MARKERS).index(agg) % 10}" if agg in MARKERS else "C9"
            styles = ("-", "--", ":", "-.")
            ax.errorbar(ns, acc, yerr=err, marker=MARKERS.get(agg, "o"), color=colour,
                        capsize=3, linestyle=styles[samplings.index(sampling) % len(styles)],
                        label=f"{agg} ({sampling})")
        if key == "transfer":
            for m in doc.get("members", []):
                n = m.get("n_members")
                for field, marker in (("best_member_transfer", "*"),
                                      ("mean_member_transfer", "x")):
                    if isinstance(m.get(field), float | int):
                        ax.scatter([n], [m[field]], marker=marker, color="grey", zorder=3,
                                   label=field.replace("_", " ").replace(" transfer", ""))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("members N")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (robust accuracy under attack)")
    axes[0].set_ylim(-0.02, 1.02)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


__all__ = ["accuracy_vs_members_png"]
