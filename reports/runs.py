"""Read any run directory the harness writes, for reports: one small reader per run kind.

A reader says whether a directory is its kind (:attr:`RunReader.marker`, the file the
command writes) and turns it into a :class:`Run`: the data to render, the evaluation
report when the run has one, and the problems met on the way (a missing or corrupt file
is a problem that the page shows, never a traceback). A new run kind (DADC rounds, t-SNE)
is one more :class:`RunReader` in :data:`READERS`.

Everything here reads JSON and safetensors files only: no model is loaded, no attack run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustness.core.validation import ParameterError
from robustness.evaluation.report import (
    SAMPLES_FILE,
    ReportSchemaError,
    RobustnessReport,
)


class RunReadError(ParameterError):
    """A directory holds nothing a report can use; the message names what is missing."""


@dataclass
class Run:
    """One run directory as a report sees it.

    Attributes
    ----------
    kind
        ``"evaluate"``, ``"demo"``, ``"experiment"``, ``"attack"``, ``"fool"``, ``"tsne"``,
        ``"dadc"``.
    path
        The directory.
    title
        A short name for tables: the directory's name.
    data
        The run's main JSON document, as read.
    report
        Its :class:`RobustnessReport`, for kinds that have one (evaluate, demo).
    masks
        Per-sample robustness read from ``samples.safetensors`` (or the report's
        bitstrings): ``(attack, eps, norm) -> list[bool]``; attack ``"worst case"`` for
        the worst case. Empty when the run stored none (it can then not be paired).
    problems
        What could not be read, one sentence each.
    files
        Extra files worth showing (PNG figures the command wrote), by name.
    """

    kind: str
    path: Path
    title: str
    data: dict[str, Any]
    report: RobustnessReport | None = None
    masks: dict[tuple[str, float, str], list[bool]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    samples_file: str = ""  # the per-sample outcomes file the report names

    def to_dict(self) -> dict[str, Any]:
        """What ``report.json`` of a report records about this run."""
        return {"kind": self.kind, "path": str(self.path), "title": self.title,
                "problems": self.problems, "figures": sorted(self.files),
                "paired_outcomes": bool(self.masks), "data": self.data}


@dataclass(frozen=True)
class RunReader:
    """How to recognise and read one kind of run directory."""

    kind: str
    marker: str  # the JSON file the command writes
    read: Callable[[Path, dict[str, Any], Run], None]  # fills in the Run from the document
    # tells kinds that share a marker file apart
    accepts: Callable[[dict[str, Any]], bool] = lambda doc: True
    figures: tuple[str, ...] = ()


def _json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path.name} cannot be read as JSON ({e})"
    if not isinstance(doc, dict):
        return None, f"{path.name} is not a JSON object"
    return doc, None


def _with_report(doc: dict[str, Any], run: Run, where: str) -> None:
    """Validate the report and read its per-sample outcomes (safetensors first)."""
    try:
        run.report = RobustnessReport.from_dict(doc)
        run.samples_file = str(doc.get("samples_file") or "")
    except (ReportSchemaError, TypeError, KeyError) as e:
        run.problems.append(f"{where} is not a valid RobustnessReport ({e}); its figures are "
                            f"shown as stored, without intervals checks or pairing")
        return
    run.masks = _masks_from_file(run) or _masks_from_report(run.report)
    if not run.masks:
        run.problems.append("no per-sample outcomes (a report written before schema 2): "
                            "comparisons with this run are not paired")


def _masks_from_report(report: RobustnessReport) -> dict[tuple[str, float, str], list[bool]]:
    masks: dict[tuple[str, float, str], list[bool]] = {}
    for r in report.results:
        if len(r.robust_samples) == report.n_samples:
            masks[(r.attack, r.eps, r.norm)] = [c == "1" for c in r.robust_samples]
    for w in report.worst_case:
        if len(w.robust_samples) == report.n_samples:
            masks[("worst case", w.eps, w.norm)] = [c == "1" for c in w.robust_samples]
    return masks


def _masks_from_file(run: Run) -> dict[tuple[str, float, str], list[bool]]:
    """Masks from ``samples.safetensors`` when the report names it and it is intact."""
    assert run.report is not None
    name = run.samples_file
    if not name:
        return {}
    path = run.path / str(name)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            rows = json.loads(meta.get("rows", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        run.problems.append(f"{path.name} cannot be read ({type(e).__name__}: {e}); using the "
                            f"per-sample outcomes stored in the report instead")
        return {}
    masks = {}
    for key, what in rows.items():
        t = tensors.get(key)
        if t is None or len(t) != run.report.n_samples:
            run.problems.append(f"{path.name} lacks a valid '{key}' tensor; using the report's "
                                f"own per-sample outcomes instead")
            return {}
        masks[(str(what["attack"]), float(what["eps"]), str(what["norm"]))] = \
            [bool(v) for v in t.tolist()]
    return masks


def _read_evaluate(path: Path, doc: dict[str, Any], run: Run) -> None:
    _with_report(doc, run, "report.json")


def _read_demo(path: Path, doc: dict[str, Any], run: Run) -> None:
    inner = doc.get("report")
    if isinstance(inner, dict):
        _with_report(inner, run, "results.json's report")
    else:
        run.problems.append("results.json has no embedded report; only its table is shown")


def _nothing(path: Path, doc: dict[str, Any], run: Run) -> None:
    """Kinds whose document is rendered as stored (attack, fool, experiment)."""


READERS: tuple[RunReader, ...] = (
    RunReader("evaluate", "report.json", _read_evaluate,
              accepts=lambda d: "schema_version" in d and "results" in d),
    RunReader("experiment", "results.json", _nothing,
              accepts=lambda d: d.get("experiment") == "ensembles"),
    RunReader("demo", "results.json", _read_demo, accepts=lambda d: "report" in d,
              figures=("examples.png",)),
    RunReader("attack", "summary.json", _nothing, figures=("grid.png",)),
    RunReader("fool", "fooling.json", _nothing, figures=("fooling.png",)),
    RunReader("tsne", "tsne.json", _nothing, accepts=lambda d: d.get("format") == "robustness-tsne",
              figures=("tsne.png",)),
    RunReader("dadc", "dadc.json", _nothing, accepts=lambda d: d.get("format") == "robustness-dadc",
              figures=("dadc.png",)),
)
"""Every run kind a report can read, tried in order (first match wins)."""


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read one run directory (or its main JSON file).

    Returns
    -------
    Run
        With ``problems`` listing anything missing or corrupt.

    Raises
    ------
    RunReadError
        Nothing usable: not a directory, or no file any reader knows.
    """
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise RunReadError(f"The run directory {p} does not exist.")
    markers = ", ".join(dict.fromkeys(r.marker for r in READERS))
    problems = []
    for reader in READERS:
        file = p / reader.marker
        if not file.exists():
            continue
        doc, problem = _json(file)
        if doc is None:
            problems.append(problem or f"{file.name} is unreadable")
            continue
        if not reader.accepts(doc):
            continue
        run = Run(kind=reader.kind, path=p, title=p.name or str(p), data=doc)
        reader.read(p, doc, run)
        for name in reader.figures:
            if (p / name).is_file():
                run.files[name] = p / name
            else:
                run.problems.append(f"{name} is missing; the page shows no such figure")
        return run
    why = "; ".join(problems) if problems else f"none of {markers} is there"
    raise RunReadError(f"{p} holds no run this report can read ({why}). Point it at a "
                       f"directory written by robustness evaluate, demo, attack, fool or "
                       f"experiment ensembles, tsne or dadc.")


__all__ = ["READERS", "SAMPLES_FILE", "Run", "RunReadError", "RunReader", "read_run"]
