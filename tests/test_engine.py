"""The evaluation engine's seams: plan -> run_task -> merge, and per-sample outcomes."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from robustness.core.backend import LocalBackend
from robustness.core.modes import eval_mode, predict
from robustness.data import Dataset
from robustness.evaluation import (
    RobustnessReport,
    Task,
    evaluate,
    merge,
    plan,
    run_task,
)

N = 120
ATTACKS = ["fgsm", "pgd(steps=5)"]
SHARD = 37  # random starts are drawn per attack call, so shards must match the local run's


@pytest.fixture(scope="module")
def report(trained_convnet: nn.Module, mnist: Dataset) -> RobustnessReport:
    return evaluate(trained_convnet, mnist, ATTACKS, [0.1, 0.2], n=N, seed=0, checks=False,
                    batch_size=SHARD)


def test_sharded_tasks_merged_in_any_order_equal_the_local_run(
        trained_convnet: nn.Module, mnist: Dataset, report: RobustnessReport) -> None:
    x, y = mnist.x_test[:N], mnist.y_test[:N]
    correct = predict(trained_convnet, x).argmax(1) == y
    xa, ya = x[correct], y[correct]
    the_plan = plan(ATTACKS, [0.2, 0.1], n_attacked=len(xa), seed=0, shard_size=SHARD)
    assert the_plan.eps == (0.1, 0.2)
    assert len(the_plan.tasks) == 2 * 2 * -(-len(xa) // SHARD)  # attacks x eps x shards
    with eval_mode(trained_convnet):
        results = [run_task(t, trained_convnet, trained_convnet, xa, ya, seed=0, transfer=False)
                   for t in the_plan.tasks]
        # The same tasks indexing the full sample (what evaluate() does, with no copy).
        indexed = [run_task(t, trained_convnet, trained_convnet, x, y, seed=0, transfer=False,
                            attacked=correct.nonzero().squeeze(1)) for t in the_plan.tasks]
    for a, b in zip(results, indexed, strict=True):
        assert a.fooled.tolist() == b.fooled.tolist()
        assert a.perturbation_norm.tolist() == b.perturbation_norm.tolist()
    random.Random(0).shuffle(results)  # e.g. shards coming back from workers
    outcomes, worst = merge(the_plan, results, correct)
    for o in outcomes:
        local = report.result(o.result.attack, o.result.eps)
        assert o.result.robust_accuracy == local.robust_accuracy
        assert o.result.robust_samples == local.robust_samples
    assert [w.robust_samples for w in worst] == [w.robust_samples for w in report.worst_case]


def test_a_missing_shard_is_an_error_not_a_silently_smaller_sample(
        trained_convnet: nn.Module, mnist: Dataset) -> None:
    x, y = mnist.x_test[:N], mnist.y_test[:N]
    correct = predict(trained_convnet, x).argmax(1) == y
    the_plan = plan(["fgsm"], [0.1], n_attacked=int(correct.sum()), seed=0, shard_size=1000)
    with pytest.raises(ValueError, match="a result for every task"):
        merge(the_plan, [], correct)


def test_per_sample_outcomes_agree_with_the_rates_and_the_worst_case(
        report: RobustnessReport) -> None:
    for r in report.results:
        mask = report.robust_mask(r.attack, r.eps)
        assert len(mask) == N
        assert sum(mask) / N == pytest.approx(r.robust_accuracy)
    for eps in report.eps_values:
        worst = report.robust_mask("worst case", eps)
        by_attack = [report.robust_mask(a, eps) for a in ATTACKS]
        assert worst == [all(bits) for bits in zip(*by_attack, strict=True)]


def test_per_sample_outcomes_survive_json(report: RobustnessReport) -> None:
    again = RobustnessReport.from_dict(report.to_dict())
    assert again == report
    assert again.robust_mask("fgsm", 0.1) == report.robust_mask("fgsm", 0.1)


def test_a_version_1_report_loads_but_has_no_per_sample_outcomes(
        report: RobustnessReport) -> None:
    old = report.to_dict()
    old["schema_version"] = 1
    for row in (*old["results"], *old["worst_case"]):
        del row["robust_samples"]
    loaded = RobustnessReport.from_dict(old)
    assert loaded.result("fgsm", 0.1).robust_accuracy == report.result("fgsm", 0.1).robust_accuracy
    with pytest.raises(KeyError, match="no per-sample outcomes"):
        loaded.robust_mask("fgsm", 0.1)


def test_plan_fails_fast_on_a_bad_spec_before_any_work() -> None:
    with pytest.raises(ValueError, match="did you mean 'pgd'"):
        plan(["pgdd"], [0.1], n_attacked=10)


@pytest.mark.parametrize("batch_size", [16, 1000])  # several shards per run, or one
def test_echo_prints_one_line_per_finished_run(trained_convnet: nn.Module, mnist: Dataset,
                                               batch_size: int) -> None:
    lines: list[str] = []
    evaluate(trained_convnet, mnist, ["fgsm", "pgd(steps=2)"], [0.1, 0.2], n=40, checks=False,
             batch_size=batch_size, echo=lines.append)
    assert len(lines) == 4  # one per (attack, eps), not one per shard
    assert all("fooled" in line for line in lines)


class _Counting(LocalBackend):
    """The local backend, recording which tasks it was asked to run; optionally stopping
    (like a crashed driver) after ``stop_after`` of them."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.ran: list[Task] = []
        self.stop_after = stop_after

    def run(self, fn: Any, items: Any, shared: Any = None) -> Iterator[tuple[int, Any]]:
        for i, result in super().run(fn, items, shared):
            if self.stop_after is not None and len(self.ran) == self.stop_after:
                raise KeyboardInterrupt
            self.ran.append(items[i])
            yield i, result


