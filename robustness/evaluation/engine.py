"""model x attacks x eps -> RobustnessReport, with the honest-evaluation checks run by default.

Semantics (as AutoAttack and RobustBench report them):

* Only samples the model classifies correctly are attacked; a misclassified sample is
  non-robust at every budget.
* Each attack runs on every correctly classified sample, so each row of the report is
  that attack's own robust accuracy. The **worst case** at an eps counts a sample as
  robust only if every attack failed on it; it is never above any single attack.
* Bounded attacks are built once per eps. Unbounded (minimum-norm) attacks such as
  ``torchattacks:CW`` run once; a sample counts as broken at eps when the attack
  succeeded with a perturbation no larger than eps.
* With ``source_model``, adversarial examples are crafted on the source and judged on
  the evaluated model: a **transfer** attack.
* With ``cascade=True`` (AutoAttack's way), each attack runs only on the samples every
  earlier attack of its norm left robust at that eps. The worst case is the same
  measurement, for less work; each row is then a **cascade row**: the robust accuracy
  against that attack *and every one before it* (``AttackResult.cascade_after``), not
  the attack's own. The checks that compare attacks sample by sample need every attack
  on every sample, so in a cascade they are limited (a finding says which).

The engine is three steps, so that a run can be sharded (Ray) or resumed: :func:`plan`
lists the tasks (attack x eps x shard of the attacked samples), :func:`run_task` runs one
task and returns plain per-sample outcomes, :func:`merge` turns every task's outcome into
the report's rows, worst cases and findings. :func:`evaluate` does all three locally.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attacks.base import budget_ok, check_model_output
from attacks.registry import AttackSpec, parse_attack_spec
from robustness.core.backend import Backend, get_backend
from robustness.core.modes import eval_mode, predict
from robustness.core.provenance import library_versions, run_environment
from robustness.core.stats import wilson_interval
from robustness.core.validation import (
    EPS_EXPECTED,
    check_bool,
    check_float,
    check_images,
    check_int,
    check_labels,
    invalid,
)
from robustness.data import Dataset
from robustness.evaluation.checks import (
    Outcome,
    activity_checks,
    large_eps_check,
    model_checks,
    reference_check,
    result_checks,
)
from robustness.evaluation.report import AttackResult, Finding, RobustnessReport, WorstCase
from robustness.evaluation.shards import ShardStore, model_digest

OWNER = "evaluate"
AttackSpecLike = str | tuple[str, dict[str, Any]] | AttackSpec
"""An attack: a registry name (``"pgd"``, ``"torchattacks:CW"``), optionally with
keyword arguments in parentheses (``"pgd(steps=20)"``), ``(name, kwargs)``, or an
:class:`~attacks.registry.AttackSpec`."""

CHECK_SAMPLE = 200  # samples used by the model checks and the large-eps check


@dataclass(frozen=True)
class Task:
    """One unit of work: one attack at one budget on one shard of the attacked samples.

    ``eps`` is None for an unbounded (minimum-norm) attack, run once and judged at every
    budget. ``start:stop`` indexes the correctly classified samples, in order; in a
    cascade ``samples`` lists the ones of them this task attacks (ascending, within
    ``start:stop``).
    """

    spec: AttackSpec
    eps: float | None
    start: int
    stop: int
    samples: tuple[int, ...] | None = None

    def positions(self) -> torch.Tensor:
        """(S,) int64: the attacked samples' positions among the correctly classified."""
        if self.samples is None:
            return torch.arange(self.start, self.stop)
        return torch.tensor(self.samples, dtype=torch.int64)

    @property
    def size(self) -> int:
        """S, the number of samples this task attacks."""
        return self.stop - self.start if self.samples is None else len(self.samples)


@dataclass(frozen=True)
class Plan:
    """Every task of an evaluation, in the order a local run performs them."""

    specs: tuple[AttackSpec, ...]
    eps: tuple[float, ...]
    bounded: dict[str, bool]
    seed: int
    tasks: tuple[Task, ...]
    norms: dict[str, str] = dataclasses.field(default_factory=dict)  # attack label -> norm


