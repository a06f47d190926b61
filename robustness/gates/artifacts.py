"""What a run of gates leaves for the CI system: the JSON document and the JUnit XML tree.

Both the pytest plugin (``--robustness-json``) and ``robustness gate`` (``--json``,
``--junit-xml``) write them from a list of :class:`~robustness.gates.gate.GateResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from robustness.gates.baseline import Baseline
    from robustness.gates.gate import GateResult

RESULTS_FORMAT = "robustness-gates"
RESULTS_VERSION = 1


def results_document(results: Sequence[GateResult], *, baseline: Baseline | None = None,
                     baseline_updated: bool = False, source: str = "") -> dict[str, Any]:
    """The JSON artifact written by the plugin (``--robustness-json``) and ``robustness gate``.

    Parameters
    ----------
    results
        Every gate of the run.
    baseline
        The baseline compared with (or updated), if any.
    baseline_updated
        Whether this run rewrote the baseline.
    source
        What ran the gates (``"pytest"`` or the TOML file's path).

    Returns
    -------
    dict
        ``format``, ``version``, ``created``, ``source``, ``passed``, ``summary`` (counts
        per status), ``baseline``, ``gates`` (:meth:`GateResult.to_dict` each) and
        ``regressions``.
    """
    counts = {s: sum(r.status == s for r in results)
              for s in ("passed", "failed", "regressed", "unverified", "error")}
    return {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "passed": counts["passed"] == len(results),
        "summary": {"gates": len(results), **counts},
        "baseline": None if baseline is None else {
            "path": str(baseline.path), "exists": baseline.exists, "updated": baseline_updated},
        "gates": [r.to_dict() for r in results],
        "regressions": [g.to_dict() for r in results for g in r.regressions],
    }


def junit_xml(results: Sequence[GateResult], *, suite: str,
              config_error: str | None = None) -> Element:
    """A JUnit ``<testsuites>`` tree: one ``<testcase>`` per gate.

    A failed threshold is a ``<failure type="GateFailure">``, a regression a
    ``<failure type="RobustnessRegression">``, a gate whose findings leave its numbers
    untrusted a ``<failure type="UnverifiedGate">`` (with the findings), a configuration
    error an
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
        elif r.status == "unverified":
            cases.append((r.gate.name, r.seconds, "failure", "UnverifiedGate", r.explain(), out))
        else:
            notes = r.findings_text()
            cases.append((r.gate.name, r.seconds, "", None, "",
                          f"{r.summary()}\n\n{notes + chr(10) * 2 if notes else ''}{out}"))
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


__all__ = ["RESULTS_FORMAT", "RESULTS_VERSION", "junit_xml", "results_document"]
