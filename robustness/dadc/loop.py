"""The DADC loop: rounds of collect -> retrain -> evaluate, with a control arm, resumable.

Round 0 trains (or loads) the starting model on ``initial`` training images; the rest of
the training split is the **pool**. Each round then

1. *collect*: the source proposes candidates against the DADC arm's current model (from
   pool images or a file's training groups, never from test images) and keeps those that
   really fool it (:mod:`robustness.dadc.selection`);
2. *retrain the DADC arm* on its initial images plus every example kept so far that has a
   trustworthy label;
3. *retrain the control arm* on its initial images plus **as many** standard pool images
   as the DADC arm gained this round (drawn at random from the pool), so the two arms
   differ only in what kind of data they were given;
4. *evaluate* both arms with :func:`robustness.evaluation.evaluate` on the clean test
   images, a **fixed** adversarial set (the evaluation attack's adversarial versions of the
   test images, crafted once on the round-0 model), a **fresh** evaluation attack on each
   arm's current model, and, for ``file:`` sources, the held-out groups.

Every step writes its files atomically, then records itself in ``state.json``; a run
killed anywhere resumes with the same call, skips every recorded step and, because each
step's seeds depend only on the configuration and the round, ends with the numbers an
uninterrupted run gets.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attacks.registry import AttackSpec, parse_attack_spec
from robustness.checkpoint import CheckpointMeta, held_out_seed, load_checkpoint, save_checkpoint
from robustness.core.backend import Backend, get_backend
from robustness.core.io import RUN_MARKER, check_output_dir, read_json, write_json, write_tensors
from robustness.core.provenance import run_environment
from robustness.core.stats import sign_test, wilson_interval
from robustness.core.validation import ParameterError, invalid
from robustness.dadc.config import OWNER, DadcConfig
from robustness.dadc.sources import AttackSource, FileSource, FoolingSource, Proposal
from robustness.data import Dataset, load_dataset, load_examples
from robustness.evaluation import RobustnessReport, evaluate
from robustness.models import build_model
from robustness.train import accuracy, train

STATE_FORMAT = "robustness-dadc-state"
DADC_FORMAT = "robustness-dadc"
DADC_VERSION = 1
ARMS = ("dadc", "control")
SETS = {"clean": "clean test images",
        "fixed": "adversarial test set crafted once on the round-0 model",
        "fresh": "fresh attack on the arm's current model",
        "heldout": "held-out groups of the file source"}


class Setup:
    """Everything checked and loaded before the first step: data, split, sources."""

    def __init__(self, cfg: DadcConfig) -> None:
        self.cfg = cfg
        kind = cfg.source_kind
        if kind == "attack":  # a typo or a missing budget fails before any data loads
            spec = _spec(cfg.source, "source")
            bounded = spec.bounded(seed=cfg.seed)
            if bounded and cfg.eps is None:
                raise invalid(OWNER, "eps", f"a budget for the bounded source {spec.label!r}",
                              None)
        self.start_meta: CheckpointMeta | None = None
        if cfg.start_model is not None:
            try:
                _, self.start_meta = load_checkpoint(cfg.start_model)
            except (OSError, ValueError) as e:
                raise invalid(OWNER, "start_model", "a checkpoint written by robustness train",
                              f"{cfg.start_model} ({e})", raw=True) from None
        split_seed = held_out_seed(cfg.data, self.start_meta, default=cfg.seed)
        self.data: Dataset = load_dataset(cfg.data, root=cfg.data_root, seed=split_seed)
        data = self.data
        meta = self.start_meta
        if meta is not None and (tuple(meta.input_shape) != data.input_shape
                                 or meta.num_classes != data.num_classes):
            raise invalid(OWNER, "start_model", f"a model of {data.name}'s inputs "
                          f"{data.input_shape} and {data.num_classes} classes",
                          f"{cfg.start_model} ({tuple(meta.input_shape)}, {meta.num_classes} "
                          f"classes)", raw=True)
        n_train = len(data.x_train)
        initial = cfg.initial if cfg.initial is not None else max(1, n_train // 4)
        if initial >= n_train:
            raise invalid(OWNER, "initial", f"fewer than the {n_train} training images of "
                          f"{data.name} (the rest is the pool)", initial)
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed))
        self.initial_idx = order[:initial]
        self.pool_idx = order[initial:]
        pool = len(self.pool_idx)
        if cfg.per_round > pool:
            raise invalid(OWNER, "per_round", f"at most the pool: {pool} training images of "
                          f"{data.name} beyond the {initial} initial ones", cfg.per_round)
        if cfg.rounds * cfg.per_round > pool:
            raise invalid(OWNER, "per_round", f"at most {pool // cfg.rounds} for {cfg.rounds} "
                          f"rounds: the control arm draws rounds x per_round new standard "
                          f"examples from the pool of {pool} images", cfg.per_round)
        n_test = len(data.x_test)
        n_eval = n_test if cfg.n_eval is None else cfg.n_eval
        if n_eval > n_test:
            raise invalid(OWNER, "n_eval", f"at most the {n_test} test images of {data.name}",
                          n_eval)
        self.x_test, self.y_test = data.x_test[:n_eval], data.y_test[:n_eval]
        if cfg.fooling_class is not None and cfg.fooling_class >= data.num_classes:
            raise invalid(OWNER, "fooling_label", f"class:K with K < {data.num_classes}",
                          cfg.fooling_label)
        # The source, and the evaluation attack of the fixed and fresh sets.
        self.source: AttackSource | FoolingSource | FileSource
        if kind == "attack":
            self.source = AttackSource(spec, cfg.eps if bounded else None)
        elif kind == "fooling":
            self.source = FoolingSource(data.input_shape, data.num_classes, cfg.fooling_class,
                                        confidence=cfg.fooling_confidence)
        else:
            examples = load_examples(cfg.source[len("file:"):])
            if tuple(examples.x.shape[1:]) != data.input_shape:
                raise invalid(OWNER, "source", f"examples of shape {data.input_shape} like "
                              f"{data.name}", f"{cfg.source} with images of shape "
                              f"{tuple(examples.x.shape[1:])}", raw=True)
            if int(examples.y.max()) >= data.num_classes:
                raise invalid(OWNER, "source", f"labels below {data.num_classes}", f"{cfg.source} "
                              f"with label {int(examples.y.max())}", raw=True)
            self.source = FileSource(examples, heldout_fraction=cfg.heldout_fraction,
                                     seed=cfg.seed)
        eval_text = cfg.eval_attack or (cfg.source if kind == "attack"
                                        and isinstance(self.source, AttackSource)
                                        and self.source.eps is not None else "pgd")
        self.eval_spec: AttackSpec | None = _spec(eval_text, "eval_attack")
        if not self.eval_spec.bounded(seed=cfg.seed):
            raise invalid(OWNER, "eval_attack", "a bounded attack (the fixed and fresh sets "
                          "are measured at eps)", eval_text)
        if cfg.eps is None:
            if cfg.eval_attack is not None:
                raise invalid(OWNER, "eps", f"a budget for eval_attack {eval_text!r}", None)
            self.eval_spec = None  # no budget: clean (and held-out) sets only
        else:
            self.eval_spec.build(cfg.eps, seed=cfg.seed)  # a bad argument fails now
        h, w = data.input_shape[1:]
        auto = "convnet" if min(h, w) >= 28 else "mlp"
        self.architecture = self.start_meta.architecture if self.start_meta else (
            auto if cfg.model == "auto" else cfg.model)
        build_model(self.architecture, data.input_shape, data.num_classes, seed=0)

    def meta(self, accuracy: float | None, extra: dict[str, Any]) -> CheckpointMeta:
        d = self.data
        return CheckpointMeta(architecture=self.architecture, input_shape=d.input_shape,
                              num_classes=d.num_classes, classes=d.classes, dataset=d.name,
                              seed=held_out_seed(self.cfg.data, self.start_meta,
                                                 default=self.cfg.seed),
                              accuracy=accuracy, extra=extra)


def _spec(text: str, name: str) -> AttackSpec:
    try:
        spec = parse_attack_spec(text)
        spec.bounded()  # builds it: an unknown name or argument fails here
    except ParameterError as e:
        raise invalid(OWNER, name, "fgsm, pgd, genetic, fooling, file:PATH.npz or an attack "
                      f"spec ({e})", text, raw=True) from None
    if "eps" in spec.kwargs:
        raise invalid(OWNER, name, "a spec without its own eps (eps sets the budget)", text)
    return spec


def _seed(base: int, round_: int, salt: int) -> int:
    """A step's seed: a function of the configuration and the step only (resume-safe)."""
    return (base * 1_000_003 + round_ * 7919 + salt) % (2**31 - 1)


