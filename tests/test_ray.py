"""The Ray backend against the local one, on a local Ray instance limited to this machine.

Run by ``nox -s ray`` (``pip install '.[test,ray]'``); the default session deselects the
``ray`` marker and does not need Ray. Results are compared with a local run that uses one
torch thread, as each Ray task here does (``cpus_per_task=1``): CPU kernels reduce in a
thread-count-dependent order, so that is the condition for bit-identical numbers.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from ensembles.members import train_members
from robustness.core.backend import RayBackend, RayOptions
from robustness.data import Dataset
from robustness.evaluation import evaluate
from robustness.models import build_model
from robustness.train import train

pytestmark = pytest.mark.ray  # deselected in the default session, which has no Ray


@pytest.fixture(scope="module")
def backend() -> Iterator[RayBackend]:
    """One local Ray instance for the module (workers start once, ~10-30 s on 2 cores)."""
    import ray

    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="ERROR")
    try:
        yield RayBackend(RayOptions(cpus_per_task=1, max_retries=3))
    finally:
        ray.shutdown()


def _weights(ensemble: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
    return [m.state_dict() for m in ensemble.members]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb)
    for i, (ma, mb) in enumerate(zip(wa, wb, strict=True)):
        assert ma.keys() == mb.keys()
        for k in ma:
            assert torch.equal(ma[k], mb[k]), f"member {i}, {k} differs between backends"


def test_members_trained_on_ray_equal_local_members_and_resume_locally(
        digits: Dataset, backend: RayBackend, one_thread: None, tmp_path: Path) -> None:
    kwargs = {"architecture": "mlp", "epochs": 2, "progress": False, "seed": 3}
    local = train_members(digits, 4, **kwargs)
    on_ray = train_members(digits, 4, backend=backend, out_dir=tmp_path / "run", **kwargs)
    _same_weights(local, on_ray)
    assert [e["threads"] for e in on_ray.training_log] == [1] * 4
    # The run directory is the source of truth: a local re-run trains nothing again,
    # and asking for more members trains only the new one.
    again = train_members(digits, 5, out_dir=tmp_path / "run", **kwargs)
    assert [e["resumed"] for e in again.training_log] == [True] * 4 + [False]
    _same_weights(train_members(digits, 5, **kwargs), again)


def _ray_task_pids() -> list[int]:
    """Ray worker processes running one of our tasks (Ray titles them ``ray::_ray_task``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::_ray_task"):
                pids.append(int(entry.name))
    return pids


def test_a_worker_killed_mid_member_is_retried_and_the_result_is_unchanged(
        digits: Dataset, backend: RayBackend, one_thread: None) -> None:
    kwargs = {"architecture": "mlp", "epochs": 30, "progress": False, "seed": 5}
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_worker() -> None:
        while not stop.is_set() and not killed:
            pids = _ray_task_pids()
            if pids:
                time.sleep(0.3)  # let it get into training
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    try:
        on_ray = train_members(digits, 3, backend=backend, **kwargs)
    finally:
        stop.set()
        killer.join(timeout=10)
    assert killed, "no Ray worker was seen running a member"
    _same_weights(train_members(digits, 3, **kwargs), on_ray)


def test_an_evaluation_sharded_over_ray_tasks_equals_the_local_report(
        digits: Dataset, backend: RayBackend, one_thread: None,
        report_numbers: Callable[[object], dict[str, object]]) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    train(model, digits.x_train, digits.y_train, epochs=8, seed=0, progress=False)
    args = (model.eval(), digits, ["fgsm", "pgd(steps=10)"], [0.05, 0.1])
    lines: list[str] = []
    local = evaluate(*args, n=300, batch_size=64)
    sharded = evaluate(*args, n=300, batch_size=64, backend=backend, echo=lines.append)
    n_shards = -(-round(local.clean_accuracy * 300) // 64)
    assert n_shards >= 4  # really sharded: several tasks per attack x eps
    assert len(lines) == 4  # one progress line per attack x eps, when its last shard is in

    assert report_numbers(sharded) == report_numbers(local)
    assert sharded.provenance["backend"]["backend"] == "ray"
    assert local.provenance["backend"] == {"backend": "local"}


def test_an_error_inside_a_task_is_raised_as_itself_not_retried(backend: RayBackend) -> None:
    from robustness.core.validation import ParameterError, check_int

    # A library function (workers import it by name): fails for the item 3.
    task = functools.partial(check_int, "task", "item", low=4)
    with pytest.raises(ParameterError, match=r"The 'item' parameter of task must be an int in "
                       r"the range \[4, inf\). Got 3 instead.") as e:
        list(backend.run(task, [3]))
    assert type(e.value) is ParameterError  # not Ray's wrapper with a remote traceback


def test_dadc_candidates_crafted_in_waves_on_ray_equal_the_local_proposal(
        digits: Dataset, backend: RayBackend, one_thread: None) -> None:
    from attacks.registry import parse_attack_spec
    from robustness.dadc.sources import CHUNK, AttackSource

    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    train(model, digits.x_train, digits.y_train, epochs=8, seed=0, progress=False)
    source = AttackSource(parse_attack_spec("pgd(steps=5)"), eps=0.1)
    available = list(range(100, 100 + 3 * CHUNK + 40))  # 4 chunks: 2 waves of 2 on Ray
    want = CHUNK + 30  # the quota is reached inside the second chunk
    args = (model.eval(), digits.x_train, digits.y_train, available, want)
    local = source.propose(*args, seed=7, kept=None)
    on_ray = source.propose(*args, seed=7, kept=None, backend=backend)
    assert backend.slots() == (os.cpu_count() or 1)
    assert len(local.x) == want
    for name in ("x", "label", "fooled_as", "origin"):
        assert torch.equal(getattr(on_ray, name), getattr(local, name)), name
    assert (on_ray.used, on_ray.tried) == (local.used, local.tried)
