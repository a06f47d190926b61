"""Self-contained report pages: one HTML file, CSS inline, figures as PNG data URIs.

The page reads without JavaScript and without the network. It opens with the verdict
(the most robust run per threat model with its 95% interval, the paired comparisons
that are significant, and every sanity-check finding that says "do not trust this number
yet"), then the robust-accuracy-vs-eps figure, the tables and the runs' own figures.
Markdown (:func:`page_markdown`) carries the same content without images.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reports.compare import PairedComparison, Unpaired
from reports.runs import Run
from robustness.core.text import markdown_table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
h3{font-size:1.05rem}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}
.verdict{background:#f6f8fa;border-left:4px solid #0969da;padding:.6rem 1rem}
.warn{border-left-color:#bf8700}.bad{color:#cf222e}.ok{color:#1a7f37}
figure{margin:1rem 0}figcaption{font-size:.85rem;color:#57606a}
img{max-width:100%;height:auto}code{background:#f6f8fa;padding:0 .25rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(draw: Any, *, width: float = 7.0, height: float = 4.0) -> bytes:
    """Render ``draw(ax)`` on a bare matplotlib Figure to PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    draw(fig.add_subplot())
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def curves(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Worst-case robust accuracy vs eps per run and norm: the data of the main figure."""
    out = []
    for run in runs:
        if run.report is None:
            continue
        for norm in dict.fromkeys(w.norm for w in run.report.worst_case):
            points = [{"eps": w.eps, "robust_accuracy": w.robust_accuracy, "ci_low": w.ci_low,
                       "ci_high": w.ci_high}
                      for w in sorted(run.report.worst_case, key=lambda w: w.eps)
                      if w.norm == norm]
            out.append({"run": run.title, "norm": norm or "mixed", "points": points})
    return out


def accuracy_vs_eps_png(runs: Sequence[Run]) -> bytes | None:
    """One line per run (and norm) with its 95% band; None when nothing was evaluated."""
    data = curves(runs)
    if not data:
        return None

    def draw(ax: Any) -> None:
        for c in data:
            eps = [p["eps"] for p in c["points"]]
            ax.plot(eps, [p["robust_accuracy"] for p in c["points"]], marker="o",
                    label=f"{c['run']} ({c['norm']})")
            ax.fill_between(eps, [p["ci_low"] for p in c["points"]],
                            [p["ci_high"] for p in c["points"]], alpha=0.15)
        ax.set_xlabel("eps (in each run's norm)")
        ax.set_ylabel("worst-case robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return _figure_png(draw)


def per_attack_png(run: Run) -> bytes | None:
    """One line per attack (and the worst case) of one evaluated run, robust accuracy vs eps
    with 95% bands, one panel per norm; None without a report."""
    if run.report is None or not run.report.results:
        return None
    report = run.report
    norms = list(dict.fromkeys(r.norm for r in report.results))

    def draw(ax: Any) -> None:
        for norm in norms:
            rows: dict[str, list[tuple[float, float, float, float]]] = {}
            for r in report.results:
                if r.norm == norm:
                    rows.setdefault(r.label, []).append(
                        (r.eps, r.robust_accuracy, r.ci_low, r.ci_high))
            rows[f"worst case ({norm})"] = [(w.eps, w.robust_accuracy, w.ci_low, w.ci_high)
                                            for w in report.worst_case if w.norm == norm]
            for name, pts in rows.items():
                pts.sort()
                if not pts:
                    continue
                style = {"color": "black", "linewidth": 2} if name.startswith("worst") else {}
                label = name if len(norms) == 1 or name.startswith("worst") else \
                    f"{name} ({norm})"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label,
                        **style)
                ax.fill_between([p[0] for p in pts], [p[2] for p in pts], [p[3] for p in pts],
                                alpha=0.12, color=style.get("color"))
        ax.axhline(report.clean_accuracy, color="grey", linestyle=":", label="clean accuracy")
        ax.set_xlabel("eps" if len(norms) == 1 else "eps (in each attack's norm)")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return _figure_png(draw, width=6.5, height=3.8)


def verdict_lines(runs: Sequence[Run], paired: Sequence[PairedComparison],
                  unpaired: Sequence[Unpaired] = ()) -> list[str]:
    """The opening of the page: per threat model (norm, eps), which run is most robust.

    A run is called more robust than another only on a significant paired difference of
    their per-sample worst cases (exact sign test); otherwise the line says there is no
    detectable difference, or why the two could not be compared per sample.
    """
    budgets: dict[tuple[str, float], list[tuple[float, float, float, str]]] = {}
    for run in runs:
        if run.report is None:
            continue
        for w in run.report.worst_case:
            budgets.setdefault((w.norm, w.eps), []).append(
                (w.robust_accuracy, w.ci_low, w.ci_high, run.title))
    tests = {(frozenset((c.a, c.b)), c.eps, c.norm): c for c in paired if c.attack == "worst case"}
    reasons = {frozenset((u.a, u.b)): u.reason for u in unpaired}
    lines = []
    for (norm, eps), rows in sorted(budgets.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rows.sort(key=lambda r: -r[0])
        acc, lo, hi, best = rows[0]
        where = f"{norm or 'mixed'} eps {eps:g}"
        figure = f"worst-case robust accuracy {acc:.3f} [95% CI {lo:.3f}, {hi:.3f}]"
        if len(rows) == 1:
            lines.append(f"{where}: {best}, {figure}")
            continue
        above, level, open_ = [], [], []
        for other_acc, _, _, other in rows[1:]:
            test = tests.get((frozenset((best, other)), eps, norm))
            if test is not None and test.significant:
                above.append(f"{other} ({other_acc:.3f}, p = {test.p_value:.2g})")
            elif test is not None:
                level.append(f"{other} ({other_acc:.3f}, p = {test.p_value:.2g})")
            else:
                why = reasons.get(frozenset((best, other)), "not evaluated alike")
                open_.append(f"{other} ({other_acc:.3f}; not paired: {why})")
        parts = [f"{where}: highest: {best}, {figure}"]
        if above:
            parts.append("significantly more robust than " + ", ".join(above))
        if level:
            parts.append("no detectable difference from " + ", ".join(level))
        if open_:
            parts.append("not compared per sample with " + ", ".join(open_))
        lines.append("; ".join(parts))
    for run in runs:
        if run.kind == "experiment":  # its own paired verdicts (max vs mean, sign test)
            lines += [f"{run.title}: {v.get('line', '')}"
                      for v in run.data.get("verdicts", {}).values() if isinstance(v, dict)]
        if run.kind == "tsne":  # the number behind the picture
            lines += [f"{run.title} ({run.data.get('attack', '?')} eps "
                      f"{run.data.get('eps', '?')}): {line}" for line in run.data.get("lines", [])]
        if run.kind == "dadc":  # DADC against its control arm, paired per sample
            lines += [f"{run.title}: {line}" for line in run.data.get("lines", [])]
    return lines


def findings_of(runs: Sequence[Run]) -> list[tuple[str, str, str, str]]:
    """``(run, severity, check, message)`` of every finding, warnings and errors first."""
    rank = {"error": 0, "warning": 1, "info": 2}
    rows = []
    for run in runs:
        if run.report is not None:
            rows += [(run.title, f.severity, f.check, f.message) for f in run.report.findings]
        elif run.kind == "dadc":
            rows += [(f"{run.title}: {f.get('arm', '?')}", f.get("severity", "?"),
                      f.get("check", "?"), f.get("message", ""))
                     for f in run.data.get("findings", []) if isinstance(f, dict)]
        elif run.kind == "experiment":
            for model, found in run.data.get("findings", {}).items():
                rows += [(f"{run.title}: {model}", f.get("severity", "?"), f.get("check", "?"),
                          f.get("message", "")) for f in found]
    return sorted(rows, key=lambda r: rank.get(r[1], 3))


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}"
        return _e(v)

    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _report_rows(run: Run) -> list[list[object]]:
    assert run.report is not None
    rows: list[list[object]] = [
        [r.label, r.threat_model, r.norm, r.eps, r.robust_accuracy,
         f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", r.success_rate, r.n]
        for r in sorted(run.report.results, key=lambda r: (r.norm, r.eps, r.attack))]
    rows += [[f"worst case ({w.norm})" if w.norm else "worst case", "all", w.norm, w.eps,
              w.robust_accuracy, f"[{w.ci_low:.3f}, {w.ci_high:.3f}]", None, w.n]
             for w in run.report.worst_case]
    return rows


REPORT_HEADERS = ["attack", "threat model", "norm", "eps", "robust acc", "95% CI", "success", "n"]


def _summary_rows(run: Run) -> list[list[object]]:
    """Key figures of runs without a RobustnessReport (attack, fool, experiment)."""
    d = run.data
    keep = ("attack", "norm", "eps", "n", "clean_accuracy", "robust_accuracy", "success_rate",
            "median_perturbation", "median_queries", "wall_time_s", "target_confidence",
            "reached", "model_calls", "queries", "seconds")
    rows: list[list[object]] = [[k, d[k]] for k in keep if k in d and not isinstance(
        d[k], dict | list)]
    if run.kind == "experiment":
        rows += [[f"verdict ({name})", v.get("line", "")]
                 for name, v in d.get("verdicts", {}).items()]
    if run.kind == "tsne":
        rows += [["layer", d.get("layer", "?")], ["points", d.get("counts", {})],
                 ["t-SNE", _tsne_method(d)]]
        rows += [["low-density score", line] for line in d.get("lines", [])]
    return rows


def _tsne_method(d: dict[str, Any]) -> str:
    e = d.get("embedding", {})
    return (f"{e.get('backend', '?')}, perplexity {e.get('perplexity', '?')}, seed "
            f"{e.get('seed', '?')}, KL divergence {e.get('kl_divergence', float('nan')):.3f}")


def _alt(run: Run, name: str) -> str:
    return {"grid.png": f"adversarial examples of {run.title}: label -> prediction",
            "fooling.png": f"fooling images evolved for {run.title}, one per class",
            "examples.png": f"clean and adversarial examples of {run.title}",
            "dadc.png": f"accuracy per DADC round of {run.title}, DADC and control arm, on "
                        f"each evaluation set, and the fooling rate per round",
            "tsne.png": f"t-SNE of {run.title}'s features: clean test images, adversarial "
                        f"examples and both, coloured by true class"}.get(
        name, f"{name} of {run.title}")


def _attack_examples(run: Run) -> str:
    """Clean / adversarial / perturbation grid from ``adversarial.safetensors`` (runs that
    stored the clean images), or a sentence saying why it is absent."""
    path = run.path / "adversarial.safetensors"
    try:
        from safetensors.torch import load_file

        t = load_file(str(path))
        x, x_adv = t["x"], t["x_adv"]
        labels, preds, conf = t["labels"], t["predictions"], t["confidence"]
    except KeyError:
        return ("<p>adversarial.safetensors has no clean images (written by an earlier "
                "version): only the grid of adversarial images is shown.</p>")
    except Exception as e:  # a missing or corrupt file is named, never a traceback
        return f"<p>{_e(path.name)} cannot be read ({_e(type(e).__name__)}: {_e(e)}).</p>"
    from reports.figures import attack_examples_png

    names = run.data.get("model", {}).get("classes") or []
    png = attack_examples_png(x, x_adv, labels.tolist(), preds.tolist(), conf.tolist(),
                              class_names=names)
    what = f"{run.data.get('attack_name', 'the attack')} at eps {run.data.get('eps')}"
    return (f'<figure><img src="{_png_data_uri(png)}" alt="clean images, their adversarial '
            f'versions and the perturbations for {_e(what)}"><figcaption>{_e(what)}: the first '
            f"test images (top, true label), their adversarial versions (middle, the model's "
            f"prediction and its softmax confidence; red: fooled) and the perturbation "
            f"x_adv - x (bottom, symmetric colour scale).</figcaption></figure>")


def _caption(run: Run, name: str) -> str:
    """What a run's own figure shows and how it was measured."""
    d = run.data
    if name == "tsne.png":
        e = d.get("embedding", {})
        return (f"{name}: 2-D t-SNE ({e.get('backend', '?')}, perplexity "
                f"{e.get('perplexity', '?')}, seed {e.get('seed', '?')}) of the {d.get('layer')} "
                f"features of {d.get('counts', {}).get('clean', '?')} clean test images and "
                f"{d.get('counts', {}).get('adversarial', '?')} successful {d.get('attack')} "
                f"eps {d.get('eps')} adversarial examples. Distances in the map are not "
                f"meaningful; the low-density scores above are measured in feature space.")
    if name == "grid.png":
        return (f"{name}: the first adversarial examples of {d.get('attack_name', 'the attack')} "
                f"at eps {d.get('eps')}, titled true label -> prediction ('ok' = fooled).")
    if name == "fooling.png":
        return (f"{name}: one image per class evolved from noise (MAP-Elites) until the model "
                f"gives it >= {d.get('target_confidence', '?')} confidence.")
    if name == "examples.png":
        return f"{name}: clean images and their adversarial versions, with the predictions."
    if name == "dadc.png":
        threat = d.get("evaluation_attack") or {}
        how = (f"; fixed and fresh sets: {threat.get('attack')} at eps {threat.get('eps')} "
               f"({threat.get('norm')})") if threat else ""
        return (f"{name}: accuracy per round of the DADC arm (trained on what fooled it) and "
                f"the control arm (as many standard examples), 95% Wilson bands, on each "
                f"evaluation set{how}; last panel: the fraction of the source's tries that "
                f"fooled the current model, and the examples each arm added so far.")
    return name


def render_page(runs: Sequence[Run], paired: Sequence[PairedComparison],
                unpaired: Sequence[Unpaired], *, title: str = "Robustness report") -> str:
    """The whole page as one self-contained HTML string."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
             f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f"<p>{len(runs)} run(s): " + ", ".join(
                 f"<code>{_e(r.title)}</code> ({_e(r.kind)})" for r in runs) + "</p>"]
    # Verdict first: what is most robust, which differences are real, what not to trust.
    parts.append('<section id="verdict"><h2>Verdict</h2><div class="verdict">')
    lines = verdict_lines(runs, paired, unpaired)
    parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>"
                 if lines else "<p>No evaluated run: nothing to rank (see the runs below).</p>")
    parts.append("</div>")
    found = [f for f in findings_of(runs) if f[1] in ("warning", "error")]
    if found:
        parts.append('<div class="verdict warn"><p><strong>Do not trust these numbers yet:</strong>'
                     "</p><ul>" + "".join(
                         f"<li><span class=\"bad\">{_e(sev)}</span> <code>{_e(check)}</code> "
                         f"({_e(who)}): {_e(msg)}</li>" for who, sev, check, msg in found)
                     + "</ul></div>")
    else:
        parts.append('<p class="ok">No sanity check raised a warning or an error.</p>')
    problems = [(r.title, p) for r in runs for p in r.problems]
    if problems:
        parts.append("<p><strong>Missing or unreadable:</strong></p><ul>" + "".join(
            f"<li>{_e(t)}: {_e(p)}</li>" for t, p in problems) + "</ul>")
    parts.append("</section>")

    png = accuracy_vs_eps_png(runs)
    if png is not None:
        parts.append('<section id="curves"><h2>Robust accuracy vs eps</h2><figure>'
                     f'<img src="{_png_data_uri(png)}" alt="worst-case robust accuracy against '
                     f'eps for every evaluated run, with 95% confidence bands">'
                     "<figcaption>Per-sample worst case across each run's attacks; bands are 95% "
                     "Wilson intervals.</figcaption></figure></section>")
    if paired or unpaired:
        parts.append('<section id="comparisons"><h2>Paired comparisons</h2><p>Per sample, on '
                     "the samples where two runs disagree (exact two-sided sign test); "
                     "significant at p &lt; 0.05.</p>")
        if paired:
            parts.append(_html_table(
                ["a", "b", "attack", "norm", "eps", "acc a", "acc b", "only a", "only b", "p",
                 "significant"],
                [[c.a, c.b, c.attack, c.norm, c.eps, c.accuracy_a, c.accuracy_b, c.a_only,
                  c.b_only, f"{c.p_value:.3g}", "yes" if c.significant else "no"]
                 for c in paired]))
        if unpaired:
            parts.append("<p>Shown side by side, not paired:</p><ul>" + "".join(
                f"<li>{_e(u.a)} vs {_e(u.b)}: {_e(u.reason)}</li>" for u in unpaired)
                + "</ul>")
        parts.append("</section>")
    parts.append('<section id="runs"><h2>Runs</h2>')
    for run in runs:
        parts.append(f"<h3>{_e(run.title)} <small>({_e(run.kind)}, {_e(run.path)})</small></h3>")
        if run.report is not None:
            r = run.report
            parts.append(f"<p>Clean accuracy {r.clean_accuracy:.3f} on {r.n_samples} samples.</p>")
            parts.append(_html_table(REPORT_HEADERS, _report_rows(run)))
            attack_png = per_attack_png(run)
            if attack_png is not None:
                parts.append(
                    f'<figure><img src="{_png_data_uri(attack_png)}" alt="robust accuracy '
                    f'against eps for each attack of {_e(run.title)} and their worst case">'
                    f"<figcaption>Robust accuracy of {_e(run.title)} per attack and the "
                    f"per-sample worst case, against eps, on {r.n_samples} test images "
                    f"(a sample counts only if classified correctly and not broken); bands: "
                    f"95% Wilson intervals; dotted: clean accuracy.</figcaption></figure>")
        else:
            rows = _summary_rows(run)
            if rows:
                parts.append(_html_table(["measure", "value"], rows))
        if run.kind == "experiment":
            from reports.experiment_figures import accuracy_vs_members_png

            png = accuracy_vs_members_png(run.data)
            if png is not None:
                n_img = run.data.get("n_images", {})
                parts.append(
                    f'<figure><img src="{_png_data_uri(png)}" alt="accuracy against the number '
                    f'of ensemble members per aggregation, clean, under transfer and under '
                    f'adaptive attack, for {_e(run.title)}"><figcaption>Clean, transfer and '
                    f'adaptive accuracy against N per sampling and aggregation (95% Wilson '
                    f'intervals as bars) on {_e(n_img.get("clean_and_transfer", "?"))} test '
                    f'images ({_e(n_img.get("adaptive", "?"))} for the adaptive attack); grey: '
                    f'the best and the mean single member under transfer; last panel, where '
                    f'stored: every single member\'s clean and transfer accuracy (box: '
                    f'quartiles).</figcaption>'
                    f'</figure>')
        if run.kind == "attack":
            parts.append(_attack_examples(run))
        if run.kind == "dadc":
            from reports.dadc import dadc_headers, dadc_rows

            parts.append(_html_table(dadc_headers(run.data), dadc_rows(run.data)))
        for name, path in sorted(run.files.items()):
            try:
                uri = _png_data_uri(Path(path).read_bytes())
            except OSError as e:
                parts.append(f"<p>{_e(name)} could not be read: {_e(e)}</p>")
                continue
            parts.append(f'<figure><img src="{uri}" alt="{_e(_alt(run, name))}">'
                         f"<figcaption>{_e(_caption(run, name))}</figcaption></figure>")
    parts.append("</section></body></html>")
    return "\n".join(parts)


def page_markdown(runs: Sequence[Run], paired: Sequence[PairedComparison],
                  unpaired: Sequence[Unpaired], *, title: str = "Robustness report") -> str:
    """The page's content as Markdown (no images)."""
    lines = [f"# {title}", "", "## Verdict", ""]
    verdict = verdict_lines(runs, paired, unpaired)
    lines += [f"- {line}" for line in verdict] or ["- No evaluated run."]
    found = [f for f in findings_of(runs) if f[1] in ("warning", "error")]
    lines += ["", "Do not trust these numbers yet:" if found else
              "No sanity check raised a warning or an error."]
    lines += [f"- **{sev}** `{check}` ({who}): {msg}" for who, sev, check, msg in found]
    lines += [f"- missing ({r.title}): {p}" for r in runs for p in r.problems]
    if paired or unpaired:
        lines += ["", "## Paired comparisons", ""]
        lines += [f"- {c.sentence()}" for c in paired]
        lines += [f"- not paired: {u.a} vs {u.b}: {u.reason}" for u in unpaired]
    lines += ["", "## Runs", ""]
    for run in runs:
        lines += [f"### {run.title} ({run.kind})", ""]
        if run.report is not None:
            lines += [markdown_table(REPORT_HEADERS, _report_rows(run)), ""]
        else:
            rows = _summary_rows(run)
            if rows:
                lines += [markdown_table(["measure", "value"], rows), ""]
    return "\n".join(lines) + "\n"


__all__ = [
    "accuracy_vs_eps_png",
    "curves",
    "findings_of",
    "page_markdown",
    "per_attack_png",
    "render_page",
    "verdict_lines",
]