class State:
    """``state.json``: the steps done and the loop's bookkeeping, written atomically."""

    def __init__(self, out: Path, cfg: DadcConfig) -> None:
        self.path = out / "state.json"
        self.doc: dict[str, Any] = {"format": STATE_FORMAT, "config": cfg.to_dict(),
                                    "done": [], "dadc_used": [], "control_used": [],
                                    "rounds": {}, "evals": {}}

    def load(self) -> None:
        self.doc = read_json(self.path, default_name="state.json")

    def done(self, step: str) -> bool:
        return step in self.doc["done"]

    def commit(self, step: str) -> None:
        self.doc["done"].append(step)
        write_json(self.path, self.doc)


def _open_run(out: Path, cfg: DadcConfig) -> State:
    """A new run directory, or the state of an earlier run of the same configuration."""
    check_output_dir(out, overwrite=True)
    state = State(out, cfg)
    if out.exists() and any(out.iterdir()):
        if not state.path.is_file():
            raise invalid(OWNER, "out", "a new directory or an earlier DADC run to resume",
                          f"{out} (it holds other files)", raw=True)
        state.load()
        if state.doc.get("format") != STATE_FORMAT or state.doc.get("config") != cfg.to_dict():
            raise invalid(OWNER, "out", "a new directory, or a DADC run of this same "
                          "configuration to resume (it is never overwritten)",
                          f"{out}, a run of another configuration", raw=True)
        return state
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_MARKER).write_text("a run directory of robustness-harness (resumable DADC)\n",
                                  encoding="utf-8")
    write_json(state.path, state.doc)
    return state


