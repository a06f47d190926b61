"""The ``processes`` backend: worker processes on this machine, against the local backend.

Results are compared with a local run that uses one torch thread, as each worker does by
default (``threads_per_worker=1``): CPU kernels reduce in a thread-count-dependent order,
so that is the condition for bit-identical numbers (see ``robustness.core.backend``).
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from ensembles.members import train_members
from robustness.core.backend import ProcessBackend, ProcessOptions, get_backend, usable_cpus
from robustness.core.validation import ParameterError, check_int
from robustness.data import Dataset
from robustness.evaluation import evaluate
from robustness.models import build_model
from robustness.train import train


def _square(item: int, *, offset: int) -> tuple[int, int, int]:
    """The task's answer, its torch threads and the process it ran in."""
    return item * item + offset, torch.get_num_threads(), os.getpid()


def _die_on_zero(item: int) -> int:
    if item == 0:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    return item


def _sleep(item: tuple[float, Path]) -> None:
    """Write this worker's pid to a file, then sleep."""
    seconds, path = item
    path.write_text(str(os.getpid()))
    time.sleep(seconds)


class _Loud:
    """A shared object that notes in a file every time a process unpickles it."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __setstate__(self, state: dict[str, Path]) -> None:
        self.__dict__.update(state)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


def _pid(item: int, *, loud: _Loud) -> int:
    return os.getpid()


def _leftovers() -> set[str]:
    """The shared-object files of runs, in the temporary directory."""
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("robustness-shared-*")}


@pytest.fixture
def backend() -> Iterator[ProcessBackend]:
    b = ProcessBackend(ProcessOptions(workers=2))
    try:
        yield b
    finally:
        b.close()


def test_workers_run_every_item_with_the_run_s_shared_objects_and_one_torch_thread(
        backend: ProcessBackend) -> None:
    first = dict(backend.run(_square, [3, 1, 2, 5], {"offset": 10}))
    assert {i: r[0] for i, r in first.items()} == {0: 19, 1: 11, 2: 14, 3: 35}
    assert {r[1] for r in first.values()} == {1}  # threads_per_worker, not the driver's
    pids = {r[2] for r in first.values()}
    assert os.getpid() not in pids and len(pids) <= 2
    # The next run ships its own shared objects to the same, already started workers.
    second = dict(backend.run(_square, [4], {"offset": -1}))
    assert second[0][0] == 15 and second[0][2] in pids
    assert backend.describe() == {"backend": "processes", "workers": 2,
                                  "threads_per_worker": 1}
    assert backend.slots() == 2
    assert list(backend.run(_square, [], {"offset": 0})) == []
    default = get_backend("processes")
    assert isinstance(default, ProcessBackend)
    assert default.slots() == usable_cpus()  # one single-threaded worker per CPU


check_int_task = functools.partial(check_int, "task", "item", low=4)


def test_an_error_inside_a_task_is_raised_as_itself(backend: ProcessBackend) -> None:
    task = check_int_task
    with pytest.raises(ParameterError, match=r"The 'item' parameter of task must be an int in "
                       r"the range \[4, inf\). Got 3 instead.") as e:
        list(backend.run(task, [5, 3]))
    assert type(e.value) is ParameterError
    assert dict(backend.run(task, [6])) == {0: 6}  # the workers are still there


def test_shared_objects_that_do_not_pickle_are_refused_by_name_before_any_work(
        backend: ProcessBackend) -> None:
    class Local(torch.nn.Module):  # defined in a function: no worker could import it
        pass

    with pytest.raises(ParameterError, match=r"The 'model' parameter of backend 'processes' "
                       r"must be an object that pickles.*or use backend 'local'"):
        list(backend.run(_square, [1], {"offset": 0, "model": Local()}))
    assert backend._pool is None  # nothing was started


def test_bad_process_options_are_refused_by_name() -> None:
    with pytest.raises(ParameterError, match=r"'workers' parameter of ProcessOptions must be "
                       r"an int in the range \[1, inf\). Got 0"):
        ProcessOptions(workers=0)
    with pytest.raises(ParameterError, match=r"'threads_per_worker' parameter of "
                       r"ProcessOptions must be an int"):
        ProcessOptions(threads_per_worker=1.5)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"'workers' parameter of evaluate must be given "
                       r"only with backend processes. Got 2"):
        get_backend("local", owner="evaluate", workers=2)
    with pytest.raises(ParameterError, match=r"'ray_address' parameter of evaluate must be "
                       r"given only with backend ray"):
        get_backend("processes", owner="evaluate", ray_address="auto")
    with pytest.raises(ParameterError, match=r"'--threads-per-worker' parameter of robustness "
                       r"evaluate must be given only with --backend processes"):
        get_backend("ray", owner="robustness evaluate", threads_per_worker=2, cli_names=True)


def test_a_killed_worker_is_one_clear_error_and_the_next_run_starts_new_workers(
        backend: ProcessBackend) -> None:
    with pytest.raises(RuntimeError, match=r"a worker process of the processes backend died "
                       r"\(killed, or out of memory\) with [12] of 2 tasks unfinished"):
        list(backend.run(_die_on_zero, [0, 1]))
    assert dict(backend.run(_die_on_zero, [2, 3])) == {0: 2, 1: 3}


def test_closing_a_run_early_ends_the_tasks_still_running(backend: ProcessBackend,
                                                          tmp_path: Path) -> None:
    started = time.perf_counter()
    run = backend.run(_sleep, [(0.0, tmp_path / "a"), (600.0, tmp_path / "b")])
    next(run)
    for _ in range(600):  # the long task has started
        if (tmp_path / "b").exists():
            break
        time.sleep(0.05)
    sleeper = int((tmp_path / "b").read_text())
    run.close()  # e.g. the driver failed on the first result: nobody waits for the second
    assert time.perf_counter() - started < 60
    with pytest.raises(ProcessLookupError):  # ended and reaped, not left running
        os.kill(sleeper, 0)
    assert dict(backend.run(_square, [2], {"offset": 0}))[0][0] == 4  # a working pool again


def test_members_trained_in_worker_processes_equal_local_members(
        digits: Dataset, backend: ProcessBackend, one_thread: None) -> None:
    kwargs = {"architecture": "mlp", "epochs": 2, "progress": False, "seed": 3}
    local = train_members(digits, 3, **kwargs)
    remote = train_members(digits, 3, backend=backend, **kwargs)
    for i, (a, b) in enumerate(zip(local.members, remote.members, strict=True)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"member {i}, {k} differs between backends"
    assert [e["threads"] for e in remote.training_log] == [1] * 3


def test_an_evaluation_sharded_over_worker_processes_equals_the_local_report(
        digits: Dataset, backend: ProcessBackend, one_thread: None,
        report_numbers: Callable[[object], dict[str, object]]) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    train(model, digits.x_train, digits.y_train, epochs=8, seed=0, progress=False)
    args = (model.eval(), digits, ["fgsm", "pgd(steps=10)"], [0.05, 0.1])
    local = evaluate(*args, n=300, batch_size=64)
    sharded = evaluate(*args, n=300, batch_size=64, backend=backend)

    assert report_numbers(sharded) == report_numbers(local)
    assert sharded.provenance["backend"] == {"backend": "processes", "workers": 2,
                                             "threads_per_worker": 1}


def test_shared_objects_are_read_once_per_worker_and_run_and_leave_no_file(
        backend: ProcessBackend, tmp_path: Path) -> None:
    before = _leftovers()
    log = tmp_path / "unpickled"
    pids = set(dict(backend.run(_pid, list(range(8)), {"loud": _Loud(log)})).values())
    readers = log.read_text().split()
    assert len(readers) == len(set(readers)) <= 2  # once per worker, not once per task
    assert set(readers) == {str(p) for p in pids}
    assert _leftovers() == before
    log.unlink()
    dict(backend.run(_pid, [0, 1], {"loud": _Loud(log)}))  # the next run: read again
    assert 1 <= len(log.read_text().split()) <= 2
    with pytest.raises(ParameterError):
        list(backend.run(check_int_task, [0, 1]))
    run = backend.run(_sleep, [(0.0, tmp_path / "a"), (600.0, tmp_path / "b")])
    next(run)
    run.close()
    assert _leftovers() == before  # also after a failure and an early close
