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
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attacks.base import AdversarialBatch, Attack, budget_ok, check_model_output, eval_mode
from robustness.checks import Outcome, large_eps_check, model_checks, result_checks
from robustness.data import Dataset
from robustness.report import AttackResult, RobustnessReport, WorstCase
from robustness.stats import wilson_interval
from robustness.validation import (
    ParameterError,
    check_float,
    check_images,
    check_int,
    check_labels,
    invalid,
)

OWNER = "evaluate"
AttackSpec = str | tuple[str, dict[str, Any]]
"""An attack: a registry name (``"pgd"``, ``"torchattacks:CW"``), optionally with
keyword arguments in parentheses (``"pgd(steps=20)"``), or ``(name, kwargs)``."""

CHECK_SAMPLE = 200  # samples used by the model checks and the large-eps check


@dataclass(frozen=True)
class _Spec:
    label: str
    name: str
    kwargs: dict[str, Any]


def parse_attack_specs(text: str) -> list[str]:
    """Split ``"fgsm,pgd(steps=20,step_size=0.01),genetic"`` on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise invalid(OWNER, "attacks", "a comma-separated list with balanced parentheses",
                          text)
        current += ch
    parts.append(current.strip())
    if depth != 0 or not all(parts):
        raise invalid(OWNER, "attacks", "a comma-separated list of attack names such as "
                      "'fgsm,pgd(steps=20),genetic'", text)
    return parts


def _parse_spec(spec: AttackSpec) -> _Spec:
    from attacks.registry import parse_attack_kwargs

    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) \
            and isinstance(spec[1], dict):
        name, kwargs = spec[0], dict(spec[1])
        label = name if not kwargs else f"{name}({','.join(f'{k}={v}' for k, v in kwargs.items())})"
        return _Spec(label, name, kwargs)
    if not isinstance(spec, str) or not spec.strip():
        raise invalid(OWNER, "attacks", "names such as 'pgd' or (name, kwargs) pairs", spec)
    text = spec.strip()
    if text.endswith(")") and "(" in text:
        name, args = text[:-1].split("(", 1)
        pairs = parse_attack_specs(args) if args.strip() else []
        return _Spec(text, name.strip(), parse_attack_kwargs(pairs))
    return _Spec(text, text, {})


def _build(spec: _Spec, eps: float | None, seed: int) -> Attack:
    from attacks.registry import make_attack

    kwargs = {"seed": seed, **spec.kwargs}
    if eps is not None:
        kwargs["eps"] = eps
    return make_attack(spec.name, **kwargs)


def _is_bounded(spec: _Spec, seed: int) -> bool:
    """Does the attack take a budget? Decided by building it without one.

    Attacks with a default budget (ours, torchattacks' PGD) report it in ``eps``;
    foolbox's fixed-epsilon attacks refuse to be built without one; minimum-norm
    attacks (CW, DeepFool) build fine and report ``eps=None``.
    """
    from attacks.registry import make_attack

    try:
        probe = make_attack(spec.name, **{"seed": seed, **spec.kwargs})
    except ParameterError:
        return True  # a real error in the spec resurfaces when it is built with eps
    return probe.eps is not None


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
        check_int(OWNER, "n", n, low=1)
        x, y = x[:n], y[:n]
    meta["n_used"] = len(x)
    return x, y, meta


def evaluate(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    attacks: Sequence[AttackSpec],
    eps: Sequence[float],
    *,
    n: int | None = None,
    seed: int = 0,
    checks: bool = True,
    source_model: nn.Module | None = None,
    batch_size: int = 500,
    model_info: dict[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
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
        Attack specs, run in this order: ``["fgsm", "pgd(steps=20)", "genetic"]``.
    eps
        Budgets in each attack's norm, e.g. ``[0.1, 0.2, 0.3]``.
    n
        Use only the first ``n`` samples.
    seed
        Seed of every attack.
    checks
        Run the sanity checks (:mod:`robustness.checks`) and record their findings.
    source_model
        Craft the adversarial examples on this model instead (transfer evaluation).
    batch_size
        Samples per attack call (bounds memory).
    model_info
        Extra provenance about the model (e.g. checkpoint metadata).
    echo
        Called with one line per finished attack, for progress output.

    Returns
    -------
    RobustnessReport
    """
    started = time.perf_counter()
    x, y, data_meta = _unpack_data(data, n)
    if isinstance(attacks, str) or not isinstance(attacks, Sequence) or not attacks:
        raise invalid(OWNER, "attacks", "a non-empty list of attack specs such as "
                      "['fgsm', 'pgd']", attacks)
    if isinstance(eps, int | float) or not isinstance(eps, Sequence) or not eps:
        raise invalid(OWNER, "eps", "a non-empty list of budgets such as [0.1, 0.2, 0.3]", eps)
    eps_values = sorted({check_float(OWNER, "eps", e, low=0.0) for e in eps})
    check_int(OWNER, "seed", seed, low=0)
    check_int(OWNER, "batch_size", batch_size, low=1)
    specs = [_parse_spec(s) for s in attacks]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise invalid(OWNER, "attacks", "a list without duplicates", labels)
    bounded = {s.label: _is_bounded(s, seed) for s in specs}
    # Build every attack once up front so a bad name or argument fails before any work.
    for s in specs:
        _build(s, eps_values[0] if bounded[s.label] else None, seed)

    craft = source_model if source_model is not None else model
    with eval_mode(model, craft):
        num_classes = check_model_output(OWNER, model, x)
        check_labels(OWNER, y, len(x), num_classes, name="data[1] (y)")
        if source_model is not None:
            k = check_model_output(OWNER, source_model, x)
            if k != num_classes:
                raise invalid(OWNER, "source_model", f"a model with {num_classes} classes like "
                              "the evaluated one", f"{k} classes", raw=True)
        report = _run(model, craft, x, y, specs, bounded, eps_values, seed, checks,
                      source_model is not None, batch_size, echo)

    provenance = {
        "model": {"description": type(model).__name__,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  **(model_info or {})},
        "source_model": None if source_model is None else {
            "description": type(source_model).__name__,
            "parameters": sum(p.numel() for p in source_model.parameters())},
        "dataset": data_meta,
        "attacks": labels,
        "eps": eps_values,
        "seed": seed,
        "versions": _versions(),
        "seconds": time.perf_counter() - started,
    }
    return RobustnessReport(clean_accuracy=report["clean"], n_samples=len(x),
                            results=report["results"], worst_case=report["worst"],
                            findings=report["findings"], provenance=provenance)


def _versions() -> dict[str, str]:
    from robustness.checkpoint import library_versions

    return {**library_versions(), "platform": platform.platform()}


def _attack_in_batches(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       batch_size: int) -> tuple[AdversarialBatch, float]:
    """Run ``attack`` over (x, y) in chunks; return the concatenated batch and seconds."""
    parts = [attack(model, x[i:i + batch_size], y[i:i + batch_size])
             for i in range(0, len(x), batch_size)]
    if len(parts) == 1:
        return parts[0], parts[0].wall_time_s
    first = parts[0]
    joined = AdversarialBatch(
        x_adv=torch.cat([p.x_adv for p in parts]),
        success=torch.cat([p.success for p in parts]),
        perturbation_norm=torch.cat([p.perturbation_norm for p in parts]),
        predictions=torch.cat([p.predictions for p in parts]),
        queries=torch.cat([p.queries for p in parts]),
        gradient_evaluations=torch.cat([p.gradient_evaluations for p in parts]),
        wall_time_s=sum(p.wall_time_s for p in parts),
        attack=first.attack, norm=first.norm, eps=first.eps, targets=None)
    return joined, joined.wall_time_s


def _run(model: nn.Module, craft: nn.Module, x: torch.Tensor, y: torch.Tensor,
         specs: list[_Spec], bounded: dict[str, bool], eps_values: list[float], seed: int,
         checks: bool, transfer: bool, batch_size: int,
         echo: Callable[[str], None] | None) -> dict[str, Any]:
    n = len(x)
    with torch.no_grad():
        clean_pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, n, 1000)])
    correct = clean_pred == y  # (N,)
    idx = correct.nonzero().squeeze(1)
    xa, ya = x[idx], y[idx]

    outcomes: list[Outcome] = []
    threat_models: dict[str, str] = {}
    for spec in specs:
        runs = [(e, _build(spec, e, seed)) for e in eps_values] if bounded[spec.label] else \
            [(None, _build(spec, None, seed))]
        for budget, attack in runs:
            threat = "transfer" if transfer else type(attack).threat_model
            threat_models[spec.label] = threat
            if len(idx):
                batch, seconds = _attack_in_batches(attack, craft, xa, ya, batch_size)
                if transfer:
                    with torch.no_grad():
                        pred = torch.cat([model(batch.x_adv[i:i + 1000]).argmax(1)
                                          for i in range(0, len(idx), 1000)])
                else:
                    pred = batch.predictions
                fooled = pred != ya
            else:
                batch, seconds, fooled = None, 0.0, torch.zeros(0, dtype=torch.bool)
            per_eps = [budget] if budget is not None else eps_values
            for e in per_eps:
                broken = fooled.clone()
                if budget is None and batch is not None:
                    broken &= budget_ok(batch.perturbation_norm, e)
                robust = torch.zeros(n, dtype=torch.bool)
                robust[idx] = ~broken
                result = _result(spec.label, e, threat, attack, batch, broken, robust, seconds,
                                 n)
                outcomes.append(Outcome(result=result, robust=robust,
                                        single_step=_single_step(batch)))
                if echo is not None:
                    echo(f"  {spec.label:<28} eps {e:<6g} robust accuracy "
                         f"{result.robust_accuracy:.3f}  ({seconds:.1f} s)")

    worst = [worst_case(e, correct, [(o.result.attack, o.robust) for o in outcomes
                                     if o.result.eps == e]) for e in eps_values]

    findings = []
    if checks:
        sample = slice(0, CHECK_SAMPLE)
        findings += model_checks(model, x[sample], y[sample])
        findings += result_checks(outcomes, threat_models)
        for norm in sorted({o.result.norm for o in outcomes if o.result.norm in ("linf", "l2")}):
            if len(idx):
                findings += large_eps_check(craft, xa[sample], ya[sample], norm, seed=seed)
    return {"clean": int(correct.sum()) / n, "results": [o.result for o in outcomes],
            "worst": worst, "findings": findings}