def run_dadc(cfg: DadcConfig, out: str | Path, *, echo: Callable[[str], None] | None = None,
             progress: bool = False,
             on_step: Callable[[str], None] | None = None,
             backend: str | Backend = "local") -> dict[str, Any]:
    """Run (or resume) dynamic adversarial data collection into ``out``.

    Parameters
    ----------
    cfg
        The run; see :class:`DadcConfig`.
    out
        Run directory. A directory of the same configuration is resumed; another
        configuration's run, or a directory of other files, is refused.
    echo
        Called with one line per step.
    progress
        Training progress bars (only useful on a TTY).
    on_step
        Called with each step's name once it is committed (for tests that inject crashes).
    backend
        Where each round's candidates (chunks of pool images, attacked in waves of the
        backend's slots) and evaluation attacks run: ``"local"``, ``"ray"`` or a
        :class:`~robustness.core.backend.Backend` (see :func:`robustness.evaluate`). The
        same run either way; training stays in this process.

    Returns
    -------
    dict
        ``dadc.json``: the table of rounds x arms x evaluation sets, the per-round
        collection figures and the paired DADC vs control comparisons.
    """
    say = echo or (lambda _: None)
    started = time.perf_counter()
    setup = Setup(cfg)  # every check before anything is written
    runner = get_backend(backend, owner="run_dadc")
    try:
        out = Path(out)
        state = _open_run(out, cfg)
        _Loop(setup, state, out, say, progress, on_step, runner).run()
    finally:
        if not isinstance(backend, Backend):
            runner.close()
    result = summarise(setup, state, out, seconds=time.perf_counter() - started)
    write_json(out / "dadc.json", result)
    from reports.dadc import dadc_markdown, write_dadc_figure

    (out / "dadc.md").write_text(dadc_markdown(result), encoding="utf-8")
    write_dadc_figure(result, out / "dadc.png")
    for line in result["lines"]:
        say(line)
    return result


