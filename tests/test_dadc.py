"""DADC rounds: real attacks on really trained digits MLPs, every step checked on disk.

What a user relies on: no test image is ever a candidate; an unlabelled fooling image never
reaches training; duplicates are dropped; a file source's groups stay on one side of the
train/test split; the control arm gets exactly as many examples as the DADC arm; a run
killed between any two steps resumes to the numbers of an uninterrupted run; bad
configurations are refused before any work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from reports.page import build_report
from robustness.cli import main
from robustness.dadc import DadcConfig, run_dadc
from robustness.dadc.loop import Setup
from robustness.dadc.selection import NEAR_DUPLICATE, duplicates, group_split
from robustness.data import load_dataset

TINY: dict[str, Any] = dict(data="digits", rounds=2, per_round=40, initial=300, epochs=8,
                            finetune_epochs=2, n_eval=120, source="pgd(steps=5)", eps=0.2)


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a run, without wall times and versions."""
    return {k: v for k, v in doc.items() if k not in ("seconds", "versions")}


def _accepted(out: Path, r: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "rounds" / f"r{r}" / "dadc" / "accepted.safetensors"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("dadc") / "run"
    return out, run_dadc(DadcConfig(**TINY), out)


def test_candidates_come_from_the_pool_and_the_arms_grow_alike(
        tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, doc = tiny_run
    setup = Setup(DadcConfig(**TINY))
    pool = set(setup.pool_idx.tolist())
    data = setup.data
    for r in (1, 2):
        kept = _accepted(out, r)
        origin = kept["origin"]
        assert len(origin) > 0 and set(origin.tolist()) <= pool  # never initial, never test
        # Each is an adversarial version of its pool image, within the budget, keeping
        # the pool image's label, and the model of the previous round really got it wrong.
        assert (kept["x"] - data.x_train[origin]).abs().amax() <= 0.2 + 1e-6
        assert torch.equal(kept["label"], data.y_train[origin])
        assert not torch.equal(kept["fooled_as"], kept["label"])
        assert (kept["fooled_as"] != kept["label"]).all()
        # No test image is among the candidates' sources.
        flat_test = data.x_test.flatten(1)
        assert not duplicates(data.x_train[origin], flat_test.view(data.x_test.shape)).any()
        info = doc["rounds"][r - 1]
        # The control arm got exactly as many (standard) examples as the DADC arm.
        added = load_file(str(out / "rounds" / f"r{r}" / "control" / "added.safetensors"))
        assert info["control_added"] == info["trained"] == len(added["pool_index"]) == \
            len(origin)
        assert set(added["pool_index"].tolist()) <= pool
        assert info["train_size_dadc"] == info["train_size_control"] == 300 + 40 * r
    # A pool image is attacked at most once across rounds.
    both = torch.cat([_accepted(out, 1)["origin"], _accepted(out, 2)["origin"]])
    assert len(set(both.tolist())) == len(both)


def test_the_summary_is_a_paired_comparison_with_the_control_arm(
        tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, doc = tiny_run
    assert set(doc["sets"]) == {"clean", "fixed", "fresh"}
    by = {(r["round"], r["arm"], r["set"]): r for r in doc["table"]}
    assert len(by) == 3 * (1 + 2 * 2)  # round 0 (shared) + 2 rounds x 2 arms, 3 sets each
    for row in doc["table"]:
        assert 0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1
        assert (out / row["report"]).is_file()  # every number has its evaluate() report
    for c in doc["comparisons"]:
        p = c["vs_control"]
        # The per-sample counts agree with the accuracies they were computed from.
        n = by[(2, "dadc", c["set"])]["n"]
        assert p["errors_a"] == round((1 - c["control"]) * n)
        assert p["errors_b"] == round((1 - c["dadc"]) * n)
        assert p["errors_a"] - p["errors_b"] == p["wins"] - p["losses"]
        assert 0 < p["p_value"] <= 1
    # Training on its own adversarial examples makes the DADC arm more robust on the
    # fixed set than a control given as many clean images.
    fixed = next(c for c in doc["comparisons"] if c["set"] == "fixed")
    assert fixed["dadc"] > fixed["control"] and fixed["vs_control"]["p_value"] < 0.05
    assert any("fewer errors than standard collection" in line for line in doc["lines"])
    for name in ("dadc.json", "dadc.md", "dadc.png", "state.json"):
        assert (out / name).stat().st_size > 0
    page = build_report([out], out.parent / "report")
    assert page["runs"][0]["kind"] == "dadc" and not page["runs"][0]["problems"]
    html = (out.parent / "report" / "report.html").read_text()
    assert "standard collection" in html.split('id="runs"')[0]  # in the verdict
    assert 'alt="accuracy per DADC round' in html


def test_a_finished_run_resumes_to_itself_and_another_config_is_refused(
        tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, doc = tiny_run
    again = run_dadc(DadcConfig(**TINY), out)  # every step recorded: nothing is redone
    assert _stable(again) == _stable(doc)
    from robustness.core.validation import ParameterError

    with pytest.raises(ParameterError, match="another configuration"):
        run_dadc(DadcConfig(**{**TINY, "per_round": 30}), out)
    assert json.loads((out / "dadc.json").read_text())["config"]["per_round"] == 40


class _Crash(Exception):
    pass


# Small enough to run once per step: the crash test runs it 2 x 12 times.
CRASH: dict[str, Any] = {**TINY, "per_round": 12, "initial": 150, "epochs": 3,
                         "finetune_epochs": 1, "n_eval": 50, "checks": False}


def test_a_crash_between_any_two_steps_resumes_to_the_uninterrupted_result(
        tmp_path: Path) -> None:
    reference = run_dadc(DadcConfig(**CRASH), tmp_path / "reference")
    steps = json.loads((tmp_path / "reference" / "state.json").read_text())["done"]
    assert len(steps) == 3 + 2 * 5
    for k, step in enumerate(steps[:-1]):
        out = tmp_path / f"crash-{k}"

        def crash(name: str, at: str = step) -> None:
            if name == at:
                raise _Crash(name)

        with pytest.raises(_Crash):
            run_dadc(DadcConfig(**CRASH), out, on_step=crash)
        state = json.loads((out / "state.json").read_text())
        assert state["done"] == steps[:k + 1]
        resumed = run_dadc(DadcConfig(**CRASH), out)
        assert _stable(resumed) == _stable(reference), f"crash after {step}"


def test_a_killed_process_resumes_with_the_same_command(tmp_path: Path) -> None:
    """kill -9 in the middle of a round (after its DADC arm retrained)."""
    reference = run_dadc(DadcConfig(**CRASH), tmp_path / "reference")
    out = tmp_path / "killed"
    script = (
        "import os, signal, sys\n"
        "from robustness.dadc import DadcConfig, run_dadc\n"
        f"cfg = DadcConfig(**{CRASH!r})\n"
        "def kill(step):\n"
        "    if step == 'r1/dadc/train':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "run_dadc(cfg, sys.argv[1], on_step=kill)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(out)], env=env, check=False)
    assert done.returncode == -signal.SIGKILL
    assert not (out / "dadc.json").exists()
    resumed = run_dadc(DadcConfig(**CRASH), out)
    assert _stable(resumed) == _stable(reference)


def test_unlabelled_fooling_images_never_reach_training(tmp_path: Path) -> None:
    # An MLP on 8x8 digits gives evolved noise about 0.5-0.8 confidence, not 0.9999.
    base = {**TINY, "source": "fooling", "rounds": 1, "per_round": 10, "eps": 0.2,
            "eval_attack": "fgsm", "fooling_confidence": 0.3, "checks": False}
    out = tmp_path / "none"
    doc = run_dadc(DadcConfig(**base), out)
    kept = _accepted(out, 1)
    info = doc["rounds"][0]
    assert info["accepted"] == len(kept["x"]) > 0  # measured: they do fool the model
    assert (kept["label"] == -1).all() and info["trained"] == 0
    assert info["train_size_dadc"] == info["train_size_control"] == 300
    assert info["control_added"] == 0
    # With an explicit policy they train as that class, and the control arm matches them.
    labelled = run_dadc(DadcConfig(**{**base, "fooling_label": "class:0"}), tmp_path / "k0")
    kept = _accepted(tmp_path / "k0", 1)
    assert (kept["label"] == 0).all()
    assert labelled["rounds"][0]["control_added"] == labelled["rounds"][0]["trained"] == \
        len(kept["x"])


def test_duplicates_exact_and_near_are_dropped() -> None:
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    near = (x[1:2] + NEAR_DUPLICATE / 2).clamp(0, 1)
    far = (x[2:3] + 3 * NEAR_DUPLICATE).clamp(0, 1)
    batch = torch.cat([x[:3], x[0:1], near, far])
    dup = duplicates(batch)
    assert dup.tolist() == [False, False, False, True, True, False]
    assert duplicates(x[3:], kept=x[3:4]).tolist() == [True, False]


def test_a_file_source_splits_by_group_and_an_npz_dataset_runs(tmp_path: Path) -> None:
    digits = load_dataset("digits")
    # A dataset given as .npz, and collected examples from 12 people, each submitting the
    # same few images twice (near-identical): one person's images must stay on one side.
    data_file = tmp_path / "digits.npz"
    np.savez(data_file, x=digits.x_train.numpy(), y=digits.y_train.numpy(),
             x_test=digits.x_test.numpy(), y_test=digits.y_test.numpy())
    rng = np.random.default_rng(0)
    base = digits.x_test.numpy()[:60]
    noisy = np.clip(base + rng.uniform(-0.45, 0.45, base.shape), 0, 1).astype(np.float32)
    people = np.repeat(np.arange(12), 5)
    x = np.concatenate([noisy, noisy])
    y = np.concatenate([digits.y_test.numpy()[:60]] * 2)
    group = np.concatenate([people, people]).astype(str)
    collected = tmp_path / "collected.npz"
    np.savez(collected, x=x, y=y, group=group)
    train_idx, held_idx = group_split(list(group), fraction=0.25, seed=0)
    assert {group[i] for i in train_idx}.isdisjoint({group[i] for i in held_idx})
    assert len({group[i] for i in held_idx}) == 3
    out = tmp_path / "run"
    doc = run_dadc(DadcConfig(**{**TINY, "data": str(data_file), "source": f"file:{collected}",
                                 "rounds": 2, "per_round": 10, "heldout_fraction": 0.25}), out)
    assert "heldout" in doc["sets"]
    held_groups = {group[i] for i in held_idx}
    seen = []
    for r in (1, 2):
        kept = _accepted(out, r)
        groups = set(load_file_meta(out, r)["groups"].split("\n")) - {""}
        assert groups.isdisjoint(held_groups)
        # Duplicates within the file (each image twice) are kept once.
        assert not duplicates(kept["x"]).any()
        seen += kept["origin"].tolist()
    assert len(seen) == len(set(seen))
    heldout = next(r for r in doc["table"] if r["set"] == "heldout" and r["round"] == 0)
    assert heldout["n"] == len(held_idx)


def load_file_meta(out: Path, r: int) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(out / "rounds" / f"r{r}" / "dadc" / "accepted.safetensors"),
                   framework="pt") as f:
        return dict(f.metadata())


@pytest.mark.parametrize(("extra", "message"), [
    (["--rounds", "0"], "argument --rounds"),
    (["--per-round", "0"], "argument --per-round"),
    (["--per-round", "100000", "--eps", "0.2"], "The '--per-round' parameter of robustness "
                                                "dadc must be at most the pool"),
    (["--source", "pgdd", "--eps", "0.2"], "The '--source' parameter of robustness dadc"),
    (["--source", "file:/nonexistent/x.npz"], "file:PATH.npz naming a readable file"),
    (["--source", "pgd"], "The '--eps' parameter of robustness dadc must be a budget for the "
                          "bounded source 'pgd'"),
    (["--fooling-label", "noise"], "'--fooling-label' parameter of robustness dadc"),
])
def test_bad_configuration_is_one_line_before_any_work(
        extra: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "X"
    with pytest.raises(SystemExit) as info:
        sys.exit(main(["dadc", "--data", "digits", "--out", str(out), *extra]))
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err, captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert not out.exists() and "round 0" not in captured.out


def test_the_command_starts_from_a_checkpoint_and_writes_its_page(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from robustness.checkpoint import load_checkpoint

    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "3",
                 "--no-progress", "--out", str(tmp_path / "m")]) == 0
    out = tmp_path / "run"
    args = ["dadc", "--data", "digits", "--model", str(tmp_path / "m"), "--rounds", "1",
            "--per-round", "15", "--source", "fgsm", "--eps", "0.1", "--n-eval", "60",
            "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    # One line per step, and the verdict.
    assert "r1/collect: done" in printed and "standard collection" in printed
    start, _ = load_checkpoint(tmp_path / "m")
    round0, _ = load_checkpoint(out / "rounds" / "r0" / "base")
    for a, b in zip(start.state_dict().values(), round0.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # round 0 is the given model, not a retrained one
    assert (out / "report.html").stat().st_size > 0
    doc = json.loads((out / "dadc.json").read_text())
    assert doc["evaluation_attack"]["attack"] == "fgsm" and doc["config"]["n_eval"] == 60
    # The same command again resumes (nothing to redo); a different one is refused.
    assert main(args) == 0
    assert main([*args[:-2], "--seed", "1", "--out", str(out)]) == 2
    assert "another configuration" in capsys.readouterr().err
