"""Speed, measured against peers in the same run: the pieces every benchmark shares, and
the quick subset behind ``robustness bench``.

A speed claim is a ratio to something timed in the same process and the same rounds (the
floor of the model itself, or a peer library), the median of several repeats with its
min-max, on a machine whose CPU features are printed with it: the project's CPUs differ
(AVX2 only, AVX-512, AMX), and a ratio means little without them. Each benchmark ends with
its :class:`Target` lines, met or missed by how much; :func:`write_record` stores them
with the machine and the command, and :func:`reports.benchmarks.render_benchmarks`
turns the records into ``docs/benchmarks.md``.

The full benchmarks are ``benchmarks/bench_*.py`` (``nox -s bench``). The quick subset
(:func:`run_quick`, a minute or two on 2 cores) needs only the installed package: PGD-10
and FGSM of ours against the model's floor and against torchattacks (when installed) and
foolbox, at batch 32 and 256, and our genetic attack's untargeted success.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attacks.base import Attack
from attacks.genetic import GeneticAttack
from attacks.gradient import FGSM, PGD
from robustness.core.io import write_json
from robustness.core.modes import balanced_rows, fast_layout, pass_rows
from robustness.core.text import figure
from robustness.core.validation import invalid

# The issue-16 targets the gradient section checks.
PGD_EPS, PGD_STEP, PGD_STEPS = 0.3, 0.03, 10
FULL_CALL_TARGET = 1.02  # PGD-k full call <= 1.02 x k x floor of the model as given
FAST_LAYOUT_TARGET = 0.8  # ... and <= 0.8 x that floor at batch 256, in the fastest layout
GENETIC_SUCCESS_TARGET = 0.99


def cpu_features() -> str:
    """The SIMD/matrix features this run had, and what torch dispatches to."""
    flags: set[str] = set()
    model = ""  # the same flags run at different speeds on different CPUs: name it
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    have = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
            if f in flags]
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    return f"{model + ', ' if model else ''}{platform.processor() or platform.machine()}; " \
           f"flags {' '.join(have) or 'none'}; torch capability {capability}"


def machine_line() -> str:
    """One line: torch, threads, load average and CPU features (with a warning if busy)."""
    load = os.getloadavg()[0]
    line = (f"torch {torch.__version__}, {torch.get_num_threads()} threads of "
            f"{os.cpu_count()} CPUs, load average {load:.2f}; {cpu_features()}")
    if load > 0.5:
        line += "\nwarning: the machine is busy; timings (and ratios) will be noisy"
    return line


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated calls (seconds), or ratios of such times, one per round."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def __truediv__(self, other: Timing) -> Timing:
        """Round by round, ``self / other``: both were timed in the same rounds, so a load
        change hits a round's numerator and denominator alike."""
        if len(other.samples) != len(self.samples):
            return Timing((self.median / other.median,))
        return Timing(tuple(a / b for a, b in zip(self.samples, other.samples, strict=True)))

    def text(self, fmt: str = ".2f") -> str:
        """``median (low-high)``."""
        return f"{self.median:{fmt}} ({self.low:{fmt}}-{self.high:{fmt}})"

    def summary(self) -> dict[str, float]:
        """``{"median", "min", "max"}`` for a JSON record."""
        return {"median": self.median, "min": self.low, "max": self.high}


def interleaved_times(fns: dict[str, Callable[[], object]], *,
                      repeats: int) -> dict[str, Timing]:
    """Wall time of each function over ``repeats`` calls, after one warm-up call each.

    The functions are timed round-robin, one call each per round, so that a change of
    load on a shared machine hits all of them alike instead of whichever ran then.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(t)) for name, t in times.items()}


def floor_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One forward + backward w.r.t. the input: (N, C, H, W) -> gradient (N, C, H, W)."""
    xa = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
    return grad


