"""``robustness evaluate``: a checkpoint against attacks x eps, with the sanity checks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustness.cli.common import (
    add_checkpoint_option,
    add_data_options,
    add_n_option,
    add_out_option,
    add_seed_option,
    add_split_seed_option,
    load_data,
    test_images,
)
from robustness.core.argtypes import number_list


def add_evaluate_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness evaluate`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate", help="evaluate a checkpoint against attacks x eps, with sanity checks",
        description="Run every attack at every eps on a checkpoint, compute per-attack and "
                    "per-sample worst-case robust accuracy with 95% Wilson intervals, run the "
                    "honest-evaluation sanity checks, and write OUT/report.json and "
                    "OUT/report.md. Exit status 0 even if findings are raised (read them).")
    add_checkpoint_option(p)
    add_data_options(p)
    p.add_argument("--attacks", required=True,
                   help="comma-separated attacks, run in order, with optional arguments in "
                        "parentheses: e.g. 'fgsm,pgd(steps=20),genetic,torchattacks:CW(c=1)'")
    p.add_argument("--eps", required=True, type=number_list,
                   help="comma-separated budgets in each attack's norm, e.g. 0.1,0.2,0.3")
    add_n_option(p, "evaluate")
    add_seed_option(p, "the attacks and the data split (the checkpoint's own split when --data is "
                       "its training set, so no training image is tested)")
    add_split_seed_option(p)
    p.add_argument("--source-model", type=Path, default=None,
                   help="craft the adversarial examples on this checkpoint instead and "
                        "evaluate their transfer to --model (threat model 'transfer')")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the sanity checks (not recommended)")
    add_out_option(p)
    return p


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``robustness evaluate``: all-or-nothing into ``--out``."""
    from robustness.core.io import run_directory

    with run_directory(args.out, overwrite=args.overwrite) as out:
        return _evaluate(args, out)


def _evaluate(args: argparse.Namespace, out: Path) -> int:
    from attacks.registry import parse_attack_list
    from reports.markdown import write_report
    from robustness.checkpoint import load_checkpoint
    from robustness.core.validation import invalid
    from robustness.evaluation import evaluate, plan

    # The attacks first: a typo fails in a second, before the checkpoint and data load.
    specs = parse_attack_list(args.attacks, owner="robustness evaluate", name="--attacks")
    for spec in specs:
        if "eps" in spec.kwargs:
            raise invalid("robustness evaluate", "--attacks", f"attack specs without their own "
                          f"eps (the budgets come from --eps "
                          f"{','.join(f'{e:g}' for e in args.eps)})", spec.label)
    plan(specs, args.eps, n_attacked=0, seed=args.seed)

    model, meta = load_checkpoint(args.model)
    source = None
    if args.source_model is not None:
        source, source_meta = load_checkpoint(args.source_model)
        if tuple(source_meta.input_shape) != tuple(meta.input_shape):
            raise invalid("robustness evaluate", "--source-model", f"a checkpoint with input "
                          f"shape {meta.input_shape} like --model",
                          f"input shape {source_meta.input_shape}", raw=True)
    data = load_data(args, meta)
    if data.input_shape != tuple(meta.input_shape):
        raise invalid("robustness evaluate", "--data", f"images of shape {meta.input_shape} "
                      f"(the checkpoint's input shape)", f"{data.name} with images of shape "
                      f"{data.input_shape}", raw=True)
    n = test_images(args, data, "evaluate")
    print(f"Evaluating {args.model} ({meta.architecture}, trained on {meta.dataset}) on "
          f"{n} {data.name} test images:")
    report = evaluate(model, data, specs, args.eps, n=n,
                      seed=args.seed, checks=not args.no_checks, source_model=source,
                      model_info={"checkpoint": str(args.model), **meta.to_dict()}, echo=print)
    write_report(report, out)
    from reports.page import write_run_page

    write_run_page(out, name=args.out.name)  # the same page `robustness report` makes
    path = args.out / "report.json"
    print()
    print(f"Clean accuracy {report.clean_accuracy:.3f} on {report.n_samples} samples.")
    print(report.table())
    for f in report.findings:
        print(f"[{f.severity}] {f.check}: {f.message}")
    if not report.findings:
        print("No sanity check raised a finding.")
    print(f"Wrote {path}, {path.with_suffix('.md')}, report.html and samples.safetensors")
    return 0
