"""Automatic honest-evaluation checks (Carlini et al. 2019; AutoAttack's flags).

Two kinds of check:

* **model checks** look at the model itself before any attack: probability outputs
  instead of logits, randomness between forward passes, zero / NaN / exploding input
  gradients;
* **result checks** look at the attack results: iterative attacks must do at least as
  well as single-step ones, success must not fall as eps grows, a large-eps attack must
  reach (near) 100% success, and a gradient-free attack beating the gradient attacks
  (overall or per sample) points to gradient masking;
* **attack checks** make sure every attack was seen to work: one that made no model
  queries, left every sample untouched, or is far weaker than a reference PGD at the
  same norm and eps is an ``error`` (a broken attack reads as robustness).

Every finding says what was seen, why it matters and what to do. Severity ``warning``
or ``error`` means "do not trust the robust accuracy yet"; ``info`` is context.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from robustness.evaluation.report import AttackResult, Finding

# A check compares rates over the same samples; below this difference it stays quiet
# (one or two samples in a few hundred is noise from stochastic attacks, not a flaw).
RATE_TOLERANCE = 0.01
LARGE_EPS = {"linf": 0.5, "l2": 10.0}
LARGE_EPS_MIN_SUCCESS = 0.95
REFERENCE_SAMPLE = 100  # attacked samples the reference PGD runs on
REFERENCE_STEPS = 20
REFERENCE_P = 0.01  # significance of "far weaker than the reference"


@dataclass(frozen=True)
class Outcome:
    """One attack at one eps, with the per-sample robustness mask the checks need."""

    result: AttackResult
    robust: torch.Tensor  # (N,) bool: still correctly classified after the attack
    single_step: bool
    untouched: bool = False  # every attacked sample came back with a zero perturbation


def model_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[Finding]:
    """Checks on the model alone, on a sample (x (N, C, H, W), y (N,)). Model in eval mode."""
    findings: list[Finding] = []
    with torch.no_grad():
        first, second = model(x), model(x)
    if not torch.equal(first, second):
        diff = float((first - second).abs().max())
        findings.append(Finding(
            "non-determinism", "error",
            f"Two forward passes on the same inputs differ (max |diff| {diff:.3g}). A "
            "randomized model makes single-run attack results optimistic; attack the "
            "expectation over the randomness (EOT) and report it, or fix the randomness."))
    rows = first.sum(1)
    if bool((first >= 0).all() and (first <= 1).all()) and bool(
            torch.allclose(rows, torch.ones_like(rows), atol=1e-3)):
        findings.append(Finding(
            "probability-outputs", "warning",
            "The model's outputs are in [0, 1] and sum to 1: it returns probabilities, not "
            "logits. Cross-entropy on probabilities saturates and weakens gradient attacks; "
            "remove the final softmax (or evaluate the logits) before trusting the result."))

    x_req = x.detach().clone().requires_grad_(True)
    logits = model(x_req)
    if not logits.requires_grad:
        findings.append(Finding(
            "input-gradients", "error",
            "The model's output carries no gradient to its input (argmax / one-hot outputs, "
            "or torch.no_grad inside forward). Gradient attacks cannot run on it and their "
            "robust accuracy would be meaningless; use gradient-free attacks (genetic) or "
            "attack a differentiable surrogate (BPDA)."))
        return findings
    loss = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_req)
    norms = grad.flatten(1).norm(dim=1)  # (N,)
    if not bool(torch.isfinite(norms).all()):
        bad = int((~torch.isfinite(norms)).sum())
        findings.append(Finding(
            "input-gradients", "error",
            f"The input gradient is NaN or infinite on {bad} of {len(norms)} samples. "
            "Gradient attacks cannot work from it, so their robust accuracy is meaningless; "
            "find the non-differentiable or unstable operation."))
    else:
        zero = float((norms == 0).float().mean())
        if zero > 0.05:
            findings.append(Finding(
                "input-gradients", "warning",
                f"The input gradient is exactly zero on {zero:.0%} of {len(norms)} correctly "
                "and incorrectly classified samples: gradient masking (saturated softmax, "
                "quantisation, or a non-differentiable step). Gradient attacks will look "
                "weak; trust the gradient-free and adaptive attacks instead."))
        big = float(norms.median())
        if big > 1e6:
            findings.append(Finding(
                "input-gradients", "warning",
                f"The median input-gradient norm is {big:.3g}: exploding gradients make "
                "fixed-step attacks overshoot. Check the model's scaling."))
    return findings


def result_checks(outcomes: list[Outcome], threat_models: Mapping[str, str], *,
                  cascade: bool = False) -> list[Finding]:
    """Checks across attack results. ``threat_models`` maps attack name to its threat model.

    With ``cascade`` the rows are cascade rows (each against its attack and every earlier
    one), so no row can be compared with another's rate, and a later attack cannot be
    compared per sample with an earlier one it never saw the samples of. What is left:
    a gradient-free attack run after every gradient attack still counts, per sample, the
    samples it broke that they all left robust; and each row's rise with eps.
    """
    findings: list[Finding] = []
    if cascade:
        findings.append(Finding(
            "cascade", "info",
            "Cascade evaluation: each attack ran only on the samples the earlier attacks of "
            "its norm left robust, so each row is the robust accuracy against that attack and "
            "every earlier one, and the worst case is the last. Not run in a cascade: "
            "iterative vs single-step, the rate comparison of gradient-free vs gradient "
            "attacks, and the reference-PGD check of every attack but the first of each "
            "norm. Evaluate without cascade to check each attack on its own."))
    # Attacks are comparable only at the same budget in the same norm.
    by_budget: dict[tuple[float, str], list[Outcome]] = {}
    for o in outcomes:
        by_budget.setdefault((o.result.eps, o.result.norm), []).append(o)

    for (eps, norm), group in sorted(by_budget.items()):
        where = f"{norm} eps {eps:g}" if norm != "none" else f"eps {eps:g}"
        if not cascade:
            findings += _iterative_vs_single_step(where, group)
        findings += _gradient_free_vs_gradient(where, group, threat_models, cascade=cascade)

    by_attack: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_attack.setdefault(o.result.attack, []).append(o)
    for attack, group in by_attack.items():
        ordered = sorted(group, key=lambda o: o.result.eps)
        for lo, hi in itertools.pairwise(ordered):
            a, b = lo.result, hi.result
            if b.robust_accuracy > a.robust_accuracy + RATE_TOLERANCE:
                findings.append(Finding(
                    "monotone-eps", "warning",
                    f"{attack}: robust accuracy rises from {a.robust_accuracy:.3f} at eps "
                    f"{a.eps:g} to {b.robust_accuracy:.3f} at eps {b.eps:g}. A larger budget "
                    "contains every smaller one, so the attack is failing to optimise "
                    "(too few steps, a bad step size, or masked gradients)."))
    return findings


def _iterative_vs_single_step(where: str, group: list[Outcome]) -> list[Finding]:
    out: list[Finding] = []
    for single in (o for o in group if o.single_step):
        for it in (o for o in group if not o.single_step and o.result.norm == single.result.norm
                   and o.result.threat_model == single.result.threat_model
                   and o.result.gradient_evaluations > 0):
            s, i = single.result, it.result
            only_single = int((~single.robust & it.robust).sum())
            if i.robust_accuracy > s.robust_accuracy + RATE_TOLERANCE:
                out.append(Finding(
                    "iterative-vs-single-step", "warning",
                    f"At {where} the iterative {i.attack} leaves {i.robust_accuracy:.3f} "
                    f"robust accuracy, more than the single-step {s.attack} "
                    f"({s.robust_accuracy:.3f}). Iterative attacks should be at least as "
                    "strong; this is a classic sign of gradient masking or a broken step size."))
            elif only_single > RATE_TOLERANCE * len(single.robust):
                out.append(Finding(
                    "iterative-vs-single-step", "warning",
                    f"At {where} {s.attack} breaks {only_single} samples that {i.attack} "
                    "does not. Per sample an iterative attack should dominate a single step; "
                    "increase steps / restarts or check for masked gradients."))
    return out


def _gradient_free_vs_gradient(where: str, group: list[Outcome],
                               threat_models: Mapping[str, str], *,
                               cascade: bool = False) -> list[Finding]:
    black = [o for o in group if threat_models.get(o.result.attack) == "black-box"]
    white = [o for o in group if threat_models.get(o.result.attack) == "white-box"]
    if cascade:  # only a gradient-free attack that ran after every gradient attack
        names = {o.result.attack for o in white}
        black = [b for b in black if names <= set(b.result.cascade_after)]
    if not black or not white:
        return []
    out: list[Finding] = []
    n = len(group[0].robust)
    white_robust = torch.stack([o.robust for o in white]).all(0)  # (N,)
    best_white = min(o.result.robust_accuracy for o in white)
    for b in black:
        beaten = int((~b.robust & white_robust).sum())
        if not cascade and b.result.robust_accuracy < best_white - RATE_TOLERANCE:
            out.append(Finding(
                "gradient-free-beats-gradient", "warning",
                f"At {where} the gradient-free {b.result.attack} reaches robust accuracy "
                f"{b.result.robust_accuracy:.3f}, below the best gradient attack "
                f"({best_white:.3f}). White-box attacks should be stronger than black-box "
                "ones: the gradients are likely masked. Use adaptive attacks (BPDA, EOT, "
                "margin loss) and report the worst case."))
        elif beaten > RATE_TOLERANCE * n:
            out.append(Finding(
                "gradient-free-beats-gradient", "warning",
                f"At {where} the gradient-free {b.result.attack} breaks {beaten} samples "
                f"({beaten / n:.1%}) that every gradient attack left robust: possible gradient "
                "masking on those samples. Inspect them and strengthen the white-box attacks."))
        elif beaten:
            out.append(Finding(
                "gradient-free-beats-gradient", "info",
                f"At {where} the gradient-free {b.result.attack} breaks {beaten} samples "
                "that no gradient attack broke; too few to suggest masking. The worst case "
                "counts them."))
    return out


def activity_checks(outcomes: list[Outcome]) -> list[Finding]:
    """An attack that made no model queries, or returned every attacked input unchanged."""
    idle: dict[str, list[float]] = {}
    still: dict[str, list[float]] = {}
    for o in outcomes:
        r = o.result
        if r.n_attacked == 0:
            continue
        if r.queries == 0 and r.gradient_evaluations == 0:
            idle.setdefault(r.attack, []).append(r.eps)
        elif o.untouched:
            still.setdefault(r.attack, []).append(r.eps)
    findings = [Finding(
        "attack-inactive", "error",
        f"{attack} made no model queries and no gradient evaluations at eps "
        f"{', '.join(f'{e:g}' for e in eps)}: it never looked at the model, so its robust "
        "accuracy says nothing. Check its arguments (e.g. steps >= 1).")
        for attack, eps in idle.items()]
    findings += [Finding(
        "attack-no-effect", "error",
        f"{attack} returned every attacked input unchanged at eps "
        f"{', '.join(f'{e:g}' for e in eps)}: no perturbation at all is a broken attack "
        "(or arguments that switch it off), not robustness.")
        for attack, eps in still.items()]
    return findings


def _could_be_weaker(broken: int, sample: int) -> bool:
    """Could any reference outcome on ``sample`` samples flag an attack that broke
    ``broken`` of them? The strongest case is a reference that breaks every sample: it
    breaks more than twice as many only if ``2 * broken < sample``, and its evidence is
    ``sample - broken`` discordant pairs, all for the reference."""
    from robustness.core.stats import sign_test

    return 2 * broken < sample and \
        sign_test(sample - broken, 0, alternative="greater") < REFERENCE_P


def reference_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor,
                    outcomes: list[Outcome], exempt: set[str], *, seed: int = 0
                    ) -> list[Finding]:
    """Compare every white-box attack with a reference attack on a small sample.

    Iterative attacks are compared with a 20-step PGD; single-step attacks with our FGSM
    (one signed-gradient step of size eps: the weakest working attack at that budget), so
    a one-step attack that does nothing cannot pass as robustness either.

    Parameters
    ----------
    model
        The attacked model (eval mode).
    x, y
        (N, C, H, W) inputs and (N,) labels: the whole evaluated sample.
    correct
        (N,) bool: the samples that were attacked.
    outcomes
        The results; attacks in ``exempt`` (our own PGD: the reference itself),
        gradient-free, transfer and unnormed attacks are not checked.

    Returns
    -------
    list[Finding]
        An ``error`` per attack and budget where the reference breaks significantly
        more of the sample (one-sided exact sign test, p < 0.01) and the attack breaks
        fewer than half as many.
    """
    from attacks.gradient import FGSM, PGD
    from robustness.core.stats import sign_test

    idx = correct.nonzero().squeeze(1)[:REFERENCE_SAMPLE]
    checked = [o for o in outcomes if o.result.threat_model == "white-box"
               and o.result.norm in LARGE_EPS and o.result.attack not in exempt]
    if not len(idx) or not checked:
        return []
    findings: list[Finding] = []
    for norm, eps, single in dict.fromkeys((o.result.norm, o.result.eps, o.single_step)
                                           for o in checked):
        group = [o for o in checked if (o.result.norm, o.result.eps, o.single_step)
                 == (norm, eps, single)]
        # No reference outcome could flag an attack that already breaks half the sample:
        # skip the reference attack then (the findings are the same, for less work).
        if not any(_could_be_weaker(int((~o.robust[idx]).sum()), len(idx)) for o in group):
            continue
        reference = FGSM(norm=norm, eps=eps, seed=seed) if single else \
            PGD(norm=norm, eps=eps, steps=REFERENCE_STEPS, seed=seed)
        name = "FGSM" if single else f"{REFERENCE_STEPS}-step PGD"
        ref_broken = reference(model, x[idx], y[idx]).success
        for o in group:
            broken = ~o.robust[idx]
            only_ref = int((ref_broken & ~broken).sum())
            only_attack = int((broken & ~ref_broken).sum())
            if int(broken.sum()) * 2 < int(ref_broken.sum()) and \
                    sign_test(only_ref, only_attack, alternative="greater") < REFERENCE_P:
                findings.append(Finding(
                    "weaker-than-reference", "error",
                    f"At {norm} eps {eps:g} {o.result.attack} breaks {int(broken.sum())} of "
                    f"{len(idx)} samples where a reference {name} breaks "
                    f"{int(ref_broken.sum())}: the attack is not working (bad arguments or "
                    "a broken integration), and its robust accuracy overstates robustness. "
                    "Fix it, or rely on the worst case with PGD."))
    return findings


def large_eps_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, *,
                    seed: int = 0) -> list[Finding]:
    """Run PGD at a budget that must break any classifier and check it (nearly) always wins.

    At L-inf 0.5 every MNIST-like image can be turned mid-grey (Carlini et al. 2019), so a
    working attack reaches ~100% success; failing to means the attack, not the model, is
    the problem.
    """
    from attacks.gradient import PGD

    eps = LARGE_EPS[norm]
    attack = PGD(norm=norm, eps=eps, steps=50, step_size=eps / 10, restarts=1, early_stop=True,
                 seed=seed)
    batch = attack(model, x, y)
    rate = batch.success_rate
    if rate >= LARGE_EPS_MIN_SUCCESS:
        return []
    return [Finding(
        "large-eps", "warning",
        f"PGD at the very large budget {norm} eps {eps:g} succeeds on only {rate:.1%} of "
        f"{len(y)} samples; any classifier should fall to chance there. The gradient attacks "
        "are not working on this model (masked or obfuscated gradients), so their robust "
        "accuracy overstates robustness. Try gradient-free and adaptive attacks.")]