@dataclass(frozen=True)
class Target:
    """One target of a benchmark and what this run measured against it.

    ``goal`` reads like ``"<= 1.02"``; ``spread`` is the min-max of the measurement where
    it has one; ``note`` says what was measured or, when missed, by how much and why.
    """

    name: str
    goal: str
    measured: float
    met: bool
    spread: tuple[float, float] | None = None
    unit: str = ""
    note: str = ""

    def line(self) -> str:
        """One printed line: ``target NAME: MEASURED (spread) vs GOAL: met / MISSED (...)``."""
        spread = f" ({figure(self.spread[0])}-{figure(self.spread[1])})" if self.spread else ""
        verdict = "met" if self.met else f"MISSED ({self.miss()})"
        note = f"; {self.note}" if self.note else ""
        return (f"target {self.name}: {figure(self.measured)}{self.unit}{spread} vs "
                f"{self.goal}{self.unit}: {verdict}{note}")

    def miss(self) -> str:
        """How far off a missed target is, relative to its bound."""
        op, bound = self.goal.split()
        limit = float(bound)
        if limit == 0:
            return f"off by {figure(self.measured)}"
        gap = (self.measured - limit) / abs(limit) if op.startswith("<") else \
            (limit - self.measured) / abs(limit)
        return f"by {gap:.1%}" if gap < 0.01 else f"by {gap:.0%}"


def at_most(name: str, measured: Timing | float, bound: float, *, unit: str = "",
            note: str = "", missed_because: str = "") -> Target:
    """The target ``measured <= bound`` (on the median, when ``measured`` is a Timing)."""
    return _target(name, measured, "<=", bound, unit, note, missed_because)


def at_least(name: str, measured: Timing | float, bound: float, *, unit: str = "",
             note: str = "", missed_because: str = "") -> Target:
    """The target ``measured >= bound``."""
    return _target(name, measured, ">=", bound, unit, note, missed_because)


def _target(name: str, measured: Timing | float, op: str, bound: float, unit: str,
            note: str, missed_because: str) -> Target:
    value = measured.median if isinstance(measured, Timing) else float(measured)
    spread = (measured.low, measured.high) if isinstance(measured, Timing) else None
    met = value <= bound if op == "<=" else value >= bound
    if not met and missed_because:
        note = f"{note}; {missed_because}" if note else missed_because
    return Target(name, f"{op} {bound:g}", value, met, spread, unit, note)


def print_targets(targets: list[Target]) -> None:
    """Every target, one line each, and how many were met."""
    print(f"\nTargets: {sum(t.met for t in targets)} of {len(targets)} met")
    for t in targets:
        print(f"  {t.line()}")


def command_line() -> str:
    """How this process was started, as a user would type it again."""
    program = Path(sys.argv[0])
    head = f"python {program}" if program.suffix == ".py" else program.name
    return " ".join([head, *sys.argv[1:]])


def write_record(path: Path, benchmark: str, targets: list[Target], *,
                 summary: list[str] | None = None, **results: Any) -> dict[str, Any]:
    """Write one benchmark's JSON record (atomically) and return it.

    The record holds what ``docs/benchmarks.md`` is rendered from: the benchmark's name,
    the command line, when and on what machine it ran, its targets, a few ``summary``
    lines of figures that have no target, and its results.
    """
    record = {
        "benchmark": benchmark,
        "command": command_line(),
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_features(), "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average": os.getloadavg()[0]},
        "targets": [asdict(t) for t in targets],
        "summary": list(summary or []),
        **results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record


# --- the gradient attacks against the floor and the peers -------------------------------


