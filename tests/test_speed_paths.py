"""The speed paths of our attacks, each held to giving the results of the plain path.

1. The fast memory layout: gradient and genetic attacks run the model with
   ``channels_last`` weights (``fast_layout``) because convolutions are faster so on
   CPU: the same robust accuracy as the model's own layout, the weights given back in
   their own storage, and models that cannot run so left as they are.
2. The last step's logits: a sample a gradient step already scored as fooled is not
   re-evaluated by the template; its prediction is the model's own on those pixels.
3. The reference check skips its reference attack where no outcome of it could flag
   the attacks checked (they already break half the sample): the same findings.
4. The adaptive attack's surrogate crafting is reused when the same members are attacked
   on the same inputs again (one ensemble under several aggregations): the same report.
5. ``Attack.craft``, adversarial training's way to call an attack, skips the forward
   passes that judge the inputs: the inputs ``__call__`` returns, the same training.
6. Cache-sized passes: gradient attacks and the genetic attack run a large batch through
   the model in passes of about ``PASS_BYTES`` of its largest activation (``pass_rows``):
   the adversarial examples of one pass, and no split of a model that mixes rows or is
   small.
7. PGD adds to its per-sample counters once per restart, not on every step: the counts
   still match the model's gradient passes.
"""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from torch import nn

from attacks.base import RunResult
from attacks.conformance import check_attack
from attacks.genetic import GeneticAttack
from attacks.gradient import FGSM, PGD
from robustness.core import modes
from robustness.core.modes import balanced_rows, fast_layout, pass_rows
from robustness.core.validation import ParameterError
from robustness.data import Dataset
from robustness.evaluation import checks, evaluate


def _layout(model: nn.Module) -> list[tuple[int, tuple[int, ...]]]:
    """(storage address, strides) of every parameter: what the user's model looks like."""
    return [(p.data_ptr(), p.stride()) for p in model.parameters()]


def _as_given(attack: PGD) -> PGD:
    """The same attack, run on the model in the layout it was given in."""
    variant = copy.copy(attack)
    variant.memory_layout = "as-given"  # type: ignore[misc]
    return variant