def worst_case(eps: float, correct: torch.Tensor,
               robust_by_attack: Sequence[tuple[str, torch.Tensor]]) -> WorstCase:
    """Per-sample worst case at one eps.

    Parameters
    ----------
    eps
        The budget.
    correct
        (N,) bool: clean prediction correct.
    robust_by_attack
        ``(attack, robust)`` in the order the attacks ran, ``robust`` (N,) bool.

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
                     attacks=[name for name, _ in robust_by_attack], broken_by=broken_by)


def _single_step(batch: AdversarialBatch | None) -> bool:
    return batch is not None and bool(len(batch.gradient_evaluations)) and \
        int(batch.gradient_evaluations.max()) == 1


def _result(label: str, eps: float, threat: str, attack: Attack, batch: AdversarialBatch | None,
            broken: torch.Tensor, robust: torch.Tensor, seconds: float, n: int) -> AttackResult:
    k = int(robust.sum())
    lo, hi = wilson_interval(k, n)
    n_attacked = len(broken)
    if batch is not None and bool(broken.any()):
        median_pert: float | None = float(batch.perturbation_norm[broken].median())
    else:
        median_pert = None
    return AttackResult(
        attack=label, eps=eps, norm=attack.norm, threat_model=threat, robust_accuracy=k / n,
        ci_low=lo, ci_high=hi,
        success_rate=float(broken.float().mean()) if n_attacked else 0.0,
        median_perturbation=median_pert,
        queries=float(batch.queries.double().median()) if batch is not None else 0.0,
        seconds=seconds, n=n, n_attacked=n_attacked,
        gradient_evaluations=int(batch.gradient_evaluations.sum()) if batch is not None else 0,
        description=repr(attack))


__all__ = ["AttackSpec", "evaluate", "parse_attack_specs", "worst_case"]