def gradient_section(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: str,
                     repeats: int, extra: dict[str, Callable[[], object]] | None = None
                     ) -> tuple[dict[str, Timing], dict[str, Timing]]:
    """Time ``kind`` (``"pgd"``: PGD-10, or ``"fgsm"``) for ours and every peer installed.

    Parameters
    ----------
    model
        The model as the user gave it (eval mode).
    x, y
        (B, C, H, W) inputs in [0, 1] and (B,) labels.
    extra
        More peers to time in the same rounds, by name.

    Returns
    -------
    The wall time of each row, and each row's ratio to ``k`` floors of the model as given
    (``k`` = 10 for PGD-10, 1 for FGSM). Rows: ``floor``, ``floor, channels_last``,
    ``floor, channels_last, passes`` (in the cache-sized passes of
    :func:`~robustness.core.modes.pass_rows`), ``ours``, ``ours (attack loop)``,
    ``torchattacks``, ``foolbox`` and the ``extra`` ones.
    """
    import foolbox as fb

    steps = PGD_STEPS if kind == "pgd" else 1
    if kind == "pgd":
        ours: Attack = PGD(eps=PGD_EPS, steps=PGD_STEPS, step_size=PGD_STEP)
        fb_attack: Any = fb.attacks.LinfPGD(steps=PGD_STEPS, abs_stepsize=PGD_STEP)
    else:
        ours = FGSM(eps=PGD_EPS)
        fb_attack = fb.attacks.FGSM()
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)

    def floor() -> None:
        for _ in range(steps):
            floor_step(model, x, y)

    def floor_fast() -> None:
        with fast_layout(model, x) as x_fast:
            for _ in range(steps):
                floor_step(model, x_fast, y)

    def floor_passes() -> None:  # channels_last, in the passes our attacks run
        with fast_layout(model, x) as x_fast:
            size = balanced_rows(x.shape[0], pass_rows(model, x_fast))
            for _ in range(steps):
                for i in range(0, x.shape[0], size):
                    floor_step(model, x_fast[i:i + size], y[i:i + size])

    def loop() -> None:  # the attack loop alone, in the layout the full call uses
        with fast_layout(model, x) as x_fast:
            ours._run(model, x_fast, y, None)

    fns: dict[str, Callable[[], object]] = {
        "floor": floor,
        "floor, channels_last": floor_fast,
        "floor, channels_last, passes": floor_passes,
        "ours": partial(ours, model, x, y),
        "ours (attack loop)": loop,
        "foolbox": partial(fb_attack, fmodel, x, y, epsilons=PGD_EPS),
    }
    if importlib.util.find_spec("torchattacks") is not None:
        import torchattacks

        peer: Any = (torchattacks.PGD(model, eps=PGD_EPS, alpha=PGD_STEP, steps=PGD_STEPS)
                     if kind == "pgd" else torchattacks.FGSM(model, eps=PGD_EPS))
        fns["torchattacks"] = partial(peer, x, y)
    fns.update(extra or {})
    times = interleaved_times(fns, repeats=repeats)
    base = times["floor"]
    return times, {name: t / base for name, t in times.items()}


# FGSM is timed but has no target of its own: the targets are for PGD-k, and a
# one-step attack's verification forward is a third of its step.
FGSM_NOTE = ("FGSM is timed (rows in the JSON) without a target: the verification forward "
             "of its result is a third of its one step, and torchattacks does not verify")


def gradient_targets(kind: str, batch: int, ratios: dict[str, Timing]) -> list[Target]:
    """The issue-16 targets of one PGD section (none for FGSM, see ``FGSM_NOTE``): the
    full call against the floor, and against every peer in the same rounds."""
    if kind != "pgd":
        return []
    label, k = f"PGD-{PGD_STEPS}", PGD_STEPS
    ours = ratios["ours"]
    targets = [at_most(f"{label} full call / ({k} x floor as given), batch {batch}", ours,
                       FULL_CALL_TARGET,
                       missed_because="the call adds a shape check, the layout probe and "
                                      "a verification forward (of the samples no step "
                                      "scored) to the k steps")]
    for peer in ("torchattacks", "foolbox", "ART"):
        if peer in ratios:
            targets.append(at_most(f"{label} ours / {peer}, batch {batch}",
                                   ours / ratios[peer], 1.0,
                                   note=f"{peer} {ratios[peer].median:.2f} x floor"))
    if batch >= 256:
        fast = ratios["floor, channels_last"]
        passes = ratios["floor, channels_last, passes"]
        floors = (f"channels_last floor {fast.median:.2f} x the floor as given, in "
                  f"cache-sized passes {passes.median:.2f}")
        targets.append(at_most(
            f"{label} full call / ({k} x floor as given) in the fastest layout, batch {batch}",
            ours, FAST_LAYOUT_TARGET, note=floors,
            missed_because="the layout and the passes gain less on this CPU"
            if passes.median > 0.75 else ""))
    return targets


