"""Markdown documents: the summaries written beside every run's JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from robustness.core.io import write_text
from robustness.core.text import markdown_table
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


def demo_markdown(report: RobustnessReport, table: str) -> str:
    """The demo's ``results.md``: clean accuracy, the attack table, the worst case, findings."""
    worst = ", ".join(f"{w.norm} eps {w.eps:g}: {w.robust_accuracy:.3f} [{w.ci_low:.3f}, "
                      f"{w.ci_high:.3f}]"
                      for w in report.worst_case)
    lines = ["# Demo: reference ConvNet on mnist", "",
             f"Clean accuracy {report.clean_accuracy:.3f} on {report.n_samples} test images.",
             "", table, "", f"Per-sample worst case over our attacks (95% CI): {worst}.", "",
             *findings_markdown(report)]
    return "\n".join(lines) + "\n"


def write_report(report: RobustnessReport, directory: str | os.PathLike[str]) -> Path:
    """Write ``report.json`` and ``report.md`` into ``directory``; return the JSON path."""
    path = report.save(directory)
    write_text(Path(directory) / "report.md", report_markdown(report))
    return path


def _with_ci(value: float | None, ci: list[float] | None) -> str | None:
    """``0.310 [0.282, 0.340]``: an accuracy with its 95% interval (None stays None)."""
    if value is None or ci is None:
        return None
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def experiment_markdown(result: dict[str, Any]) -> str:
    """The ensemble experiment's ``results.md``: verdicts, single models, members, ensembles.

    ``result`` is the ``results.json`` document (see :mod:`ensembles.results`); every
    accuracy is shown with its 95% Wilson interval.
    """
    cfg, single, n_img = result["config"], result["single_models"], result["n_images"]
    published = result["published"]
    base, adv = single["baseline"], single["adversarially_trained"]
    pgd = f"PGD-{cfg['pgd_steps']} (own)"

    def measured(model: dict[str, Any], key: str) -> str | None:
        return _with_ci(model[key], model[f"{key}_ci"])

    def eps_of(model: dict[str, Any], key: str) -> float | None:
        return model.get("eps", {}).get(key, cfg["eps"])

    p_eps = published.get("eps", {})

    findings = [f"- {model}: **{f['severity']}** `{f['check']}`: {f['message']}"
                for model, found in result["findings"].items() for f in found]
    findings += [f"- {r['sampling']} N={r['n_members']} {r['aggregation']}: **{f['severity']}** "
                 f"`{f['check']}`: {f['message']}" for r in result["ensembles"]
                 for f in r["findings"]]
    lines = [
        "# Ensembles against adversarial examples, re-measured",
        "",
        f"Data `{cfg['data']}`; FGSM/PGD/genetic L-inf eps {cfg['eps']}; adversarial training "
        f"FGSM eps {cfg['train_eps']} (its own FGSM adversarials at that eps, as published); "
        f"single models trained with the '{cfg.get('recipe', 'harness')}' recipe, members "
        f"{cfg['epochs']} epochs ({cfg['precision']}); seed {cfg['seed']}. Images: "
        f"{n_img['clean_and_transfer']} for clean and transfer, {n_img['adaptive']} for "
        f"adaptive PGD-{cfg['pgd_steps']}, {n_img['genetic']} for the genetic attack "
        f"(population {cfg['population']}, <= {cfg['generations']} generations, ensembles of "
        f"N = {', '.join(map(str, cfg['genetic_members']))} only). Every number comes from "
        f"`evaluate()`: robust accuracy counts a sample only if it is classified correctly "
        f"and the attack fails; [a, b] is its 95% Wilson interval. "
        f"Run time {result['seconds'] / 60:.1f} min.",
        "",
        "## Verdicts",
        "",
        *(f"- {v['line']}" for v in result["verdicts"].values()),
        "",
        "## Sanity checks",
        "",
        *(findings or ["No sanity check raised a finding (checks run on the single models "
                       "and on the largest ensembles under the adaptive attack)."]),
        "",
        "## Single models",
        "",
        markdown_table(["model", "measure", "eps", "ours [95% CI]", "published",
                        "published eps"], [
            ["baseline", "clean", None, measured(base, "clean"), published["baseline_clean"],
             None],
            ["baseline", "FGSM (own)", eps_of(base, "fgsm_own"), measured(base, "fgsm_own"),
             published["baseline_fgsm"], p_eps.get("baseline_fgsm")],
            ["baseline", pgd, eps_of(base, "pgd_own"), measured(base, "pgd_own"), None, None],
            ["FGSM-trained", "clean", None, measured(adv, "clean"), published["adv_clean"],
             None],
            ["FGSM-trained", "baseline's FGSM adversarials",
             eps_of(adv, "on_baseline_adversarials"), measured(adv, "on_baseline_adversarials"),
             published["adv_on_baseline_adversarials"],
             p_eps.get("adv_on_baseline_adversarials")],
            ["FGSM-trained", "FGSM (own)", eps_of(adv, "fgsm_own"), measured(adv, "fgsm_own"),
             published["adv_own_fgsm"], p_eps.get("adv_own_fgsm")],
            ["FGSM-trained", pgd, eps_of(adv, "pgd_own"), measured(adv, "pgd_own"), None, None],
        ]),
        "",
        "Where the setting differs from the original's, ours is a re-measurement, not a "
        "reproduction:",
        "",
        markdown_table(["aspect", "original", "this run"],
                       [[d["aspect"], d["original"], d["here"]]
                        for d in published.get("differences", [])]),
        "",
        "## Members (transfer = FGSM crafted on the baseline)",
        "",
        markdown_table(["sampling", "N", "best member transfer", "published",
                        "mean member transfer", "mean member clean"],
                       [[m["sampling"], m["n_members"],
                         _with_ci(m["best_member_transfer"], m["best_member_transfer_ci"]),
                         published["best_member"] if m["n_members"] == 50 else None,
                         m["mean_member_transfer"], m["mean_member_clean"]]
                        for m in result["members"]]),
        "",
        "## Ensembles",
        "",
        "Accuracy (higher is more robust). *transfer*: FGSM crafted on the baseline, the "
        "original setting; *published*: the original's number for that setting (its "
        "\"bootstrapped\" ensembles were 80% subsamples; bugs inflated its max numbers, see "
        "REFERENCE.md §1). *adaptive*: per-sample worst case of end-to-end PGD on the "
        "deployed aggregation and PGD on the logit-mean surrogate. *genetic*: GenAttack on "
        "that aggregation's scores (budget-limited, so an upper bound on robustness; `-` = "
        "not run for this N).",
        "",
        markdown_table(
            ["N", "sampling", "+baseline", "aggregation", "clean", "transfer", "published",
             "adaptive", "genetic"],
            [[r["n_members"], r["sampling"], "yes" if r["with_baseline"] else "no",
              r["aggregation"], _with_ci(r["clean"], r["clean_ci"]),
              _with_ci(r["transfer"], r["transfer_ci"]), r["published_transfer"],
              _with_ci(r["adaptive"], r["adaptive_ci"]), _with_ci(r["genetic"], r["genetic_ci"])]
             for r in result["ensembles"]]),
        "",
    ]
    return "\n".join(lines)
