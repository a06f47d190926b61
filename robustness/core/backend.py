"""Where independent tasks run: in this process (``local``), in worker processes on this
machine (``processes``) or on Ray workers (``ray``).

The harness never schedules work itself. A caller splits its job into pure tasks (one
ensemble member, one attack x eps x shard of an evaluation), each a function of its item
and of some shared objects, and hands them to a backend:

* :class:`LocalBackend` runs them one after another in this process, in order (the
  default everywhere);
* :class:`ProcessBackend` runs them in a pool of worker processes on this machine, each
  with its own torch threads (by default one per CPU: two processes that each use every
  core slow each other down several times over). The shared objects are pickled once
  per run into a temporary file, which each worker reads once per run;
* :class:`RayBackend` submits one Ray task per item. The shared objects (training data,
  model weights) go into Ray's object store **once** and every task reads them from
  there. A task whose worker process dies is retried by Ray (``max_retries``); an
  exception raised by the task itself is a bug or bad input and is re-raised here.

Either way results come back to the caller (the driver) as they finish, and the driver
alone writes the run directory. That directory stays the source of truth: a driver
restarted after a crash skips what was saved and submits only the rest.

Same results: a task is a pure function of its item and seed, so it computes the same
numbers wherever it runs, **given the same number of torch threads** (CPU kernels reduce
in a thread-count-dependent order). A Ray task sets its torch threads to its
``cpus_per_task``, a worker process to its ``threads_per_worker``; run the local backend
with ``torch.set_num_threads`` of that number to get bit-identical results.

Ray is an optional extra (``pip install 'robustness-harness[ray]'``), imported only
when a Ray backend is used.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from robustness.core.validation import (
    ParameterError,
    check_choice,
    check_float,
    check_int,
    invalid,
)

BACKENDS = ("local", "processes", "ray")
RAY_INSTALL_HINT = ("--backend ray needs Ray, which is not installed: pip install "
                    "'robustness-harness[ray]' (or pip install 'ray>=2.9')")

T = TypeVar("T")
R = TypeVar("R")


class BackendUnavailable(ParameterError):
    """The backend asked for cannot run here (Ray missing, cluster unreachable): a user
    error, reported in one line like a bad parameter."""


class Backend(ABC):
    """Runs ``fn(item, **shared)`` for every item and yields ``(index, result)``."""

    name: str

    @abstractmethod
    def run(self, fn: Callable[..., R], items: Sequence[T],
            shared: Mapping[str, Any] | None = None) -> Iterator[tuple[int, R]]:
        """Run ``fn(items[i], **shared)`` for every ``i``; yield ``(i, result)`` as each ends.

        ``fn`` must be a module-level function (Ray ships it by reference). Results may
        arrive in any order; closing the iterator early cancels what has not run.
        """

    def describe(self) -> dict[str, Any]:
        """Provenance: which backend ran the work, with what resources."""
        return {"backend": self.name}

    def slots(self) -> int:
        """How many tasks run at once (work that can be speculated in waves of this size)."""
        return 1

    def close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing)
        """Release what this backend started (a local Ray instance)."""


class LocalBackend(Backend):
    """Every task in this process, in order, with the process's torch threads."""

    name = "local"

    def run(self, fn: Callable[..., R], items: Sequence[T],
            shared: Mapping[str, Any] | None = None) -> Iterator[tuple[int, R]]:
        kwargs = dict(shared or {})
        for i, item in enumerate(items):
            yield i, fn(item, **kwargs)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# In a worker process: (run token, shared objects) of the run its last task came from.
_WORKER_SHARED: tuple[int, dict[str, Any]] | None = None


def _process_init(threads: int) -> None:
    """What a worker process runs first: its torch threads (see the module docstring)."""
    import torch

    torch.set_num_threads(threads)