@dataclass(frozen=True)
class TaskResult:
    """What one task found, per attacked sample of its shard (all tensors (S,))."""

    task: Task
    fooled: torch.Tensor  # bool: the evaluated model misclassifies the adversarial input
    perturbation_norm: torch.Tensor
    queries: torch.Tensor
    gradient_evaluations: torch.Tensor
    seconds: float
    norm: str
    threat_model: str
    description: str


def plan(attacks: Sequence[AttackSpecLike], eps: Sequence[float], *, n_attacked: int,
         seed: int = 0, shard_size: int = 500) -> Plan:
    """List the tasks: each attack at each budget (once if unbounded), in shards.

    Every attack is built once here, so a bad name or argument fails before any work.
    """
    if isinstance(attacks, str) or not isinstance(attacks, Sequence):
        raise invalid(OWNER, "attacks", "a list of attack specs such as ['fgsm', 'pgd']",
                      attacks)
    check_int(OWNER, "seed", seed, low=0)
    if not attacks:  # clean accuracy only, e.g. on a fixed set of adversarial examples
        if isinstance(eps, int | float) or not isinstance(eps, Sequence) or eps:
            raise invalid(OWNER, "eps", "an empty list when attacks is empty (a clean-only "
                          "evaluation)", eps)
        return Plan((), (), {}, seed, ())
    if isinstance(eps, int | float) or not isinstance(eps, Sequence) or not eps:
        raise invalid(OWNER, "eps", "a non-empty list of budgets such as [0.1, 0.2, 0.3]", eps)
    # eps 0 is no attack: its "robust accuracy" is the clean accuracy the report already has.
    eps_values = tuple(sorted({check_float(OWNER, "eps", e, low=0.0, low_open=True,
                                           expected=EPS_EXPECTED) for e in eps}))
    check_int(OWNER, "seed", seed, low=0)
    check_int(OWNER, "batch_size", shard_size, low=1)
    specs = tuple(parse_attack_spec(s) for s in attacks)
    for s in specs:
        if "eps" in s.kwargs:  # two sources for one budget: refuse rather than pick one
            raise invalid(OWNER, "attacks", f"attack specs without their own eps (the budgets "
                          f"come from eps={list(eps_values)})", s.label)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise invalid(OWNER, "attacks", "a list without duplicates", labels)
    bounded = {s.label: s.bounded(seed=seed) for s in specs}
    norms = {}
    for s in specs:  # at every budget: eps 1e308 is refused here, not mid-run
        for e in (eps_values if bounded[s.label] else (None,)):
            norms[s.label] = s.build(e, seed=seed).norm
    shards = [(i, min(i + shard_size, n_attacked)) for i in range(0, n_attacked, shard_size)]
    tasks = tuple(Task(s, e, start, stop) for s in specs
                  for e in (eps_values if bounded[s.label] else (None,))
                  for start, stop in shards)
    return Plan(specs, eps_values, bounded, seed, tasks, norms)


def cascade_tasks(the_plan: Plan, spec: AttackSpec,
                  alive: dict[tuple[str, float], torch.Tensor], *,
                  shard_size: int) -> list[Task]:
    """The tasks of ``spec`` in a cascade: at each eps, only the samples still robust.

    ``alive`` maps every (norm, eps) of the plan to an (A,) bool mask over the correctly
    classified samples: not broken by any earlier attack of that norm at that eps. An
    unbounded attack runs once, on the samples still robust at some eps.
    """
    norm = the_plan.norms[spec.label]

    def shards(e: float | None, keep: torch.Tensor) -> list[Task]:
        pos = keep.nonzero().squeeze(1).tolist()
        return [Task(spec, e, pos[i], pos[min(i + shard_size, len(pos)) - 1] + 1,
                     tuple(pos[i:i + shard_size])) for i in range(0, len(pos), shard_size)]

    if the_plan.bounded[spec.label]:
        return [t for e in the_plan.eps for t in shards(e, alive[(norm, e)])]
    return shards(None, torch.stack([alive[(norm, e)] for e in the_plan.eps]).any(0))