def gradient_sections(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                      batches: tuple[int, ...], repeats: int,
                      extra: Callable[[torch.Tensor, torch.Tensor],
                                      dict[str, Callable[[], object]]] | None = None
                      ) -> tuple[list[Target], dict[str, Any]]:
    """PGD-10 and FGSM (``4 x repeats`` rounds: one step is short) on the first ``batch``
    of (N, C, H, W) ``x`` for every batch size: printed, and returned as targets and
    JSON sections. ``extra(x, y)`` gives more PGD peers for a batch (e.g. ART).

    A batch below 128 gets ``128 // batch`` times the rounds: its calls are short (PGD-10
    at batch 32 ~0.17 s on 2 cores), so one descheduling moves a round by 10-20%, and the
    median of 7 rounds moved by as much between runs."""
    targets: list[Target] = []
    sections: dict[str, Any] = {}
    for batch in batches:
        xb, yb = x[:batch], y[:batch]
        for kind, k in (("pgd", PGD_STEPS), ("fgsm", 1)):
            peers = extra(xb, yb) if extra is not None and kind == "pgd" else None
            rounds = repeats * (1 if kind == "pgd" else 4) * max(1, 128 // batch)
            times, ratios = gradient_section(model, xb, yb, kind=kind, extra=peers,
                                             repeats=rounds)
            label = f"PGD-{PGD_STEPS} (L-inf, eps {PGD_EPS}, step {PGD_STEP})" \
                if kind == "pgd" else f"FGSM (eps {PGD_EPS})"
            print_gradient_table(f"{label}, batch {batch}", times, ratios, k)
            targets += gradient_targets(kind, batch, ratios)
            sections[f"{kind}_batch{batch}"] = {
                "seconds": {n: t.summary() for n, t in times.items()},
                "ratio_to_floor": {n: t.summary() for n, t in ratios.items()}}
    return targets, sections


def genetic_summary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targeted: bool,
                    generations: int) -> dict[str, Any]:
    """Our genetic attack (eps 0.3) on (N, C, H, W) images the model gets right: success
    rate, median queries (all samples, and successes only), seconds."""
    attack = GeneticAttack(eps=PGD_EPS, generations=generations, targeted=targeted)
    start = time.perf_counter()
    batch = attack(model, x, y)
    seconds = time.perf_counter() - start
    hit = batch.success
    return {"success_rate": float(hit.float().mean()), "n": int(x.shape[0]),
            "median_queries": float(batch.queries.double().median()),
            "median_queries_successful": float(batch.queries[hit].double().median())
            if bool(hit.any()) else None,
            "max_queries": int(batch.queries.max()), "seconds": seconds,
            "generations": generations, "targeted": targeted}


def print_gradient_table(title: str, times: dict[str, Timing], ratios: dict[str, Timing],
                         k: int) -> None:
    """The rows of a gradient section: seconds and ratio to k floors, median (min-max)."""
    print(f"\n{title}")
    print(f"  {'row':<28} {'seconds':>22} {f'/ ({k} x floor)':>22}")
    for name, t in times.items():
        print(f"  {name:<28} {t.text('.4f'):>22} {ratios[name].text():>22}")


# --- the quick subset ---------------------------------------------------------------------


def run_quick(out: Path, *, repeats: int = 5, batches: tuple[int, ...] = (32, 256),
              epochs: int = 2, genetic_images: int = 20, seed: int = 0) -> dict[str, Any]:
    """The quick benchmark: train the reference ConvNet briefly, time the gradient attacks
    against the floor and the peers, run the genetic attack; write ``out`` (JSON).

    Returns the record written (see :func:`write_record`).
    """
    from robustness.data import load_dataset
    from robustness.models import build_model
    from robustness.train import train

    data = load_dataset("mnist")
    n_test = int(data.x_test.shape[0])
    if max(batches) > n_test:
        raise invalid("robustness bench", "--batch", f"batch sizes of at most {n_test} (the "
                      "mnist test split)", max(batches))
    print(machine_line())
    model = build_model("convnet", data.input_shape, data.num_classes, seed=seed)
    train(model, data.x_train, data.y_train, epochs=epochs, seed=seed, progress=False)
    model.eval()
    with torch.no_grad():
        correct = model(data.x_test).argmax(1) == data.y_test
    print(f"ConvNet trained {epochs} epochs: clean accuracy {float(correct.float().mean()):.3f}")

    targets, sections = gradient_sections(model, data.x_test, data.y_test, batches=batches,
                                          repeats=repeats)
    if importlib.util.find_spec("torchattacks") is None:
        print("\ntorchattacks: not installed, not compared")

    gx, gy = data.x_test[correct][:genetic_images], data.y_test[correct][:genetic_images]
    genetic = genetic_summary(model, gx, gy, targeted=False, generations=1000)
    print(f"\nGenetic, untargeted, eps {PGD_EPS}, {genetic['n']} images: success "
          f"{genetic['success_rate']:.2f}, median queries {genetic['median_queries']:.0f}, "
          f"{genetic['seconds']:.1f} s")
    targets.append(at_least(f"genetic untargeted success, {genetic['n']} images",
                            genetic["success_rate"], GENETIC_SUCCESS_TARGET))
    print_targets(targets)
    return write_record(out, "quick", targets, summary=[FGSM_NOTE], gradient=sections,
                        genetic=genetic,
                        model={"name": "convnet", "data": "mnist", "epochs": epochs,
                               "clean_accuracy": float(correct.float().mean())})