class _Loop:
    def __init__(self, setup: Setup, state: State, out: Path, say: Callable[[str], None],
                 progress: bool, on_step: Callable[[str], None] | None,
                 runner: Backend) -> None:
        self.s, self.state, self.out, self.say = setup, state, out, say
        self.progress, self.on_step, self.runner = progress, on_step, runner
        self.cfg = setup.cfg

    # -- bookkeeping ---------------------------------------------------------------------
    def _step(self, name: str, work: Callable[[], None]) -> None:
        if self.state.done(name):
            return
        t = time.perf_counter()
        work()
        self.state.commit(name)
        self.say(f"{name}: done in {time.perf_counter() - t:.1f} s")
        if self.on_step is not None:
            self.on_step(name)

    def _dir(self, round_: int, arm: str) -> Path:
        path = self.out / "rounds" / f"r{round_}" / arm
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _model(self, round_: int, arm: str) -> nn.Module:
        model, _ = load_checkpoint(self._dir(0, "base") if round_ == 0
                                   else self._dir(round_, arm))
        return model.eval()

    def _train_set(self, round_: int, arm: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The arm's training images after ``round_``: initial images plus what it added."""
        d = self.s.data
        xs, ys = [d.x_train[self.s.initial_idx]], [d.y_train[self.s.initial_idx]]
        for r in range(1, round_ + 1):
            if arm == "dadc":
                kept = _read(self._dir(r, "dadc") / "accepted.safetensors")
                trained = kept["label"] >= 0
                xs.append(kept["x"][trained])
                ys.append(kept["label"][trained])
            else:
                added = _read(self._dir(r, "control") / "added.safetensors")["pool_index"]
                xs.append(d.x_train[added])
                ys.append(d.y_train[added])
        return torch.cat(xs), torch.cat(ys)

    # -- steps ---------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        self._step("r0/train", self._train_start)
        if self.s.eval_spec is not None:
            self._step("fixed", self._craft_fixed)
        self._step("r0/eval", lambda: self._evaluate(0, "base"))
        for r in range(1, cfg.rounds + 1):
            self._step(f"r{r}/collect", functools.partial(self._collect, r))
            for arm in ARMS:
                self._step(f"r{r}/{arm}/train", functools.partial(self._retrain, r, arm))
            for arm in ARMS:
                self._step(f"r{r}/{arm}/eval", functools.partial(self._evaluate, r, arm))

    def _train_start(self) -> None:
        s, cfg = self.s, self.cfg
        if cfg.start_model is not None:
            model, _ = load_checkpoint(cfg.start_model)
            how = f"loaded from {cfg.start_model}"
        else:
            model = build_model(s.architecture, s.data.input_shape, s.data.num_classes,
                                seed=cfg.seed)
            x, y = self._train_set(0, "dadc")
            train(model, x, y, epochs=cfg.epochs, seed=_seed(cfg.seed, 0, 1),
                  progress=self.progress, description="round 0")
            how = f"trained on {len(x)} initial images"
        acc = accuracy(model, self.s.x_test, self.s.y_test)
        save_checkpoint(model, self._dir(0, "base"), s.meta(acc, {"dadc_round": 0}))
        self.say(f"round 0: starting model {how}; clean test accuracy {acc:.3f}")

    def _craft_fixed(self) -> None:
        spec = self.s.eval_spec
        assert spec is not None and self.cfg.eps is not None
        model = self._model(0, "base")
        attack = spec.build(self.cfg.eps, seed=_seed(self.cfg.seed, 0, 2))
        x_adv = attack(model, self.s.x_test, self.s.y_test).x_adv.to(self.s.x_test.dtype)
        write_tensors(self.out / "fixed.safetensors",
                      {"x": x_adv.contiguous(), "y": self.s.y_test.clone()},
                      metadata={"attack": spec.label, "eps": repr(self.cfg.eps)})

    def _collect(self, r: int) -> None:
        cfg, s, doc = self.cfg, self.s, self.state.doc
        model = self._model(r - 1, "dadc")
        kept = [_read(self._dir(q, "dadc") / "accepted.safetensors")["x"] for q in range(1, r)]
        kept_x = torch.cat(kept) if kept else None
        used = set(doc["dadc_used"])
        seed = _seed(cfg.seed, r, 3)
        source = s.source
        proposal: Proposal
        if isinstance(source, AttackSource):
            available = [int(i) for i in s.pool_idx if int(i) not in used]
            proposal = source.propose(model, s.data.x_train, s.data.y_train, available,
                                      cfg.per_round, seed=seed, kept=kept_x,
                                      backend=self.runner)
        elif isinstance(source, FoolingSource):
            proposal = source.propose(model, cfg.per_round, seed=seed, kept=kept_x)
        else:
            available = [i for i in source.train_idx if i not in used]
            proposal = source.propose(model, available, cfg.per_round, kept=kept_x)
        write_tensors(self._dir(r, "dadc") / "accepted.safetensors", {
            "x": proposal.x.contiguous(), "label": proposal.label, "fooled_as": proposal.fooled_as,
            "origin": proposal.origin}, metadata={"groups": "\n".join(proposal.groups),
                                                  "source": cfg.source})
        trained = int((proposal.label >= 0).sum())
        doc["dadc_used"] += proposal.used
        lo, hi = wilson_interval(len(proposal.x), proposal.tried)
        doc["rounds"][str(r)] = {
            "round": r, "tried": proposal.tried, "accepted": len(proposal.x),
            "trained": trained, "fooling_rate": len(proposal.x) / proposal.tried
            if proposal.tried else None, "fooling_rate_ci": [lo, hi] if proposal.tried
            else None}
        self.say(f"round {r}: {cfg.source} fooled the current model on {len(proposal.x)} of "
                 f"{proposal.tried} tries; {trained} join the training data")

    def _retrain(self, r: int, arm: str) -> None:
        cfg, s, doc = self.cfg, self.s, self.state.doc
        if arm == "control":
            k = doc["rounds"][str(r)]["trained"]
            used = set(doc["control_used"])
            order = torch.randperm(len(s.pool_idx),
                                   generator=torch.Generator().manual_seed(_seed(cfg.seed, r, 4)))
            fresh = [int(s.pool_idx[i]) for i in order if int(s.pool_idx[i]) not in used][:k]
            write_tensors(self._dir(r, "control") / "added.safetensors",
                          {"pool_index": torch.as_tensor(fresh, dtype=torch.int64)})
            doc["control_used"] += fresh
            doc["rounds"][str(r)]["control_added"] = len(fresh)
        x, y = self._train_set(r, arm)
        if cfg.retrain == "scratch":
            model = build_model(s.architecture, s.data.input_shape, s.data.num_classes,
                                seed=cfg.seed)
            epochs = cfg.epochs
        else:
            model = self._model(r - 1, arm).train()
            epochs = cfg.finetune_epochs
        train(model, x, y, epochs=epochs, seed=_seed(cfg.seed, r, 5 + ARMS.index(arm)),
              progress=self.progress, description=f"round {r} {arm}")
        acc = accuracy(model, s.x_test, s.y_test)
        save_checkpoint(model, self._dir(r, arm), s.meta(acc, {"dadc_round": r, "arm": arm}))
        doc["rounds"][str(r)][f"train_size_{arm}"] = len(x)

    def _evaluate(self, r: int, arm: str) -> None:
        cfg, s = self.cfg, self.s
        model = self._model(r, arm)
        where = self._dir(r, arm)
        last = r == cfg.rounds
        info = {"dadc_round": r, "arm": arm}
        summary: dict[str, Any] = {}
        spec = s.eval_spec
        attacks = [spec.label] if spec is not None else []
        eps = [cfg.eps] if spec is not None and cfg.eps is not None else []
        report = evaluate(model, (s.x_test, s.y_test), attacks, eps, seed=_seed(cfg.seed, r, 8),
                          checks=cfg.checks and (last or r == 0), model_info=info,
                          backend=self.runner)
        report.save(where / "test")
        summary["clean"] = _clean_row(report, "test")
        if spec is not None:
            row = report.result(spec.label, float(eps[0]))
            summary["fresh"] = {"accuracy": row.robust_accuracy, "ci": [row.ci_low, row.ci_high],
                                "n": row.n, "report": "test", "attack": spec.label}
            fixed = _read(self.out / "fixed.safetensors")
            rep = evaluate(model, (fixed["x"], fixed["y"]), [], [], model_info=info)
            rep.save(where / "fixed")
            summary["fixed"] = _clean_row(rep, "fixed")
        if isinstance(s.source, FileSource) and s.source.heldout_idx:
            rep = evaluate(model, s.source.heldout(), [], [], model_info=info)
            rep.save(where / "heldout")
            summary["heldout"] = _clean_row(rep, "heldout")
        self.state.doc["evals"][f"r{r}/{arm}"] = summary
        self.say(f"round {r} {arm}: " + ", ".join(
            f"{name} {v['accuracy']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"
            for name, v in summary.items()))


def _read(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _clean_row(report: RobustnessReport, where: str) -> dict[str, Any]:
    k = report.clean_samples.count("1")
    lo, hi = wilson_interval(k, report.n_samples)
    return {"accuracy": report.clean_accuracy, "ci": [lo, hi], "n": report.n_samples,
            "report": where}


def _correct(out: Path, key: str, set_name: str, summary: dict[str, Any]) -> list[bool]:
    """Per-sample outcome of one evaluation set of one (round, arm), from its report."""
    report = RobustnessReport.load(out / "rounds" / key / summary["report"])
    if set_name == "fresh":
        return report.robust_mask(summary["attack"], report.eps_values[0])
    return [c == "1" for c in report.clean_samples]


def _paired(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """b against a, per sample: wins (b right, a wrong), losses, exact sign test."""
    wins = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    losses = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    errors_a, errors_b = a.count(False), b.count(False)
    return {"wins": wins, "losses": losses, "p_value": sign_test(wins, losses),
            "errors_a": errors_a, "errors_b": errors_b,
            "fewer_errors": (errors_a - errors_b) / errors_a if errors_a else None}


def summarise(setup: Setup, state: State, out: Path, *, seconds: float) -> dict[str, Any]:
    """``dadc.json`` from the state and the per-round reports."""
    cfg, doc = setup.cfg, state.doc
    table = []
    for key, sets in doc["evals"].items():
        round_, arm = key.split("/")
        for name, v in sets.items():
            table.append({"round": int(round_[1:]), "arm": arm, "set": name,
                          "accuracy": v["accuracy"], "ci_low": v["ci"][0], "ci_high": v["ci"][1],
                          "n": v["n"], "report": f"rounds/{key}/{v['report']}/report.json"})
    final = f"r{cfg.rounds}"
    comparisons, lines = [], []
    base = doc["evals"].get("r0/base", {})
    for name in (n for n in SETS if n in base):
        d_sum = doc["evals"][f"{final}/dadc"][name]
        c_sum = doc["evals"][f"{final}/control"][name]
        dadc = _correct(out, f"{final}/dadc", name, d_sum)
        control = _correct(out, f"{final}/control", name, c_sum)
        start = _correct(out, "r0/base", name, base[name])
        vs_control = _paired(control, dadc)
        vs_start = _paired(start, dadc)
        comparisons.append({"set": name, "description": SETS[name], "round": cfg.rounds,
                            "dadc": d_sum["accuracy"], "control": c_sum["accuracy"],
                            "round0": base[name]["accuracy"],
                            "vs_control": vs_control, "vs_round0": vs_start})
        fewer = vs_control["fewer_errors"]
        how = (f"{abs(fewer):.0%} {'fewer' if fewer >= 0 else 'more'} errors than standard "
               f"collection" if fewer is not None else "no errors in either arm")
        sig = "significant" if vs_control["p_value"] < 0.05 else "not significant"
        lines.append(f"{SETS[name]}: DADC {d_sum['accuracy']:.3f} vs control "
                     f"{c_sum['accuracy']:.3f} after {cfg.rounds} rounds: {how} (paired sign "
                     f"test p = {vs_control['p_value']:.3g}, {sig}); round 0 "
                     f"{base[name]['accuracy']:.3f} (DADC vs round 0: p = "
                     f"{vs_start['p_value']:.3g})")
    findings = []
    for arm in ARMS:
        rep = RobustnessReport.load(out / "rounds" / final / arm / "test")
        findings += [{"arm": arm, "check": f.check, "severity": f.severity,
                      "message": f.message} for f in rep.findings]
    rounds = [doc["rounds"][k] for k in sorted(doc["rounds"], key=int)]
    threat = None
    if setup.eval_spec is not None:
        attack = setup.eval_spec.build(cfg.eps)
        threat = {"attack": setup.eval_spec.label, "eps": cfg.eps, "norm": attack.norm,
                  "threat_model": attack.threat_model}
    return {"format": DADC_FORMAT, "version": DADC_VERSION, "config": cfg.to_dict(),
            "dataset": setup.data.to_dict_meta(), "initial": len(setup.initial_idx),
            "pool": len(setup.pool_idx), "evaluation_attack": threat,
            "sets": {k: v for k, v in SETS.items() if k in base},
            "table": table, "rounds": rounds, "comparisons": comparisons, "lines": lines,
            "findings": findings, "seconds": round(seconds, 1), "versions": run_environment()}


__all__ = ["ARMS", "DADC_FORMAT", "SETS", "run_dadc", "summarise"]
