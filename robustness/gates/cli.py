"""``robustness gate GATES.toml``: robustness gates for CI systems without pytest.

Exit status: 0 every gate passed, 1 a gate failed its threshold or regressed against the
baseline, 2 configuration error (unreadable TOML, unknown key, missing checkpoint,
untrained model, data that does not fit the model, a sample too small for the threshold),
3 a gate met its thresholds but is unverified: a sanity check raised a finding that says
its numbers cannot be trusted (accept one explicitly with ``allow_findings``).
``--junit-xml`` and ``--json`` write the results for the CI system, also when the
configuration is wrong. The file's schema is
in :mod:`robustness.gates.config`. Precedence: a gate's own keys, then command-line
options, then ``[defaults]``.

This module is torch-free at import (``robustness --help`` stays instant); the work is
imported when the gates run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from robustness.core.argtypes import fraction, positive_int, seed
from robustness.core.backend import Backend, add_backend_options, backend_from_args
from robustness.gates.artifacts import junit_xml, results_document
from robustness.gates.baseline import Baseline, RobustnessRegression
from robustness.gates.config import load_gate_file
from robustness.gates.errors import GateConfigError
from robustness.gates.gate import BUDGETS, Gate, GateResult, PreparedGate, Resources, error_result
from robustness.gates.threshold import RULES

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNVERIFIED = 0, 1, 2, 3


def add_gate_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness gate`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "gate", help="check robustness gates from a TOML file (exit 0 pass, 1 fail, 2 config "
                     "error, 3 unverified)",
        description="Evaluate every gate of a TOML file (checkpoints, data, attacks, eps, "
                    "thresholds) and judge its thresholds. Exit status 0 when every gate "
                    "passed, 1 when a gate failed or regressed against the baseline, 2 on a "
                    "configuration error (including a sample too small for a threshold), 3 "
                    "when a gate met its thresholds but a sanity-check finding says its numbers "
                    "cannot be trusted (accept it with allow_findings). Precedence: a gate's "
                    "keys, then these options, then the file's [defaults].")
    p.add_argument("config", type=Path, metavar="GATES.toml",
                   help="the gate file (see robustness.gates.config for the schema)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="write every gate's figures, verdicts and full report as JSON")
    p.add_argument("--junit-xml", type=Path, default=None, metavar="PATH",
                   help="write a JUnit XML report (one testcase per gate) for the CI system")
    p.add_argument("--budget", choices=tuple(BUDGETS), default=None,
                   help="attack preset of gates that name no attacks: 'fast' (FGSM + 10-step "
                        "PGD, 500 images) or 'standard' (+40-step PGD x2 restarts, genetic; "
                        "1000 images) (default: [defaults] budget, else fast)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="test images per gate (default: [defaults] n, else the budget's)")
    p.add_argument("--seed", type=seed, default=None,
                   help="seed of the attacks (default: [defaults] seed, else 0)")
    p.add_argument("--rule", choices=tuple(RULES), default=None,
                   help="'upper': fail only when even the 95%% CI upper bound is below the "
                        "threshold; 'point': fail when the point estimate is (default: "
                        "[defaults] rule, else upper)")
    p.add_argument("--max-drop", type=fraction, default=None, metavar="DROP",
                   help="allowed drop from the baseline for thresholds without max_drop "
                        "(default: [defaults] max_drop, else 0)")
    p.add_argument("--baseline", type=Path, default=None, metavar="PATH",
                   help="baseline JSON file to compare with (default: [defaults] baseline)")
    p.add_argument("--update-baseline", action="store_true",
                   help="record this run's figures in the baseline instead of comparing")
    p.add_argument("--gate", action="append", default=None, metavar="NAME", dest="only",
                   help="run only this gate (repeatable)")
    add_backend_options(p, "each gate's attacks (one task per attack x eps x 500 images)")
    return p


def cmd_gate(args: argparse.Namespace) -> int:
    """``robustness gate``: returns the exit status (config errors raise GateConfigError)."""
    from robustness.core.io import check_output_file

    # Output paths first: a result that cannot be written is known before any work.
    for option, path in (("--json", args.json), ("--junit-xml", args.junit_xml)):
        if path is not None:
            check_output_file(path, option=option)
    backend = backend_from_args(args, "gate")  # Ray missing: before any gate loads
    try:
        gate_file = load_gate_file(args.config, budget=args.budget, n=args.n, seed=args.seed,
                                   rule=args.rule, max_drop=args.max_drop,
                                   baseline=args.baseline, only=args.only)
        if args.update_baseline and gate_file.baseline is None:
            raise GateConfigError("--update-baseline needs a baseline file: --baseline PATH or "
                                  "baseline = \"...\" under [defaults].")
        if args.update_baseline and gate_file.baseline is not None:
            check_output_file(gate_file.baseline, option="--baseline")  # before any work
        baseline = Baseline(gate_file.baseline) if gate_file.baseline is not None else None
    except GateConfigError as e:
        _write_outputs(args, [], None, False, config_error=str(e))
        raise

    started = time.perf_counter()
    resources = Resources()
    # Prepare every gate before running any: a broken gate file fails in seconds.
    prepared, errors = {}, []
    for gate in gate_file.gates:
        try:
            prepared[gate.name] = gate.prepare(resources=resources)
        except GateConfigError as e:
            errors.append(error_result(gate, e))
    if errors:
        _write_outputs(args, errors, baseline, False)
        for r in errors:
            print(f"robustness gate: error: {r.error}", file=sys.stderr)
        return EXIT_CONFIG

    compare = None if args.update_baseline else baseline
    results: list[GateResult] = []
    try:
        for gate in gate_file.gates:
            results.append(_run_gate(gate, prepared[gate.name], compare, backend))
    finally:
        backend.close()


    if args.update_baseline and baseline is not None:
        for result in results:
            baseline.record(result)
        baseline.save()
    _write_outputs(args, results, baseline, args.update_baseline)
    return _report(results, baseline, args, time.perf_counter() - started)


def _run_gate(gate: Gate, prepared: PreparedGate, compare: Baseline | None,
              backend: Backend) -> GateResult:
    """One gate, with its progress lines and verdict printed."""
    print(f"gate {gate.name}: {', '.join(gate.attack_specs)} at eps "
          f"{', '.join(f'{e:g}' for e in gate.eps)} on {len(prepared.x)} images")
    try:
        result = gate.evaluate(prepared, baseline=compare, echo=print, backend=backend)
    except GateConfigError as e:
        result = error_result(gate, e)
    print(f"{result.status.upper()}: {gate.name}: {result.summary()}")
    if result.status != "passed":
        print(_indent(result.explain()))
    elif result.accepted_findings:
        print(_indent(result.findings_text()))
    print()
    return result


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" if line else "" for line in text.splitlines())


def _report(results: list[GateResult], baseline: Baseline | None, args: argparse.Namespace,
            seconds: float) -> int:
    counts = {s: sum(r.status == s for r in results)
              for s in ("passed", "failed", "regressed", "unverified", "error")}
    print(f"{len(results)} gate(s) in {seconds:.1f} s: " +
          ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    if baseline is not None:
        if args.update_baseline:
            print(f"baseline: recorded {sum(r.report is not None for r in results)} gate(s) in "
                  f"{baseline.path}")
        elif not baseline.exists:
            print(f"baseline: {baseline.path} does not exist; nothing compared (create it with "
                  f"--update-baseline)")
        else:
            print(f"baseline: {baseline.path}: {sum(r.compared for r in results)} of "
                  f"{len(results)} gate(s) compared")
    regressions = [g for r in results for g in r.regressions]
    if regressions and baseline is not None:
        print(f"RobustnessRegression: {RobustnessRegression(regressions, baseline.path)}")
    for path in (args.json, args.junit_xml):
        if path is not None:
            print(f"wrote {path}")
    if counts["error"]:
        for r in results:
            if r.error is not None:
                print(f"robustness gate: error: {r.error}", file=sys.stderr)
        return EXIT_CONFIG
    if counts["failed"] or counts["regressed"]:
        return EXIT_FAILED
    return EXIT_UNVERIFIED if counts["unverified"] else EXIT_OK


def _write_outputs(args: argparse.Namespace, results: list[GateResult],
                   baseline: Baseline | None, updated: bool, config_error: str | None = None
                   ) -> None:
    try:
        _write_files(args, results, baseline, updated, config_error)
    except OSError as e:
        from robustness.core.io import OutputError

        raise OutputError(f"The gate results could not be written: {e}") from None


def _write_files(args: argparse.Namespace, results: list[GateResult], baseline: Baseline | None,
                 updated: bool, config_error: str | None) -> None:
    from robustness.core.io import write_json, write_text

    if args.json is not None:
        doc = results_document(results, baseline=baseline, baseline_updated=updated,
                               source=str(args.config))
        if config_error is not None:
            doc["passed"] = False
            doc["error"] = config_error
        write_json(args.json, doc)
    if args.junit_xml is not None:
        from xml.etree import ElementTree as ET

        root = junit_xml(results, suite=args.config.stem, config_error=config_error)
        ET.indent(root)
        text = ET.tostring(root, encoding="unicode", xml_declaration=True)
        write_text(args.junit_xml, text + "\n")


__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "EXIT_UNVERIFIED", "add_gate_parser",
           "cmd_gate"]
