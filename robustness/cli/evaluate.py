"""``robustness evaluate``: a checkpoint against attacks x eps, with the sanity checks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.cli.common import (
    add_checkpoint_option,
    add_data_options,
    add_n_option,
    add_out_option,
    add_seed_option,
    add_split_seed_option,
    as_typed,
    load_model_and_data,
    test_images,
)
from robustness.core.argtypes import budget_list
from robustness.core.backend import add_backend_options, backend_from_args

if TYPE_CHECKING:
    from attacks.registry import AttackSpec
    from robustness.core.backend import Backend


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
    p.add_argument("--eps", required=True, type=budget_list,
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
    p.add_argument("--cascade", action="store_true",
                   help="attack in a cascade, as AutoAttack does: each attack only on the "
                        "samples the earlier ones (of its norm) left robust at that eps. The "
                        "worst case is the same measurement for less work; each per-attack "
                        "row becomes a cascade row (robust against that attack and every "
                        "earlier one), and the checks that compare attacks with each other "
                        "are limited (a finding says which)")
    add_backend_options(p, "the attacks (one task per attack x eps x 500 images)")
    p.add_argument("--resume-dir", type=Path, default=None, metavar="DIR",
                   help="keep every finished attack x eps x shard in DIR as it ends (whichever "
                        "backend ran it), so this command re-run after a crash attacks only "
                        "what is missing")
    add_out_option(p)
    return p


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``robustness evaluate``: all-or-nothing into ``--out``."""
    from robustness.core.io import run_directory

    with run_directory(args.out, overwrite=args.overwrite) as out:
        return _evaluate(args, out)


def _evaluate(args: argparse.Namespace, out: Path) -> int:
    from attacks.registry import parse_attack_list
    from robustness.core.validation import invalid
    from robustness.evaluation import plan

    # The attacks first: a typo fails in a second, before the checkpoint and data load.
    specs = parse_attack_list(args.attacks, owner="robustness evaluate", name="--attacks")
    for spec in specs:
        if "eps" in spec.kwargs:
            raise invalid("robustness evaluate", "--attacks", f"attack specs without their own "
                          f"eps (the budgets come from --eps "
                          f"{','.join(f'{e:g}' for e in args.eps)})", spec.label)
    with as_typed(f"--attacks {args.attacks!r}",
                  f"--eps {','.join(f'{e:g}' for e in args.eps)}"):
        plan(specs, args.eps, n_attacked=0, seed=args.seed)

    if args.resume_dir is not None and args.resume_dir.exists() and not args.resume_dir.is_dir():
        raise invalid("robustness evaluate", "--resume-dir", "a directory (or a path to create "
                      "one at)", f"{args.resume_dir}, a file", raw=True)
    backend = backend_from_args(args, "evaluate")  # Ray missing: before the model loads
    try:
        return _run(args, out, specs, backend)
    finally:
        backend.close()


def _run(args: argparse.Namespace, out: Path, specs: list[AttackSpec], backend: Backend) -> int:
    from reports.markdown import write_report
    from robustness.evaluation import evaluate

    loaded, data = load_model_and_data(args, "evaluate")
    assert data is not None
    source = None
    if args.source_model is not None:
        from robustness.model_source import load_model, probe

        with as_typed(f"--source-model {args.source_model}"):
            src = load_model(str(args.source_model), owner="robustness evaluate",
                             option="--source-model")
        probe(src, data.x_test, data.num_classes, owner="robustness evaluate",
              option="--source-model")
        source = src.model
    n = test_images(args, data, "evaluate")
    meta = loaded.meta
    what = f"{meta.architecture}, trained on {meta.dataset or 'its own data'}" if meta else \
        type(loaded.model).__name__
    print(f"Evaluating {args.model} ({what}) on {n} {data.name} test images:")
    report = evaluate(loaded.model, data, specs, args.eps, n=n,
                      seed=args.seed, checks=not args.no_checks, source_model=source,
                      model_info=loaded.info, echo=print, backend=backend,
                      resume_dir=args.resume_dir, cascade=args.cascade)
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