def run_task(task: Task, model: nn.Module, craft: nn.Module, x: torch.Tensor, y: torch.Tensor,
             *, seed: int, transfer: bool, attacked: torch.Tensor | None = None) -> TaskResult:
    """Run one task on its shard of the attacked samples (models already in eval mode).

    Adversarial inputs are crafted on ``craft`` and judged on ``model`` (the same module
    unless this is a transfer evaluation). ``x`` (N, C, H, W) and ``y`` (N,) hold the
    attacked samples only, or every sample with ``attacked`` (A,) int64 giving the
    attacked ones' indices, so that no copy of the attacked images is needed.
    """
    attack = task.spec.build(task.eps, seed=seed)
    where: slice | torch.Tensor = \
        slice(task.start, task.stop) if task.samples is None else task.positions()
    if attacked is not None:
        if not isinstance(attacked, torch.Tensor) or attacked.dim() != 1 \
                or attacked.dtype != torch.int64 or task.stop > len(attacked) \
                or (len(attacked) and not 0 <= int(attacked.min()) <= int(attacked.max()) < len(x)):
            got = f"shape {tuple(attacked.shape)}, dtype {attacked.dtype}" \
                if isinstance(attacked, torch.Tensor) else type(attacked).__name__
            raise invalid("run_task", "attacked", f"a 1-d int64 tensor of at least "
                          f"{task.stop} indices into x (0 to {len(x) - 1})", got, raw=True)
        where = attacked[where]
    xs, ys = x[where], y[where]
    # Transfer: perturb every sample, including those the source already gets wrong,
    # or they would reach the evaluated model unperturbed.
    batch = attack(craft, xs, ys, every_sample=transfer)
    pred = predict(model, batch.x_adv).argmax(1) if transfer else batch.predictions
    return TaskResult(task=task, fooled=pred != ys, perturbation_norm=batch.perturbation_norm,
                      queries=batch.queries, gradient_evaluations=batch.gradient_evaluations,
                      seconds=batch.wall_time_s, norm=attack.norm,
                      threat_model="transfer" if transfer else attack.threat_model,
                      description=repr(attack))


@dataclass
class _Merged:
    """Every shard of one (attack, budget) run joined: (A,) tensors over attacked samples."""

    parts: list[TaskResult]

    def cat(self, name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name) for p in self.parts])


def _shared_task(task: Task, *, model: nn.Module, craft: nn.Module | None, x: torch.Tensor,
                 y: torch.Tensor, attacked: torch.Tensor, seed: int,
                 transfer: bool) -> TaskResult:
    """:func:`run_task` with the objects a backend shares between tasks (``craft`` None:
    the evaluated model itself, shipped once)."""
    return run_task(task, model, model if craft is None else craft, x, y, seed=seed,
                    transfer=transfer, attacked=attacked)


def _echo_run(echo: Callable[[str], None], shards: list[TaskResult]) -> None:
    """One progress line when every shard of an (attack, budget) run has finished."""
    task = shards[0].task
    fooled = sum(int(r.fooled.sum()) for r in shards)
    attacked = sum(len(r.fooled) for r in shards)
    budget = "unbounded" if task.eps is None else f"eps {task.eps:<6g}"
    echo(f"  {task.spec.label:<28} {budget} fooled {fooled}/{attacked} "
         f"({sum(r.seconds for r in shards):.1f} s)")