def test_a_resumed_evaluation_redoes_no_finished_shard_and_gives_the_same_report(
        trained_convnet: nn.Module, mnist: Dataset, report: RobustnessReport,
        tmp_path: Path) -> None:
    args = (trained_convnet, mnist, ATTACKS, [0.1, 0.2])
    kwargs: dict[str, Any] = {"n": N, "seed": 0, "checks": False, "batch_size": SHARD,
                              "resume_dir": tmp_path / "shards"}
    crashed = _Counting(stop_after=5)
    with pytest.raises(KeyboardInterrupt):
        evaluate(*args, backend=crashed, **kwargs)
    assert len(crashed.ran) == 5
    lines: list[str] = []
    resumed = _Counting()
    again = evaluate(*args, backend=resumed, echo=lines.append, **kwargs)
    total = 2 * 2 * -(-round(report.clean_accuracy * N) // SHARD)
    assert len(resumed.ran) == total - 5  # only the missing tasks ran
    def ids(tasks: list[Task]) -> set[tuple[str, float | None, int]]:
        return {(t.spec.label, t.eps, t.start) for t in tasks}

    assert not ids(resumed.ran) & ids(crashed.ran)
    assert any(f"resumed 5 of {total} tasks" in line for line in lines)
    assert again.to_dict()["worst_case"] == report.to_dict()["worst_case"]
    assert [r.robust_samples for r in again.results] == [r.robust_samples for r in report.results]
    # A different evaluation (another seed) shares nothing with it: all of it runs.
    other = _Counting()
    evaluate(*args, backend=other, **{**kwargs, "seed": 1})
    assert len(other.ran) == total
    # A damaged shard file is attacked again, not trusted.
    (store,) = [p.parent for p in (tmp_path / "shards").glob("*/evaluation.json")
                if json.loads(p.read_text())["seed"] == 0]
    next(store.glob("task-*")).write_bytes(b"not a safetensors file")
    redo = _Counting()
    evaluate(*args, backend=redo, **kwargs)
    assert len(redo.ran) == 1


CASCADE = ["fgsm", "pgd(steps=5,random_start=False)"]  # per sample, batch-independent


@pytest.fixture(scope="module")
def full_and_cascade(trained_convnet: nn.Module, mnist: Dataset
                     ) -> tuple[RobustnessReport, RobustnessReport]:
    args = (trained_convnet, mnist, CASCADE, [0.1, 0.2])
    return (evaluate(*args, n=N, checks=False, batch_size=SHARD),
            evaluate(*args, n=N, checks=False, batch_size=SHARD, cascade=True))


def test_a_cascade_attacks_only_what_is_left_and_gives_the_same_worst_case(
        full_and_cascade: tuple[RobustnessReport, RobustnessReport]) -> None:
    full, cascade = full_and_cascade
    for eps in (0.1, 0.2):
        f_fgsm, c_fgsm = full.result("fgsm", eps), cascade.result("fgsm", eps)
        # The first attack of a cascade is its own row.
        assert dataclasses.replace(c_fgsm, seconds=0) == dataclasses.replace(f_fgsm, seconds=0)
        c_pgd = cascade.result(CASCADE[1], eps)
        assert c_pgd.cascade_after == ["fgsm"]
        assert c_pgd.label == f"{CASCADE[1]} (cascade after fgsm)"
        # PGD attacked exactly what FGSM left robust, and no more.
        assert c_pgd.n_attacked == round(f_fgsm.robust_accuracy * N) < \
            full.result(CASCADE[1], eps).n_attacked
        assert c_pgd.gradient_evaluations < full.result(CASCADE[1], eps).gradient_evaluations
        # A cascade row is the robust accuracy against both attacks: the worst case.
        worst_full, worst_cascade = full.worst(eps), cascade.worst(eps)
        assert c_pgd.robust_samples == worst_cascade.robust_samples
        # The same measurement as every attack on every sample; per sample it may differ
        # only where a float-level difference of another batch composition flips PGD.
        differ = sum(a != b for a, b in zip(worst_full.robust_samples,
                                            worst_cascade.robust_samples, strict=True))
        assert differ <= 1, (eps, differ)
        assert worst_cascade.broken_by["fgsm"] == worst_full.broken_by["fgsm"]
    assert cascade.provenance["cascade"] is True and full.provenance["cascade"] is False


def test_cascade_rows_survive_json_and_are_marked_in_the_table(
        full_and_cascade: tuple[RobustnessReport, RobustnessReport]) -> None:
    _, cascade = full_and_cascade
    again = RobustnessReport.from_dict(json.loads(json.dumps(cascade.to_dict())))
    assert again == cascade
    assert f"{CASCADE[1]} (cascade after fgsm)" in cascade.table()


def test_a_cascade_says_which_checks_it_could_not_run(trained_convnet: nn.Module,
                                                      mnist: Dataset) -> None:
    report = evaluate(trained_convnet, mnist, ["fgsm", "pgd(steps=5)"], [0.2], n=60,
                      cascade=True)
    checks = {f.check for f in report.findings}
    assert "cascade" in checks
    # PGD after FGSM never saw FGSM's breaks: comparing the two would be meaningless.
    assert "iterative-vs-single-step" not in checks
    with pytest.raises(ValueError, match="'cascade' parameter"):
        evaluate(trained_convnet, mnist, ["fgsm"], [0.2], n=10, cascade="yes")  # type: ignore[arg-type]


def test_run_task_refuses_indices_that_do_not_index_x(
        trained_convnet: nn.Module, mnist: Dataset) -> None:
    import torch

    x, y = mnist.x_test[:10], mnist.y_test[:10]
    task = plan(["fgsm"], [0.1], n_attacked=10, seed=0).tasks[0]
    for bad in (torch.arange(10).float(), torch.arange(5), torch.arange(10) + 5):
        with pytest.raises(ValueError, match=r"'attacked' parameter of run_task must be a "
                                             r"1-d int64 tensor of at least 10 indices"):
            run_task(task, trained_convnet, trained_convnet, x, y, seed=0, transfer=False,
                     attacked=bad)