def test_weights_run_in_channels_last_and_come_back_in_their_own_storage(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = attack_batch
    before = _layout(trained_convnet)
    values = [p.detach().clone() for p in trained_convnet.parameters()]
    with fast_layout(trained_convnet, x) as x_fast:
        inside = _layout(trained_convnet)
        assert x_fast.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x_fast, x)
        conv_weights = [p for p in trained_convnet.parameters() if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert inside != before
    assert _layout(trained_convnet) == before
    assert all(torch.equal(p, v) for p, v in zip(trained_convnet.parameters(), values,
                                                  strict=True))


def test_weights_come_back_when_the_block_raises(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = attack_batch
    before = _layout(trained_convnet)
    with pytest.raises(KeyboardInterrupt), fast_layout(trained_convnet, x):
        raise KeyboardInterrupt
    assert _layout(trained_convnet) == before


@pytest.mark.parametrize("attack", [FGSM(eps=0.1),
                                    PGD(eps=0.1, steps=10, step_size=0.02, random_start=False)],
                         ids=["fgsm", "pgd"])
def test_channels_last_gives_the_same_robust_accuracy(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor],
        attack: PGD) -> None:
    """Float rounding may flip the sign of a near-zero gradient, so pixels may differ by
    a step; the verdict per image may not (tolerance: 1 of 200 images)."""
    x, y = attack_batch
    fast = attack(trained_convnet, x, y)
    given = _as_given(attack)(trained_convnet, x, y)
    assert int((fast.success != given.success).sum()) <= 1
    moved = (fast.x_adv - given.x_adv).abs() > 1e-5
    assert float(moved.float().mean()) < 0.01
    assert torch.equal(fast.gradient_evaluations, given.gradient_evaluations)


def _counted_convnet() -> tuple[nn.Module, list[int]]:
    """A fresh reference ConvNet (eval mode) and the batch size of each forward it runs."""
    from robustness.models import build_model

    model = build_model("convnet", (1, 28, 28), 10, seed=0).eval()
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    return model, sizes


def test_the_probes_verdict_is_reused_only_while_the_model_is_the_same(
        attack_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = attack_batch
    model, sizes = _counted_convnet()

    def probes() -> tuple[int, bool]:
        """Forward passes the layout probe ran for one block, and whether it converted."""
        sizes.clear()
        outside = _layout(model)
        with fast_layout(model, x) as x_fast:
            converted = _layout(model) != outside
            assert (x_fast is x) != converted  # a channels_last copy only if converted
        assert _layout(model) == outside
        return len(sizes), converted

    assert probes() == (2, True)  # before and after the conversion
    assert probes() == (0, True)  # the same model, weights and inputs: the verdict is kept
    with torch.no_grad():
        next(model.parameters()).mul_(1.0)  # an in-place change, as an optimizer step makes
    assert probes() == (2, True)
    model.train()  # another mode is another forward: dropout makes the two probes differ
    assert probes() == (2, False)
    assert probes() == (0, False)
    model.eval()
    assert probes() == (2, True)
    sizes.clear()
    with fast_layout(model, x[:, :, :27, :27]):  # another input shape
        assert len(sizes) == 2


def test_the_model_check_is_kept_only_while_the_model_is_the_same(
        attack_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    from attacks.base import check_model_output
    from robustness.core.validation import ParameterError

    x, _ = attack_batch
    model, calls = _counted_convnet()
    assert check_model_output("test", model, x) == 10
    assert check_model_output("test", model, x) == 10
    assert calls == [2]  # the second check is the first one's verdict
    assert check_model_output("test", model, x[:, :, :27, :27]) == 10  # another shape
    assert calls == [2, 2]
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # broken in place: checked again
    with pytest.raises(ParameterError, match="finite logits"):
        check_model_output("test", model, x)


class ViewsActivations(nn.Module):
    """A model that ``.view``-s a convolution's output, which channels_last cannot do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).relu()
        return self.fc(h.view(h.shape[0], -1))


def test_a_model_that_cannot_run_in_channels_last_keeps_its_layout(
        attack_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = ViewsActivations().eval()
    x, y = attack_batch
    before = _layout(model)
    for _ in range(2):  # the probe's verdict, then the kept one
        with fast_layout(model, x) as x_fast:
            assert x_fast is x
            assert _layout(model) == before
    attack = PGD(eps=0.1, steps=3, step_size=0.05)
    batch = attack(model, x, y)  # runs, in the model's own layout
    assert torch.equal(batch.x_adv, _as_given(attack)(model, x, y).x_adv)
    assert _layout(model) == before


class ChangesWeightsFast(PGD):
    """A broken attack in the fast layout: it edits the model's weights."""

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        with torch.no_grad():
            next(p for p in model.parameters() if p.dim() == 4).add_(1e-3)
        zeros = torch.zeros(x.shape[0], dtype=torch.int64)
        return RunResult(x, zeros, zeros)


def test_the_layout_does_not_hide_an_attack_that_changes_weights(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Restoring writes back what the block left, so conformance still sees the change."""
    x, y = attack_batch
    model = copy.deepcopy(trained_convnet)
    with pytest.raises(AssertionError, match="model_restored"):
        check_attack(ChangesWeightsFast(eps=0.1, steps=1), model, x[:16], y[:16],
                     checks=["model_restored"])


@pytest.mark.parametrize("attack", [
    PGD(eps=0.1, steps=10, step_size=0.02),
    PGD(eps=0.1, steps=10, step_size=0.02, early_stop=True),
    PGD(eps=0.1, steps=5, step_size=0.03, restarts=2),
    FGSM(eps=0.1),
], ids=["pgd", "pgd-early-stop", "pgd-restarts", "fgsm"])
def test_reused_predictions_are_the_models_own_and_save_the_re_evaluation(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor],
        attack: PGD) -> None:
    x, y = attack_batch
    model = copy.deepcopy(trained_convnet)
    calls: list[tuple[int, bool]] = []  # (rows, with gradients) of every forward call
    model.register_forward_pre_hook(
        lambda _, args: calls.append((args[0].shape[0], torch.is_grad_enabled())))
    batch = attack(model, x, y)
    last_step = max(i for i, (_, grad) in enumerate(calls) if grad)
    judged = sum(rows for rows, _ in calls[last_step + 1:])  # the template's re-evaluation
    with torch.no_grad():
        fresh = trained_convnet(batch.x_adv).argmax(1)
    assert torch.equal(batch.predictions, fresh)
    assert torch.equal(batch.success, fresh != y)
    # The template's last call re-evaluates only what no step scored: fewer than all.
    scored = int(batch.success.sum())
    assert 0 < scored < x.shape[0]
    if isinstance(attack, FGSM):  # one step: only inputs wrong from the start were scored
        with torch.no_grad():
            wrong = int((trained_convnet(x).argmax(1) != y).sum())
        assert judged == x.shape[0] - wrong
    else:  # a sample fooled only by its final, never scored iterate is re-evaluated
        assert x.shape[0] - scored <= judged < x.shape[0]


@pytest.mark.parametrize("attack", [
    PGD(eps=0.1, steps=10, step_size=0.02),
    PGD(eps=0.1, steps=10, step_size=0.02, early_stop=True),
    PGD(eps=0.05, steps=6, step_size=0.02, restarts=3, early_stop=True),
], ids=["pgd", "pgd-early-stop", "pgd-restarts-early-stop"])
def test_pgd_counts_each_samples_gradient_steps(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor],
        attack: PGD) -> None:
    """The counters are added once per restart (and when a sample leaves early), not on
    every step: they still add up to the rows the model ran with gradients, and a sample
    that left a restart early was fooled."""
    x, y = attack_batch
    model = copy.deepcopy(trained_convnet)
    rows: list[int] = []  # rows of every forward call with gradients: the attack's steps
    model.register_forward_pre_hook(
        lambda _, args: rows.append(args[0].shape[0]) if torch.is_grad_enabled() else None)
    batch = attack(model, x, y)
    steps = batch.gradient_evaluations
    assert int(steps.sum()) == sum(rows)
    assert int(steps.max()) <= attack.steps * attack.restarts
    if not attack.early_stop:
        assert bool((steps == attack.steps).all())
        assert torch.equal(batch.queries, steps)
        return
    # A sample that stopped inside a restart was fooled there; one that never was ran
    # every step of every restart, and each restart but the last judged its last iterate.
    inside = steps % attack.steps != 0
    assert bool(inside.any()) and bool(batch.success[inside].all())
    unfooled = ~batch.success
    assert bool(unfooled.any())
    assert bool((steps[unfooled] == attack.steps * attack.restarts).all())
    assert bool((batch.queries[unfooled] == steps[unfooled] + attack.restarts - 1).all())


@pytest.mark.torchattacks
def test_the_reference_attack_runs_only_where_it_could_flag_an_attack(
        trained_convnet: nn.Module, mnist: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    # FGSM breaks most of the sample at eps 0.3 (no reference FGSM could flag it); a PGD
    # that never moves breaks almost nothing (the reference PGD must run and flag it).
    specs = ["fgsm", "torchattacks:PGD(alpha=0.0,steps=5)"]
    ran: list[str] = []
    import attacks.gradient as gradient

    for cls in (gradient.FGSM, gradient.PGD):  # the reference attacks at eps 0.3, counted
        counted = type(cls.__name__, (cls,), {"__call__": lambda self, *a, _c=cls, **k: (
            ran.append(_c.__name__) if self.eps == 0.3 else None,  # not the large-eps check
            _c.__call__(self, *a, **k))[1]})
        monkeypatch.setattr(gradient, cls.__name__, counted)

    def findings() -> list[tuple[str, str, str]]:
        report = evaluate(trained_convnet, mnist, specs, [0.3], n=120)
        return [(f.check, f.severity, f.message) for f in report.findings]

    skipping = findings()
    assert ran == ["PGD"]
    monkeypatch.setattr(checks, "_could_be_weaker", lambda broken, sample: True)
    ran.clear()
    everything = findings()
    assert sorted(ran) == ["FGSM", "PGD"]
    assert skipping == everything
    assert [f for f in skipping if f[0] == "weaker-than-reference"]


@pytest.mark.parametrize(("broken", "sample", "possible"), [
    (0, 100, True), (49, 100, True), (50, 100, False), (99, 100, False),
    (0, 6, False),  # 6 discordant pairs, all for the reference: p = 1/64 > 0.01
    (0, 7, True), (1, 8, True), (2, 8, False),
])
def test_could_be_weaker_is_exactly_the_reachable_findings(broken: int, sample: int,
                                                           possible: bool) -> None:
    from robustness.core.stats import sign_test

    # Every reference outcome: it breaks `both` of the attack's samples and `only_ref`
    # of the others.
    reachable = any(
        broken * 2 < both + only_ref
        and sign_test(only_ref, broken - both, alternative="greater") < checks.REFERENCE_P
        for both in range(broken + 1) for only_ref in range(sample - broken + 1))
    assert checks._could_be_weaker(broken, sample) == reachable == possible


def test_a_surrogate_crafting_is_reused_only_for_the_same_members_and_inputs(
        digits: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from ensembles import AdaptiveAttack, adaptive, train_members

    ensemble = train_members(digits, 3, plan="bootstrap", architecture="mlp", epochs=3,
                             progress=False, precision="fp32")
    # Images every member gets right: every aggregation attacks all of them.
    right = (ensemble.member_predictions(digits.x_test) == digits.y_test).all(0)
    x, y = digits.x_test[right][:120], digits.y_test[right][:120]
    spec = AdaptiveAttack.spec("pgd", steps=5, strategies=("logit_mean", "members"))
    calls: list[int] = []
    for m in ensemble.members:
        m.register_forward_pre_hook(lambda _, args: calls.append(args[0].shape[0]))

    def reports() -> list[dict[str, object]]:
        adaptive._CRAFTED.clear()
        out = []
        for aggregation in ("mean", "max", "vote"):
            report = evaluate(ensemble.with_aggregation(aggregation), (x, y), [spec], [0.1],
                              checks=False)
            doc = report.to_dict()
            out.append({"clean": doc["clean_samples"], "worst": doc["worst_case"],
                        "rows": [{k: v for k, v in r.items() if k != "seconds"}
                                 for r in doc["results"]]})
        return out

    reused = reports()
    reused_calls = len(calls)
    calls.clear()
    monkeypatch.setattr(adaptive, "_CRAFTED", collections.deque(maxlen=0))
    fresh = reports()
    assert reused == fresh  # every row, per sample
    assert reused_calls < len(calls)  # ...for fewer member passes

    # Weights changed in place (an optimizer step): crafted again, never served stale.
    monkeypatch.setattr(adaptive, "_CRAFTED", collections.deque(maxlen=8))
    attack = PGD(eps=0.1, steps=5)
    before = adaptive._craft_every_sample(attack, ensemble.members[0],
                                          [ensemble.members[0]], x, y)
    assert adaptive._craft_every_sample(attack, ensemble.members[0],
                                        [ensemble.members[0]], x, y) is before
    with torch.no_grad():
        next(ensemble.members[0].parameters()).mul_(-1.0)
    after = adaptive._craft_every_sample(attack, ensemble.members[0], [ensemble.members[0]],
                                         x, y)
    assert after is not before and not torch.equal(after.x_adv, before.x_adv)
    # Other inputs or another attack: crafted again.
    assert adaptive._craft_every_sample(attack, ensemble.members[0], [ensemble.members[0]],
                                        x[:60], y[:60]) is not after
    assert adaptive._craft_every_sample(PGD(eps=0.1, steps=5, seed=1), ensemble.members[0],
                                        [ensemble.members[0]], x, y) is not after


@pytest.mark.parametrize("attack", [
    FGSM(eps=0.2), PGD(eps=0.1, steps=5), PGD(norm="l2", eps=1.0, steps=5, restarts=2),
    PGD(eps=0.1, steps=5, targeted=True),
], ids=repr)
def test_craft_returns_the_inputs_the_call_returns_without_judging_them(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor],
        attack: PGD) -> None:
    from attacks.genetic import GeneticAttack

    x, y = attack_batch
    model = copy.deepcopy(trained_convnet)
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    crafted = attack.craft(model, x, y)
    # Rows of the passes on the inputs (in cache-sized parts), not of the checks' few.
    crafting = sum(n for n in sizes if n > 8)
    sizes.clear()
    assert torch.equal(crafted, attack(model, x, y, every_sample=True).x_adv)
    assert sum(n for n in sizes if n > 8) == crafting + 2 * len(x)  # two more: judged
    genetic = GeneticAttack(eps=0.3, generations=5)
    assert torch.equal(genetic.craft(model, x[:8], y[:8]),
                       genetic(model, x[:8], y[:8], every_sample=True).x_adv)
    with pytest.raises(ParameterError, match="'target' parameter of PGD"):
        PGD(eps=0.1, steps=2, targeted=True).craft(model, x, y, target=y)


def test_adversarial_training_trains_the_same_model_with_craft(digits: Dataset) -> None:
    from robustness.models import build_model
    from robustness.train import attack_hook, train

    fgsm = FGSM(eps=0.2)
    judged = attack_hook(lambda model, x, y, every_sample: fgsm(model, x, y,
                                                                every_sample=every_sample))
    models = []
    for adversary in (attack_hook(fgsm), judged):
        model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
        train(model, digits.x_train, digits.y_train, epochs=2, seed=0, progress=False,
              adversary=adversary)
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


def _one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch in one pass, as before the split (no activation is that large)."""
    monkeypatch.setattr(modes, "PASS_BYTES", 2**62)


@pytest.mark.parametrize("attack", [
    PGD(eps=0.3, steps=5),
    PGD(eps=0.3, steps=5, restarts=2, early_stop=True),
    PGD(norm="l2", eps=2.0, steps=5, targeted=True),
    FGSM(eps=0.2),
], ids=["pgd", "pgd-restarts-early-stop", "pgd-l2-targeted", "fgsm"])
def test_passes_of_a_large_batch_give_the_adversarial_examples_of_one_pass(
        trained_convnet: nn.Module, mnist: Dataset, attack: PGD,
        monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    sizes: list[int] = []  # rows of each forward + backward pass (judging is forward only)
    hook = trained_convnet.register_forward_pre_hook(
        lambda _m, args: sizes.append(args[0].shape[0]) if torch.is_grad_enabled() else None)
    try:
        rows = pass_rows(trained_convnet, x)
        assert rows is not None and balanced_rows(300, rows) <= 150  # really split here
        split = attack(trained_convnet, x, y)
        split_every = attack(trained_convnet, x, y, every_sample=True)
        assert max(sizes) <= 150
        _one_pass(monkeypatch)
        sizes.clear()
        whole = attack(trained_convnet, x, y)
        whole_every = attack(trained_convnet, x, y, every_sample=True)
        assert max(sizes) == 300
    finally:
        hook.remove()
    # Rows are computed independently either way: the same pixels, not only the same
    # verdicts (float rounding could flip a near-zero gradient sign: 1 image allowed).
    for a, b in ((split, whole), (split_every, whole_every)):
        assert int((a.success != b.success).sum()) <= 1
        differ = ((a.x_adv - b.x_adv).abs() > 1e-6).flatten(1).any(1)
        assert int(differ.sum()) <= 1
        assert torch.equal(a.gradient_evaluations, b.gradient_evaluations)


@pytest.mark.parametrize("attack", [
    GeneticAttack(eps=0.3, generations=40),
    GeneticAttack(eps=0.1, generations=40, targeted=True, early_stop=False),
], ids=["untargeted-early-stop", "targeted-every-generation"])
def test_passes_of_a_genetic_generation_give_the_examples_and_queries_of_one_pass(
        trained_convnet: nn.Module, mnist: Dataset, attack: GeneticAttack,
        monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = mnist.x_test[:60], mnist.y_test[:60]
    target = (y + 1) % 10 if attack.targeted else None
    sizes: list[int] = []  # rows of each forward pass
    hook = trained_convnet.register_forward_pre_hook(
        lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        split = attack(trained_convnet, x, y, target=target)
        assert max(sizes) < 60 * attack.population  # generation 0's 600 rows were split
        _one_pass(monkeypatch)
        sizes.clear()
        whole = attack(trained_convnet, x, y, target=target)
        assert max(sizes) == 60 * attack.population
    finally:
        hook.remove()
    # Each row's scores are its one-pass scores up to rounding, which the selection
    # does not notice: the same pixels and the same queries.
    assert torch.equal(split.queries, whole.queries)
    assert torch.equal(split.success, whole.success)
    assert float((split.x_adv - whole.x_adv).abs().max()) <= 1e-6


def test_a_model_that_mixes_rows_or_is_small_is_never_split(mnist: Dataset) -> None:
    from robustness.models import build_model

    class BatchCentred(nn.Module):
        """A ConvNet that subtracts the batch mean of its logits: rows are not independent."""

        def __init__(self) -> None:
            super().__init__()
            self.net = build_model("convnet", (1, 28, 28), 10, seed=0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.net(x)
            return z - z.mean(0, keepdim=True)

    x = mnist.x_test[:600]
    mixing = BatchCentred().eval()
    assert pass_rows(mixing.net, x) is not None  # its ConvNet alone would be split
    assert pass_rows(mixing, x) is None
    mlp = build_model("mlp", (1, 28, 28), 10, seed=0).eval()
    assert pass_rows(mlp, x) is None  # its largest activation is 3 KiB a row
    # A gradient attack on the mixing model is the one-pass attack.
    sizes: list[int] = []
    mixing.register_forward_pre_hook(
        lambda _m, args: sizes.append(args[0].shape[0]) if torch.is_grad_enabled() else None)
    PGD(eps=0.1, steps=2)(mixing, x, mnist.y_test[:600])
    assert sizes == [600, 600]  # two steps, one pass each


def test_the_row_measure_and_the_halves_probe_are_kept_while_the_model_is_the_same(
        mnist: Dataset) -> None:
    x = mnist.x_test[:400]
    model, sizes = _counted_convnet()
    assert pass_rows(model, x) == 125  # 6 MiB / the 49 KiB of its first convolution's output
    assert sizes == [2, 8, 4, 4]  # the measure (two rows), the probe whole and in halves
    sizes.clear()
    assert pass_rows(model, x[:300]) == 125 and sizes == []
    assert pass_rows(model, x[:150]) is None  # one pass: 150 is nearer one pass than two
    with torch.no_grad():
        next(model.parameters()).mul_(1.0)  # an optimizer step: measured again
    assert pass_rows(model, x) == 125 and len(sizes) == 4


@pytest.mark.parametrize(("n", "rows", "size"), [
    (300, None, 300), (100, 125, 100), (150, 125, 150), (256, 125, 128), (300, 125, 150),
    (1000, 125, 125), (1001, 125, 126), (2, 1, 1)])
def test_balanced_rows_splits_into_equal_passes_without_a_sliver(n: int, rows: int | None,
                                                                  size: int) -> None:
    assert balanced_rows(n, rows) == size


def test_predict_runs_in_the_same_passes_with_the_same_logits(
        trained_convnet: nn.Module, mnist: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from ensembles.ensemble import Ensemble
    from robustness.core.modes import predict

    x = mnist.x_test[:1000]
    sizes: list[int] = []
    hook = trained_convnet.register_forward_pre_hook(
        lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        split = predict(trained_convnet, x)
        assert max(sizes[-8:]) == 125 and len(sizes) >= 8  # 8 passes of 125 rows
        ensemble = Ensemble([trained_convnet, copy.deepcopy(trained_convnet)], "mean")
        votes = ensemble.member_predictions(x)
        _one_pass(monkeypatch)
        sizes.clear()
        whole = predict(trained_convnet, x)
        assert sizes == [1000]
        assert torch.equal(ensemble.member_predictions(x), votes)
    finally:
        hook.remove()
    assert torch.allclose(split, whole, rtol=1e-5, atol=1e-5)
    assert torch.equal(split.argmax(1), whole.argmax(1))


def test_the_pass_probes_leave_an_attacks_random_stream_alone(mnist: Dataset) -> None:
    from robustness.models import build_model

    class Noisy(nn.Module):
        """A randomized model (noise on its input, even in eval mode): every forward of it,
        the probes' too, draws from the global RNG."""

        def __init__(self) -> None:
            super().__init__()
            self.net = build_model("convnet", (1, 28, 28), 10, seed=0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x + 0.01 * torch.randn_like(x))

    x, y = mnist.x_test[:300], mnist.y_test[:300]
    model = Noisy().eval()
    first = PGD(eps=0.1, steps=2, seed=3)(model, x, y).x_adv  # measures: probes run
    again = PGD(eps=0.1, steps=2, seed=3)(model, x, y).x_adv  # kept: no probe
    assert torch.equal(first, again)
