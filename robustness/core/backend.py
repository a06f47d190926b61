"""Where independent tasks run: in this process (``local``) or on Ray workers (``ray``).

The harness never schedules work itself. A caller splits its job into pure tasks (one
ensemble member, one attack x eps x shard of an evaluation), each a function of its item
and of some shared objects, and hands them to a backend:

* :class:`LocalBackend` runs them one after another in this process, in order (the
  default everywhere);
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
``cpus_per_task``; run the local backend with ``torch.set_num_threads(cpus_per_task)`` to
get bit-identical results.

Ray is an optional extra (``pip install 'robustness-harness[ray]'``), imported only
when a Ray backend is used.
"""

from __future__ import annotations

import argparse
import logging
import os
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

BACKENDS = ("local", "ray")
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
                ray_gpus_per_task: float | None = None, cli_names: bool = False) -> Backend:
    """A :class:`Backend` from its name (``"local"``, ``"ray"``) or the backend itself.

    The ``ray_*`` options apply to ``"ray"`` only; giving them with ``"local"`` is an
    error rather than silently ignored. ``cli_names``: name them in errors as the command
    line spells them (``--ray-cpus-per-task``).
    """
    if isinstance(backend, Backend):
        return backend

    def spelled(name: str) -> str:
        return f"--{name.replace('_', '-')}" if cli_names else name

    name = check_choice(owner, spelled("backend"), backend, BACKENDS)
    ray_given = {k: v for k, v in (("ray_address", ray_address),
                                   ("ray_cpus_per_task", ray_cpus_per_task),
                                   ("ray_gpus_per_task", ray_gpus_per_task)) if v is not None}
    if name == "local":
        if ray_given:
            first = next(iter(ray_given))
            raise invalid(owner, spelled(first), f"given only with {spelled('backend')} ray",
                          ray_given[first])
        return LocalBackend()
    options = RayOptions(address=ray_address,
                         cpus_per_task=1 if ray_cpus_per_task is None else ray_cpus_per_task,
                         gpus_per_task=0.0 if ray_gpus_per_task is None else ray_gpus_per_task)
    return RayBackend(options)


def add_backend_options(p: argparse.ArgumentParser, work: str) -> None:
    """``--backend local|ray`` and the Ray options of a command, read by
    :func:`backend_from_args`."""
    from robustness.core.argtypes import non_negative_number, positive_int

    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help=f"where {work} runs: this process (default) or Ray workers, one task "
                        "each (a local Ray instance, or --ray-address)")
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
                       ray_gpus_per_task=args.ray_gpus_per_task, cli_names=True)


__all__ = ["BACKENDS", "RAY_INSTALL_HINT", "Backend", "BackendUnavailable", "LocalBackend",
           "RayBackend", "RayOptions", "add_backend_options", "backend_from_args",
           "get_backend"]