def merge(the_plan: Plan, results: Sequence[TaskResult], correct: torch.Tensor, *,
          cascade: bool = False) -> tuple[list[Outcome], list[WorstCase]]:
    """Join every task's shards into one row per attack x eps, and the worst case per eps.

    ``correct`` (N,) bool marks the samples the model classifies correctly: the attacked
    ones, in the order the tasks index them. Results may arrive in any order. With
    ``cascade``, the results are those of :func:`cascade_tasks` and each row is a cascade
    row: robust to that attack and every earlier one of its norm.
    """
    n = len(correct)
    idx = correct.nonzero().squeeze(1)
    groups: dict[tuple[str, float | None], _Merged] = {}
    for r in sorted(results, key=lambda r: r.task.start):
        groups.setdefault((r.task.spec.label, r.task.eps), _Merged([])).parts.append(r)
    # (norm, eps) -> (A,) bool: not broken by an earlier attack (cascade only).
    alive: dict[tuple[str, float], torch.Tensor] = {}
    before: dict[str, list[str]] = {}  # norm -> the attacks of the cascade so far
    outcomes: list[Outcome] = []
    for spec in the_plan.specs:
        runs = the_plan.eps if the_plan.bounded[spec.label] else (None,)
        norm = the_plan.norms.get(spec.label, "")
        after = list(before.get(norm, [])) if cascade else []
        for budget in runs:
            merged = groups.get((spec.label, budget))
            # In a cascade a run can have no task: nothing was left robust to attack.
            if merged is None and len(idx) and not cascade:
                raise invalid("merge", "results", "a result for every task of the plan",
                              f"none for {spec.label} at eps {budget}", raw=True)
            for e in ([budget] if budget is not None else the_plan.eps):
                o = _outcome(spec, e, merged, idx, n, alive.get((norm, e)), after)
                if cascade:
                    alive[(norm, e)] = o.robust[idx]
                outcomes.append(o)
        before.setdefault(norm, []).append(spec.label)
    # One worst case per (norm, eps): an L2 budget and an L-inf budget of the same number
    # are different threat models and must not be combined.
    worst = [worst_case(e, correct, [(o.result.attack, o.robust) for o in outcomes
                                     if o.result.eps == e and o.result.norm == norm],
                        norm=norm)
             for e in the_plan.eps
             for norm in dict.fromkeys(o.result.norm for o in outcomes if o.result.eps == e)]
    return outcomes, worst


def _outcome(spec: AttackSpec, eps: float, merged: _Merged | None, idx: torch.Tensor,
             n: int, alive: torch.Tensor | None, cascade_after: list[str]) -> Outcome:
    """One report row (and its per-sample robustness) from the joined shards; in a cascade
    ``alive`` (A,) marks the samples no earlier attack broke."""
    if merged is None:  # nothing was attacked: every sample misclassified or already broken
        attack = spec.build(eps if spec.bounded() else None)
        broken = torch.zeros(0, dtype=torch.bool)
        positions = torch.zeros(0, dtype=torch.int64)
        norms = queries = grads = torch.zeros(0)
        seconds, norm, threat, description = 0.0, attack.norm, attack.threat_model, \
            repr(attack)
    else:
        first = merged.parts[0]
        broken = merged.cat("fooled")
        positions = torch.cat([p.task.positions() for p in merged.parts])
        norms, queries = merged.cat("perturbation_norm"), merged.cat("queries")
        grads = merged.cat("gradient_evaluations")
        seconds = sum(p.seconds for p in merged.parts)
        norm, threat, description = first.norm, first.threat_model, first.description
        if first.task.eps is None:  # unbounded: broken at eps only within the budget
            broken = broken & budget_ok(norms, eps)
    robust_attacked = torch.ones(len(idx), dtype=torch.bool) if alive is None else alive.clone()
    robust_attacked[positions] &= ~broken
    robust = torch.zeros(n, dtype=torch.bool)
    robust[idx] = robust_attacked
    k = int(robust.sum())
    lo, hi = wilson_interval(k, n)
    result = AttackResult(
        attack=spec.label, eps=eps, norm=norm, threat_model=threat, robust_accuracy=k / n,
        ci_low=lo, ci_high=hi,
        success_rate=float(broken.float().mean()) if len(broken) else 0.0,
        median_perturbation=float(norms[broken].median()) if bool(broken.any()) else None,
        queries=float(queries.double().median()) if len(queries) else 0.0,
        seconds=seconds, n=n, n_attacked=len(broken),
        gradient_evaluations=int(grads.sum()) if len(grads) else 0, description=description,
        robust_samples=_bits(robust), cascade_after=cascade_after)
    single_step = bool(len(grads)) and int(grads.max()) == 1
    untouched = bool(len(norms)) and bool((norms == 0).all())
    return Outcome(result=result, robust=robust, single_step=single_step, untouched=untouched)


