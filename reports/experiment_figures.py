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

    spread = _member_spread(doc)
    fig = Figure(figsize=(16 if spread else 13, 4.2), layout="constrained")
    axes = list(fig.subplots(1, len(MEASURES) + bool(spread), sharey=True))
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault((str(r.get("sampling")), str(r.get("aggregation"))), []).append(r)
    samplings = sorted({s for s, _ in series})
    for ax, (key, title) in zip(axes[:len(MEASURES)], MEASURES, strict=True):
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
    if spread:
        _plot_spread(axes.pop(), spread)
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


def _member_spread(doc: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per sampling: every member's clean and transfer accuracy (the largest N's entry holds
    them all). Empty for results written before per-member lists were stored."""
    out: dict[str, dict[str, list[float]]] = {}
    best_n: dict[str, int] = {}
    for m in doc.get("members", []):
        if not isinstance(m, dict) or not isinstance(m.get("member_transfer"), list):
            continue
        sampling, n = str(m.get("sampling")), int(m.get("n_members") or 0)
        if n >= best_n.get(sampling, 0):
            best_n[sampling] = n
            out[sampling] = {"clean": list(m.get("member_clean") or []),
                             "transfer": list(m["member_transfer"])}
    return out


def _plot_spread(ax: Any, spread: dict[str, dict[str, list[float]]]) -> None:
    """Box plot with every member as a point: how much single members differ."""
    positions, data, names = [], [], []
    for i, (sampling, accs) in enumerate(sorted(spread.items())):
        for j, key in enumerate(("clean", "transfer")):
            values = accs.get(key) or []
            if not values:
                continue
            pos = 3 * i + j
            positions.append(pos)
            data.append(values)
            names.append(f"{sampling}\n{key}")
            # Deterministic jitter: the same results always draw the same figure.
            offsets = [((k * 0.618) % 1 - 0.5) * 0.3 for k in range(len(values))]
            ax.scatter([pos + o for o in offsets], values, s=8, color=f"C{j}", alpha=0.6,
                       zorder=3)
    ax.boxplot(data, positions=positions, widths=0.6, showfliers=False)
    ax.set_xticks(positions, names, fontsize=8)
    ax.set_title(f"single members ({max(len(d) for d in data)} per sampling)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")


__all__ = ["accuracy_vs_members_png"]