def _process_task(fn: Callable[..., Any], item: Any, token: int, shared: str) -> bytes:
    """Run ``fn(item, **shared objects)`` in a worker; the shared objects are read from the
    run's file ``shared`` once per run (``token``). The result goes back pickled: tensors
    as bytes, not as shared-memory handles (one open file per tensor in the driver)."""
    global _WORKER_SHARED
    if _WORKER_SHARED is None or _WORKER_SHARED[0] != token:
        _WORKER_SHARED = None  # the previous run's objects are freed before these load
        with open(shared, "rb") as f:
            _WORKER_SHARED = (token, pickle.load(f))  # our own driver's file
    return pickle.dumps(fn(item, **_WORKER_SHARED[1]), protocol=pickle.HIGHEST_PROTOCOL)


@dataclass(frozen=True)
class ProcessOptions:
    """How many worker processes :class:`ProcessBackend` starts, and their torch threads.

    Attributes
    ----------
    workers
        Worker processes; None: this machine's usable CPUs // ``threads_per_worker``.
    threads_per_worker
        torch threads of each worker.
    """

    workers: int | None = None
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        owner = "ProcessOptions"
        if self.workers is not None:
            check_int(owner, "workers", self.workers, low=1)
        check_int(owner, "threads_per_worker", self.threads_per_worker, low=1)

    def resolved_workers(self) -> int:
        """The number of workers, with the default filled in."""
        if self.workers is not None:
            return self.workers
        return max(1, usable_cpus() // self.threads_per_worker)


def _unpicklable(shared: dict[str, Any], error: Exception) -> ParameterError:
    """The error for shared objects a worker process cannot receive, naming which."""
    bad = []
    for name, value in shared.items():
        try:
            pickle.dumps(value)
        except (pickle.PicklingError, AttributeError, TypeError):
            bad.append(name)
    return invalid("backend 'processes'", ", ".join(bad) or "shared objects",
                   "an object that pickles, to reach the worker processes (define a model's "
                   "class at module level, not inside a function or in a notebook; or use "
                   "backend 'local')", f"{type(error).__name__}: {error}", raw=True)


class ProcessBackend(Backend):
    """A pool of worker processes on this machine (spawned, so no thread pool or lock of
    the driver is inherited half-held), started at the first run and kept until
    :meth:`close`. ``fn``, the items and the shared objects must pickle."""

    name = "processes"

    def __init__(self, options: ProcessOptions | None = None) -> None:
        self.options = options or ProcessOptions()
        self._pool: Any = None  # concurrent.futures.ProcessPoolExecutor, started lazily
        self._runs = 0

    def _executor(self) -> Any:
        if self._pool is not None and getattr(self._pool, "_broken", False):
            self._stop()  # a worker died between runs (killed while idle)
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                max_workers=self.options.resolved_workers(),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_process_init, initargs=(self.options.threads_per_worker,))
        return self._pool

    def run(self, fn: Callable[..., R], items: Sequence[T],
            shared: Mapping[str, Any] | None = None) -> Iterator[tuple[int, R]]:
        if not items:
            return
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        kwargs = dict(shared or {})
        try:
            blob = pickle.dumps(kwargs, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise _unpicklable(kwargs, e) from None
        # Once per run, not with every task: the experiment shares every member's weights.
        fd, path = tempfile.mkstemp(prefix="robustness-shared-", suffix=".pkl")
        self._runs += 1
        pending: dict[Any, int] = {}
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            del blob
            pool = self._executor()
            pending = {pool.submit(_process_task, fn, item, self._runs, path): i
                       for i, item in enumerate(items)}
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        self._stop()  # a broken pool runs nothing more: the next run starts anew
                        unfinished = len(pending) + 1
                        raise RuntimeError(
                            f"a worker process of the processes backend died (killed, or "
                            f"out of memory) with {unfinished} of {len(items)} tasks "
                            "unfinished; what finished is kept where the command saves as "
                            "it goes") from None
                    yield index, pickle.loads(result)  # our own worker's bytes
        finally:
            if pending:  # interrupted or failed: nothing keeps running for nobody
                self._stop()
            os.unlink(path)  # also when writing it failed (a full disk): nothing is left

    def _stop(self) -> None:
        """Cancel what has not started, end the workers of what has."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()  # a running task cannot be cancelled any other way
        pool.shutdown(wait=True, cancel_futures=True)

    def slots(self) -> int:
        return self.options.resolved_workers()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "workers": self.options.resolved_workers(),
                "threads_per_worker": self.options.threads_per_worker}

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray and what each task asks of it.

    Attributes
    ----------
    address
        An existing cluster (``"ray://host:10001"``, ``"host:6379"``, ``"auto"``); None
        starts a local instance limited to this machine's CPUs (or connects to
        ``RAY_ADDRESS`` when that environment variable is set, as ``ray.init`` does).
    cpus_per_task
        CPUs Ray reserves per task; also the task's torch threads.
    gpus_per_task
        GPUs Ray reserves per task (0 on CPU-only machines).
    max_retries
        How often Ray re-runs a task whose worker process died.
    """

    address: str | None = None
    cpus_per_task: int = 1
    gpus_per_task: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        owner = "RayOptions"
        if self.address is not None and (not isinstance(self.address, str)
                                         or not self.address.strip()):
            raise invalid(owner, "address", "a Ray address such as 'auto' or "
                          "'ray://host:10001'", self.address)
        check_int(owner, "cpus_per_task", self.cpus_per_task, low=1)
        check_float(owner, "gpus_per_task", self.gpus_per_task, low=0.0)
        check_int(owner, "max_retries", self.max_retries, low=0)


def _ray_task(fn: Callable[..., R], item: Any, threads: int, **shared: Any) -> R:
    """What a Ray worker runs: fix torch's threads (see the module docstring), then ``fn``."""
    import torch

    torch.set_num_threads(threads)
    return fn(item, **shared)


class RayBackend(Backend):
    """One Ray task per item; shared objects put into the object store once per run."""

    name = "ray"

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        try:
            import ray
        except ImportError as e:
            raise BackendUnavailable(RAY_INSTALL_HINT) from e
        self._ray = ray
        self._started = False

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():  # the caller's own ray.init() (or an earlier run) wins
            return
        quiet: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                 "configure_logging": True}
        try:
            if self.options.address is None and not os.environ.get("RAY_ADDRESS"):
                ray.init(num_cpus=os.cpu_count() or 1, **quiet)
            else:
                ray.init(address=self.options.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = self.options.address or os.environ.get("RAY_ADDRESS")
            raise BackendUnavailable(f"could not reach the Ray cluster at {where!r}: "
                                     f"{e}") from e
        self._started = True

    def run(self, fn: Callable[..., R], items: Sequence[T],
            shared: Mapping[str, Any] | None = None) -> Iterator[tuple[int, R]]:
        if not items:
            return
        ray = self._ray
        self._connect()
        refs = {k: ray.put(v) for k, v in (shared or {}).items()}  # once, not per task
        remote = ray.remote(_ray_task).options(
            num_cpus=self.options.cpus_per_task, num_gpus=self.options.gpus_per_task,
            max_retries=self.options.max_retries, retry_exceptions=False)
        pending = {remote.remote(fn, item, self.options.cpus_per_task, **refs): i
                   for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        # The task's own error, as a local run raises it (a bad parameter
                        # stays one line), not wrapped in Ray's remote traceback.
                        cause = getattr(e, "cause", None)
                        raise (cause if isinstance(cause, BaseException)
                               else e.as_instanceof_cause()) from None
                    yield index, result
        finally:
            for ref in pending:  # interrupted or failed: nothing keeps running for nobody
                ray.cancel(ref, force=True)

    def slots(self) -> int:
        self._connect()
        cpus = float(self._ray.cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus // self.options.cpus_per_task))

    def describe(self) -> dict[str, Any]:
        o = self.options
        return {"backend": self.name, "address": o.address or os.environ.get("RAY_ADDRESS"),
                "cpus_per_task": o.cpus_per_task, "gpus_per_task": o.gpus_per_task,
                "max_retries": o.max_retries}

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def get_backend(backend: str | Backend = "local", *, owner: str = "backend",
                ray_address: str | None = None, ray_cpus_per_task: int | None = None,
                ray_gpus_per_task: float | None = None, workers: int | None = None,
                threads_per_worker: int | None = None, cli_names: bool = False) -> Backend:
    """A :class:`Backend` from its name (``"local"``, ``"processes"``, ``"ray"``) or the
    backend itself.

    The ``ray_*`` options apply to ``"ray"`` only, ``workers`` and ``threads_per_worker``
    to ``"processes"`` only; giving one with another backend is an error rather than
    silently ignored. ``cli_names``: name them in errors as the command line spells them
    (``--ray-cpus-per-task``).
    """
    if isinstance(backend, Backend):
        return backend

    def spelled(name: str) -> str:
        return f"--{name.replace('_', '-')}" if cli_names else name

    name = check_choice(owner, spelled("backend"), backend, BACKENDS)
    given = {k: v for k, v in (("ray_address", ray_address),
                               ("ray_cpus_per_task", ray_cpus_per_task),
                               ("ray_gpus_per_task", ray_gpus_per_task),
                               ("workers", workers),
                               ("threads_per_worker", threads_per_worker)) if v is not None}
    for option, value in given.items():
        needs = "ray" if option.startswith("ray_") else "processes"
        if name != needs:
            raise invalid(owner, spelled(option), f"given only with {spelled('backend')} "
                          f"{needs}", value)
    if name == "local":
        return LocalBackend()
    if name == "processes":
        return ProcessBackend(ProcessOptions(
            workers=workers, threads_per_worker=1 if threads_per_worker is None
            else threads_per_worker))
    options = RayOptions(address=ray_address,
                         cpus_per_task=1 if ray_cpus_per_task is None else ray_cpus_per_task,
                         gpus_per_task=0.0 if ray_gpus_per_task is None else ray_gpus_per_task)
    return RayBackend(options)


def add_backend_options(p: argparse.ArgumentParser, work: str) -> None:
    """``--backend local|processes|ray`` and the options of a command, read by
    :func:`backend_from_args`."""
    from robustness.core.argtypes import non_negative_number, positive_int

    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help=f"where {work} runs: this process (default), worker processes on "
                        "this machine, or Ray workers, one task each (a local Ray "
                        "instance, or --ray-address)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes, with --backend processes (default: this "
                        "machine's CPUs // --threads-per-worker)")
    p.add_argument("--threads-per-worker", type=positive_int, default=None,
                   help="torch threads of each worker process, with --backend processes "
                        "(default: 1)")
    p.add_argument("--ray-address", default=None,
                   help="an existing Ray cluster, e.g. 'auto' or ray://HOST:10001 (with "
                        "--backend ray; default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--ray-cpus-per-task", type=positive_int, default=None,
                   help="CPUs per Ray task, also its torch threads (default: 1)")
    p.add_argument("--ray-gpus-per-task", type=non_negative_number, default=None,
                   help="GPUs per Ray task (default: 0)")


def backend_from_args(args: argparse.Namespace, command: str) -> Backend:
    """The backend of a command's ``--backend`` options (see :func:`add_backend_options`);
    without Ray installed, one line saying how to install it."""
    return get_backend(args.backend, owner=f"robustness {command}",
                       ray_address=args.ray_address, ray_cpus_per_task=args.ray_cpus_per_task,
                       ray_gpus_per_task=args.ray_gpus_per_task, workers=args.workers,
                       threads_per_worker=args.threads_per_worker, cli_names=True)


__all__ = ["BACKENDS", "RAY_INSTALL_HINT", "Backend", "BackendUnavailable", "LocalBackend",
           "ProcessBackend", "ProcessOptions", "RayBackend", "RayOptions", "add_backend_options",
           "backend_from_args", "get_backend", "usable_cpus"]
