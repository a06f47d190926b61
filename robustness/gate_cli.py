"""``robustness gate GATES.toml``: robustness gates for CI systems without pytest.

Exit status: 0 every gate passed, 1 a gate failed its threshold or regressed against the
baseline, 2 configuration error (unreadable TOML, unknown key, missing checkpoint,
untrained model, data that does not fit the model). ``--junit-xml`` and ``--json`` write
the results for the CI system, also when the configuration is wrong.

The TOML schema (paths are relative to the TOML file)::

    [defaults]                     # optional; inherited by every gate
    budget = "fast"                # "fast" | "standard"
    n = 500                        # test images (default: the budget's)
    seed = 0
    rule = "upper"                 # "upper" | "point"
    max_drop = 0.0                 # baseline tolerance of thresholds without max_drop
    baseline = "robustness-baseline.json"

    [[gate]]
    name = "convnet-mnist"                 # required, unique
    model = "model/model.safetensors"      # required: a checkpoint (file or run directory)
    data = "mnist"                         # default: the checkpoint's dataset
    attacks = ["fgsm", "pgd(steps=10)"]    # default: the budget's
    eps = 0.1
    robust_accuracy = 0.5                  # minimum (and/or max_drop)
    attack = "pgd"                         # default: worst case across attacks
    max_drop = 0.05
    rule = "upper"

    [[gate.thresholds]]                    # optional further thresholds of this gate
    eps = 0.2
    robust_accuracy = 0.1

Precedence: a gate's own keys, then command-line options, then ``[defaults]``.

This module is torch-free at import (``robustness --help`` stays instant, and the pytest
plugin shares its argument types); the work is imported inside :func:`cmd_gate`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.core.argtypes import fraction, non_negative_int, positive_int

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from robustness.gates import Baseline, Gate, GateResult

BUDGET_NAMES = ("fast", "standard")  # = robustness.gates.BUDGETS (tests check it)
RULE_NAMES = ("upper", "point")  # = robustness.gates.RULES
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DEFAULTS_KEYS = ("budget", "n", "seed", "rule", "max_drop", "baseline")
TOP_KEYS = ("defaults", "gate")


def add_gate_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness gate`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "gate", help="check robustness gates from a TOML file (exit 0 pass, 1 fail, 2 config "
                     "error)",
        description="Evaluate every gate of a TOML file (checkpoints, data, attacks, eps, "
                    "thresholds) and judge its thresholds. Exit status 0 when every gate "
                    "passed, 1 when a gate failed or regressed against the baseline, 2 on a "
                    "configuration error. Precedence: a gate's keys, then these options, then "
                    "the file's [defaults].")
    p.add_argument("config", type=Path, metavar="GATES.toml",
                   help="the gate file (see robustness.gate_cli for the schema)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="write every gate's figures, verdicts and full report as JSON")
    p.add_argument("--junit-xml", type=Path, default=None, metavar="PATH",
                   help="write a JUnit XML report (one testcase per gate) for the CI system")
    p.add_argument("--budget", choices=BUDGET_NAMES, default=None,
                   help="attack preset of gates that name no attacks: 'fast' (FGSM + 10-step "
                        "PGD, 500 images) or 'standard' (+40-step PGD x2 restarts, genetic; "
                        "1000 images) (default: [defaults] budget, else fast)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="test images per gate (default: [defaults] n, else the budget's)")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the attacks (default: [defaults] seed, else 0)")
    p.add_argument("--rule", choices=RULE_NAMES, default=None,
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
    return p


@dataclass(frozen=True)
class GateFile:
    """A parsed gate file: its gates and the baseline path it names (if any)."""

    path: Path
    gates: list[Gate]
    baseline: Path | None


def load_gate_file(path: Path, args: argparse.Namespace) -> GateFile:
    """Parse and validate a gate file, command-line options overriding its ``[defaults]``.

    Raises
    ------
    GateConfigError
        Naming the file, the table and the key.
    """
    import tomllib

    from robustness.core.validation import ParameterError, check_float, check_int, invalid
    from robustness.gates import GateConfigError, GateDefaults, gate_from_mapping, unknown_key

    if not path.is_file():
        raise GateConfigError(f"No gate file at {path}: the file does not exist.")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GateConfigError(f"{path} is not valid TOML: {e}") from None
    base = path.resolve().parent
    for key in doc:
        if key not in TOP_KEYS:
            raise unknown_key(f"{path}", key, TOP_KEYS)
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise GateConfigError(f"{path}: [defaults] must be a table; got {defaults!r}.")
    for key in defaults:
        if key not in DEFAULTS_KEYS:
            raise unknown_key(f"{path} [defaults]", key, DEFAULTS_KEYS)
    owner = f"{path} [defaults]"
    try:
        d = GateDefaults(
            budget=_pick(args.budget, defaults.get("budget"), "fast"),
            n=_pick(args.n, check_int(owner, "n", defaults["n"], low=1)
                    if "n" in defaults else None, None),
            seed=_pick(args.seed, check_int(owner, "seed", defaults["seed"], low=0)
                       if "seed" in defaults else None, 0),
            rule=_pick(args.rule, defaults.get("rule"), "upper"),
            max_drop=_pick(args.max_drop, check_float(owner, "max_drop", defaults["max_drop"],
                                                      low=0.0, high=1.0)
                           if "max_drop" in defaults else None, 0.0))
        if d.budget not in BUDGET_NAMES:
            raise invalid(owner, "budget", f"one of {', '.join(map(repr, BUDGET_NAMES))}",
                          d.budget)
        if d.rule not in RULE_NAMES:
            raise invalid(owner, "rule", f"one of {', '.join(map(repr, RULE_NAMES))}", d.rule)
        baseline = args.baseline
        if baseline is None and "baseline" in defaults:
            if not isinstance(defaults["baseline"], str) or not defaults["baseline"].strip():
                raise invalid(owner, "baseline", "a path to a JSON file", defaults["baseline"])
            baseline = base / Path(os.path.expandvars(defaults["baseline"])).expanduser()
    except GateConfigError:
        raise
    except ParameterError as e:
        raise GateConfigError(str(e)) from None

    tables = doc.get("gate")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise GateConfigError(f"{path} must define at least one gate as a [[gate]] table with "
                              f"name, model, eps and robust_accuracy (or max_drop).")
    gates: list[Gate] = []
    for i, table in enumerate(tables):
        label = table.get("name", i)
        owner = f"{path} [[gate]] {label!r}"
        if "model" not in table:
            raise GateConfigError(f"{owner} has no 'model': name the trained checkpoint to "
                                  f"gate (e.g. model = \"model/model.safetensors\").")
        if not isinstance(table["model"], str) or not table["model"].strip():
            raise GateConfigError(str(invalid(owner, "model", "a checkpoint path (a string)",
                                              table["model"])))
        gates.append(gate_from_mapping(table, owner=owner, default_name=None, defaults=d,
                                       base_dir=base))
    names = [g.name for g in gates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GateConfigError(f"{path}: gate names must be unique (they key the baseline); "
                              f"repeated: {', '.join(duplicates)}.")
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            raise GateConfigError(f"--gate {unknown[0]!r} names no gate in {path}; gates: "
                                  f"{', '.join(names)}.")
        gates = [g for g in gates if g.name in args.only]
    return GateFile(path=path, gates=gates, baseline=baseline)


def _pick(cli: Any, file: Any, builtin: Any) -> Any:
    return cli if cli is not None else file if file is not None else builtin


def cmd_gate(args: argparse.Namespace) -> int:
    """``robustness gate``: returns the exit status (config errors raise GateConfigError)."""
    from robustness.gates import Baseline, GateConfigError, Resources, error_result

    try:
        gate_file = load_gate_file(args.config, args)
        if args.update_baseline and gate_file.baseline is None:
            raise GateConfigError("--update-baseline needs a baseline file: --baseline PATH or "
                                  "baseline = \"...\" under [defaults].")
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
    for gate in gate_file.gates:
        print(f"gate {gate.name}: {', '.join(gate.attack_specs)} at eps "
              f"{', '.join(f'{e:g}' for e in gate.eps)} on {len(prepared[gate.name].x)} images")
        try:
            result = gate.evaluate(prepared[gate.name], baseline=compare, echo=print)
        except GateConfigError as e:
            result = error_result(gate, e)
        results.append(result)
        print(f"{result.status.upper()}: {gate.name}: {result.summary()}")
        if result.status != "passed":
            print(_indent(result.explain()))
        print()

    if args.update_baseline and baseline is not None:
        for result in results:
            baseline.record(result)
        baseline.save()
    _write_outputs(args, results, baseline, args.update_baseline)
    return _report(results, baseline, args, time.perf_counter() - started)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" if line else "" for line in text.splitlines())


def _report(results: list[GateResult], baseline: Baseline | None, args: argparse.Namespace,
            seconds: float) -> int:
    counts = {s: sum(r.status == s for r in results)
              for s in ("passed", "failed", "regressed", "error")}
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
        from robustness.gates import RobustnessRegression

        print(f"RobustnessRegression: {RobustnessRegression(regressions, baseline.path)}")
    for path in (args.json, args.junit_xml):
        if path is not None:
            print(f"wrote {path}")
    if counts["error"]:
        for r in results:
            if r.error is not None:
                print(f"robustness gate: error: {r.error}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_FAILED if counts["failed"] or counts["regressed"] else EXIT_OK


def _write_outputs(args: argparse.Namespace, results: list[GateResult],
                   baseline: Baseline | None, updated: bool, config_error: str | None = None
                   ) -> None:
    from robustness.core.io import write_json, write_text
    from robustness.gates import results_document

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


def junit_xml(results: list[GateResult], *, suite: str,
              config_error: str | None = None) -> Element:
    """A JUnit ``<testsuites>`` tree: one ``<testcase>`` per gate.

    A failed threshold is a ``<failure type="GateFailure">``, a regression a
    ``<failure type="RobustnessRegression">``, a configuration error an
    ``<error type="GateConfigError">``; ``<system-out>`` carries the figures table.

    Parameters
    ----------
    results
        The gates' results.
    suite
        Name of the test suite (and class name of its test cases), e.g. the TOML file stem.
    config_error
        A configuration error that stopped the run before any gate: one erroring testcase.
    """
    from xml.etree import ElementTree as ET

    cases: list[tuple[str, float, str, str | None, str, str]] = []
    if config_error is not None:
        cases.append(("configuration", 0.0, "error", "GateConfigError", config_error, ""))
    for r in results:
        out = r.report.table() if r.report is not None else ""
        if r.status == "error":
            cases.append((r.gate.name, r.seconds, "error", "GateConfigError", r.error or "", out))
        elif r.status == "failed":
            cases.append((r.gate.name, r.seconds, "failure", "GateFailure", r.explain(), out))
        elif r.status == "regressed":
            text = "\n".join(g.message() for g in r.regressions)
            cases.append((r.gate.name, r.seconds, "failure", "RobustnessRegression", text, out))
        else:
            cases.append((r.gate.name, r.seconds, "", None, "", f"{r.summary()}\n\n{out}"))
    failures = sum(c[2] == "failure" for c in cases)
    errors = sum(c[2] == "error" for c in cases)
    total = f"{sum(c[1] for c in cases):.3f}"
    attrs = {"name": suite, "tests": str(len(cases)), "failures": str(failures),
             "errors": str(errors), "skipped": "0", "time": total}
    root = ET.Element("testsuites", attrs)
    ts = ET.SubElement(root, "testsuite", attrs)
    for name, seconds, kind, etype, text, out in cases:
        tc = ET.SubElement(ts, "testcase", {"classname": suite, "name": name,
                                            "time": f"{seconds:.3f}"})
        if kind:
            el = ET.SubElement(tc, kind, {"type": etype or "", "message": text.splitlines()[0]
                                          if text else ""})
            el.text = text
        if out:
            ET.SubElement(tc, "system-out").text = out
    return root