def _unpack_data(data: Dataset | tuple[torch.Tensor, torch.Tensor],
                 n: int | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    if isinstance(data, Dataset):
        x, y, meta = data.x_test, data.y_test, {**data.to_dict_meta(), "part": "test"}
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
        meta = {"name": "user tensors"}
    else:
        raise invalid(OWNER, "data", "a Dataset or an (x, y) pair of tensors",
                      type(data).__name__, raw=True)
    check_images(OWNER, x, name="data[0] (x)")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
        got = f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise invalid(OWNER, "data[1] (y)", f"a 1-d tensor with one label per image "
                      f"({len(x)})", got, raw=True)
    if n is not None:
        check_int(OWNER, "n", n, low=1, high=len(x))
        x, y = x[:n], y[:n]
    meta["n_used"] = len(x)
    # Which exact samples were evaluated: reports pair two runs per sample only when equal.
    meta["digest"] = _digest(x, y)
    return x, y, meta


def _digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) over the evaluated images and labels, in order."""
    h = hashlib.sha256()
    # The tensors' own buffers (memoryviews, no copy): tobytes() held a second copy of
    # every image, which made evaluate()'s peak memory grow with n.
    h.update(x.detach().to(torch.float32).contiguous().cpu().numpy().data)
    h.update(y.detach().to(torch.int64).contiguous().cpu().numpy().data)
    return h.hexdigest()[:16]


def evaluate(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    attacks: Sequence[AttackSpecLike],
    eps: Sequence[float],
    *,
    n: int | None = None,
    seed: int = 0,
    checks: bool = True,
    source_model: nn.Module | None = None,
    batch_size: int = 500,
    model_info: dict[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
    backend: str | Backend = "local",
    resume_dir: str | os.PathLike[str] | None = None,
    cascade: bool = False,
) -> RobustnessReport:
    """Evaluate ``model`` against every attack at every eps.

    Parameters
    ----------
    model
        Maps (N, C, H, W) in [0, 1] to logits (N, K). Left in the mode it was in.
    data
        A :class:`~robustness.data.Dataset` (its test split is used) or ``(x, y)``
        with x (N, C, H, W) in [0, 1] and y (N,) int64.
    attacks
        Attack specs, run in this order: ``["fgsm", "pgd(steps=20)", "genetic"]``. Empty
        (with ``eps`` empty too): clean accuracy only, e.g. on a fixed adversarial set.
    eps
        Budgets in each attack's norm, e.g. ``[0.1, 0.2, 0.3]``.
    n
        Use only the first ``n`` samples.
    seed
        Seed of every attack.
    checks
        Run the sanity checks (:mod:`robustness.evaluation.checks`) and record their findings.
    source_model
        Craft the adversarial examples on this model instead (transfer evaluation).
    batch_size
        Samples per attack call (bounds memory).
    model_info
        Extra provenance about the model (e.g. checkpoint metadata).
    echo
        Called with one line per finished attack, for progress output.
    backend
        Where the tasks (attack x eps x shard of ``batch_size`` samples) run: ``"local"``,
        ``"ray"`` or a :class:`~robustness.core.backend.Backend`. The shards merge into
        the report a local run gives, per sample (equal bit for bit when a Ray task has as
        many torch threads as this process); the clean pass and the sanity checks run here.
    resume_dir
        Keep every finished task here (:mod:`robustness.evaluation.shards`), so that the
        same evaluation re-run after a crash loads them instead of attacking again.
    cascade
        Attack in a cascade (AutoAttack's): each attack, in the order given, only on the
        samples that every earlier attack of its norm left robust at that eps. The worst
        case measures the same thing for less work (put the cheap, strong attacks first);
        the per-attack rows become cascade rows (``AttackResult.cascade_after``), the
        robust accuracy against that attack and all before it. Default False: every
        attack on every sample, each row the attack's own.

    Returns
    -------
    RobustnessReport
    """
    started = time.perf_counter()
    x, y, data_meta = _unpack_data(data, n)
    check_int(OWNER, "batch_size", batch_size, low=1)
    parse_plan = plan(attacks, eps, n_attacked=0, seed=seed)  # fails fast on bad specs
    runner = get_backend(backend, owner=OWNER)
    try:
        return _evaluate(model, x, y, data_meta, parse_plan, seed=seed, checks=checks,
                         source_model=source_model, batch_size=batch_size,
                         model_info=model_info, echo=echo, runner=runner, started=started,
                         resume_dir=resume_dir, cascade=check_bool(OWNER, "cascade", cascade))
    finally:
        if not isinstance(backend, Backend):  # started here (a local Ray), so stopped here
            runner.close()


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, data_meta: dict[str, Any],
              parse_plan: Plan, *, seed: int, checks: bool, source_model: nn.Module | None,
              batch_size: int, model_info: dict[str, Any] | None,
              echo: Callable[[str], None] | None, runner: Backend, started: float,
              resume_dir: str | os.PathLike[str] | None, cascade: bool) -> RobustnessReport:

    craft = source_model if source_model is not None else model
    with eval_mode(model, craft):
        num_classes = check_model_output(OWNER, model, x)
        check_labels(OWNER, y, len(x), num_classes, name="data[1] (y)")
        if source_model is not None:
            k = check_model_output(OWNER, source_model, x)
            if k != num_classes:
                raise invalid(OWNER, "source_model", f"a model with {num_classes} classes like "
                              "the evaluated one", f"{k} classes", raw=True)
        correct = predict(model, x).argmax(1) == y  # (N,): only these are attacked
        # Indices, not x[correct]: a copy of every attacked image would make the peak
        # memory grow with n instead of with the batch size.
        attacked = correct.nonzero().squeeze(1)
        the_plan = plan(parse_plan.specs, parse_plan.eps, n_attacked=len(attacked), seed=seed,
                        shard_size=batch_size)
        transfer = source_model is not None
        # The models and samples go to the workers once (Ray's object store).
        shared = {"model": model, "craft": None if craft is model else craft, "x": x,
                  "y": y, "attacked": attacked, "seed": seed, "transfer": transfer}
        store = None if resume_dir is None else ShardStore(resume_dir, {
            "model": model_digest(model), "data": data_meta["digest"],
            "source_model": None if craft is model else model_digest(craft),
            "attacks": [s.label for s in the_plan.specs], "eps": list(the_plan.eps),
            "seed": seed, "shard_size": batch_size, "versions": library_versions(),
            **({"cascade": True} if cascade else {})})
        results: list[TaskResult] = []

        def run(tasks: Sequence[Task]) -> None:
            """Run (or load) ``tasks``; one progress line per finished (attack, eps)."""
            saved = [store.load(t) if store is not None else None for t in tasks]
            todo = [t for t, r in zip(tasks, saved, strict=True) if r is None]
            if store is not None and echo is not None and len(todo) < len(tasks):
                echo(f"  resumed {len(tasks) - len(todo)} of {len(tasks)} tasks from "
                     f"{store.dir}")
            expected = collections.Counter((t.spec.label, t.eps) for t in tasks)
            done: dict[tuple[str, float | None], list[TaskResult]] = {}

            def arrived(result: TaskResult) -> None:
                results.append(result)
                key = (result.task.spec.label, result.task.eps)
                done.setdefault(key, []).append(result)
                if echo is not None and len(done[key]) == expected[key]:  # its last shard
                    _echo_run(echo, sorted(done[key], key=lambda r: r.task.start))

            for result in saved:
                if result is not None:
                    arrived(result)
            for _, result in runner.run(_shared_task, todo, shared):
                if store is not None:  # kept before anything else: a crash now loses nothing
                    store.save(result)
                arrived(result)

        if not cascade:
            run(the_plan.tasks)
        else:  # attack by attack, each on what the earlier ones left robust
            alive = {(the_plan.norms[s.label], e): torch.ones(len(attacked), dtype=torch.bool)
                     for s in the_plan.specs for e in the_plan.eps}
            for i, spec in enumerate(the_plan.specs):
                run(cascade_tasks(the_plan, spec, alive, shard_size=batch_size))
                so_far = dataclasses.replace(the_plan, specs=the_plan.specs[:i + 1])
                outcomes, _ = merge(so_far, results, correct, cascade=True)
                for o in outcomes:
                    alive[(o.result.norm, o.result.eps)] = o.robust[correct]
        outcomes, worst = merge(the_plan, results, correct, cascade=cascade)
        # Our own PGD is the reference the other gradient attacks are compared with.
        exempt = {s.label for s in the_plan.specs if s.factory is None
                  and s.name in ("pgd", "pgd-l2")}
        findings = _findings(model, craft, x, y, correct, outcomes, seed, exempt,
                             cascade=cascade) if checks else []

    provenance = {
        "model": {"description": type(model).__name__,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  **(model_info or {})},
        "source_model": None if source_model is None else {
            "description": type(source_model).__name__,
            "parameters": sum(p.numel() for p in source_model.parameters())},
        "dataset": data_meta,
        "attacks": [spec.label for spec in the_plan.specs],
        "eps": list(the_plan.eps),
        "seed": seed,
        "cascade": cascade,
        "backend": runner.describe(),
        "versions": run_environment(),
        "seconds": time.perf_counter() - started,
    }
    return RobustnessReport(clean_accuracy=int(correct.sum()) / len(x), n_samples=len(x),
                            results=[o.result for o in outcomes], worst_case=worst,
                            findings=findings, provenance=provenance,
                            clean_samples=_bits(correct))


def _findings(model: nn.Module, craft: nn.Module, x: torch.Tensor, y: torch.Tensor,
              correct: torch.Tensor, outcomes: list[Outcome], seed: int,
              exempt: set[str], *, cascade: bool = False) -> list[Finding]:
    """The sanity checks: on the model alone, across results, on every attack's activity
    and against a reference PGD, and at a huge budget.

    In a cascade a later attack's row holds the earlier attacks' breaks too, so only each
    norm's first attack (whose row is its own) is held against the reference PGD.
    """
    sample = slice(0, CHECK_SAMPLE)
    first = correct.nonzero().squeeze(1)[sample]  # no second copy of every attacked image
    xa, ya = x[first], y[first]
    threat_models = {o.result.attack: o.result.threat_model for o in outcomes}
    findings = model_checks(model, x[sample], y[sample])
    findings += result_checks(outcomes, threat_models, cascade=cascade)
    findings += activity_checks(outcomes)
    own = [o for o in outcomes if not o.result.cascade_after]
    findings += reference_check(model, x, y, correct, own, exempt, seed=seed)
    for norm in sorted({o.result.norm for o in outcomes if o.result.norm in ("linf", "l2")}):
        if len(xa):
            findings += large_eps_check(craft, xa, ya, norm, seed=seed)
    return findings


def worst_case(eps: float, correct: torch.Tensor,
               robust_by_attack: Sequence[tuple[str, torch.Tensor]], *,
               norm: str = "") -> WorstCase:
    """Per-sample worst case at one eps, over attacks of one norm.

    Parameters
    ----------
    eps
        The budget.
    correct
        (N,) bool: clean prediction correct.
    robust_by_attack
        ``(attack, robust)`` in the order the attacks ran, ``robust`` (N,) bool.
    norm
        The norm ``eps`` is measured in (``"linf"``, ``"l2"``, ``"none"``), recorded.

    Returns
    -------
    WorstCase
        A sample is robust only if it was correct and every attack failed on it;
        ``broken_by`` credits each sample to the first attack that broke it.
    """
    robust = correct.clone()
    broken_by: dict[str, int] = {}
    for name, mask in robust_by_attack:
        broken_by[name] = int((robust & ~mask).sum())
        robust &= mask
    n = len(correct)
    k = int(robust.sum())
    lo, hi = wilson_interval(k, n)
    return WorstCase(eps=eps, robust_accuracy=k / n, ci_low=lo, ci_high=hi, n=n,
                     attacks=[name for name, _ in robust_by_attack], broken_by=broken_by,
                     robust_samples=_bits(robust), norm=norm)


def _bits(mask: torch.Tensor) -> str:
    """(N,) bool -> "0110...": per-sample outcomes that stay compact in JSON."""
    return "".join("1" if v else "0" for v in mask.tolist())


__all__ = ["AttackSpecLike", "Plan", "Task", "TaskResult", "evaluate", "merge", "plan",
           "run_task", "worst_case"]
