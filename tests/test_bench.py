"""Benchmark plumbing: targets that say met or missed honestly, ratios timed together, the
rendered page, and ``robustness bench`` (end to end in the slow session)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reports.benchmarks import render_benchmarks
from robustness.bench import Target, Timing, at_least, at_most, interleaved_times


def test_a_ratio_is_taken_round_by_round() -> None:
    ours = Timing((2.0, 4.0, 3.0))
    floor = Timing((1.0, 2.0, 1.0))  # the second round ran on a busy machine: both slower
    ratio = ours / floor
    assert ratio.samples == (2.0, 2.0, 3.0)
    assert (ratio.median, ratio.low, ratio.high) == (2.0, 2.0, 3.0)
    assert ratio.summary() == {"median": 2.0, "min": 2.0, "max": 3.0}


def test_interleaved_times_times_every_function_each_round() -> None:
    calls: list[str] = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up each, then round-robin
    assert all(len(t.samples) == 3 for t in times.values())


@pytest.mark.parametrize(("target", "met", "says"), [
    (at_most("pgd", Timing((1.01, 1.0, 1.05)), 1.02), True, "1.01 (1-1.05) vs <= 1.02: met"),
    (at_most("pgd", 1.1, 1.02, missed_because="the probe"), False,
     "1.1 vs <= 1.02: MISSED (by 8%); the probe"),
    (at_least("success", 0.76, 0.99), False, "0.76 vs >= 0.99: MISSED (by 23%)"),
    (at_least("success", 1.0, 0.99), True, "met"),
    (at_most("lost", 2, 0), False, "MISSED (off by 2)"),
    (at_most("seconds", 61.0, 60, unit=" s"), False, "61 s vs <= 60 s"),
    # Thousands of seconds in digits, not as 2.05e+03.
    (at_most("experiment", 2050.4, 1200, unit=" s"), False, "2050 s vs <= 1200 s"),
])
def test_a_target_line_says_met_or_by_how_much_it_is_missed(target: Target, met: bool,
                                                            says: str) -> None:
    assert target.met is met
    assert says in target.line()


def _record(name: str, targets: list[Target]) -> dict[str, object]:
    from dataclasses import asdict

    return {"benchmark": name, "command": f"python benchmarks/bench_{name}.py",
            "when": "2026-12-02T13:00:00+00:00",
            "machine": {"cpu": "x86_64; flags avx2 fma; torch capability AVX2", "cpus": 2,
                        "threads": 2, "torch": "2.13.0", "load_average": 0.1},
            "targets": [asdict(t) for t in targets], "summary": ["a figure without target"]}


def test_the_page_lists_every_target_and_says_why_one_was_missed() -> None:
    page = render_benchmarks([
        _record("attacks", [at_most("PGD-10 / floor", Timing((0.8, 0.7, 0.9)), 1.02),
                            at_least("genetic success", 0.8, 0.99,
                                     missed_because="PGD reaches only 86%")]),
        _record("tsne", [at_most("ratio", 0.28, 0.35)]),
        _record("ensembles", [at_most("experiment", 2050.4, 1200, unit=" s")]),
    ], how="made by a test")
    assert "## Targets: 2 of 4 met" in page
    assert "| ensembles | experiment | 2050 s | <= 1200 s | **missed** |" in page
    assert "| attacks | PGD-10 / floor | 0.8 (0.7-0.9) | <= 1.02 | met |" in page
    assert "| attacks | genetic success | 0.8 | >= 0.99 | **missed** |" in page
    assert "genetic success: 0.8 against >= 0.99. PGD reaches only 86%" in page
    assert "- command: `python benchmarks/bench_tsne.py`" in page
    assert "avx2 fma" in page and "a figure without target" in page


def _robustness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robustness.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900, check=False)


def test_bench_refuses_a_batch_larger_than_the_test_split(tmp_path: Path) -> None:
    done = _robustness("bench", "--batch", "32,100000", "--out", str(tmp_path / "b"),
                       cwd=tmp_path)
    assert done.returncode == 2
    assert "--batch" in done.stderr and "100000" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_robustness_bench_prints_and_writes_every_target(tmp_path: Path) -> None:
    done = _robustness("bench", "--repeats", "2", "--batch", "16", "--out", str(tmp_path / "b"),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "b" / "bench.json").read_text())
    names = [t["name"] for t in record["targets"]]
    assert any(n.startswith("PGD-10 full call") for n in names)
    assert any(n.startswith("genetic untargeted success") for n in names)
    assert "flags" in record["machine"]["cpu"]
    for t in record["targets"]:
        assert ("met" if t["met"] else "MISSED") in done.stdout
    page = (tmp_path / "b" / "benchmarks.md").read_text()
    assert f"of {len(names)} met" in page
