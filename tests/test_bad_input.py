"""Bad input never becomes a verdict or a half-written run (issue 12).

One test (or a hypothesis property) per class of bad input: out-of-range numbers,
non-transactional run directories, library attacks with bad settings, conflicting
settings, hostile checkpoints and tensors, and interruption. The rule everywhere: one
clear line naming the parameter, exit 2, and no run directory left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from attacks.base import Attack, AttackError, RunResult
from attacks.genetic import GeneticAttack
from attacks.gradient import FGSM, PGD
from attacks.registry import parse_attack_list
from robustness.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    save_checkpoint,
)
from robustness.cli import main
from robustness.core.io import run_directory
from robustness.core.validation import ParameterError
from robustness.data import Dataset, load_dataset
from robustness.evaluation import evaluate
from robustness.models import build_model
from robustness.train import TrainingDivergedError, train


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained digits MLP checkpoint (`robustness train` output)."""
    out = tmp_path_factory.mktemp("bad-input") / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "3",
                 "--out", str(out), "--no-progress"]) == 0
    return out


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.err


def _no_leftovers(out: Path) -> None:
    """Neither the run directory nor a temporary or lock sibling of it exists."""
    assert not out.exists()
    parent = out.parent
    if parent.exists():
        assert not [p for p in parent.iterdir() if p.name.startswith(f".{out.name}.")]


# -- 1. out-of-range numbers -------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(eps=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.integers(min_value=-10**400, max_value=10**400)),
       norm=st.sampled_from(["linf", "l2"]))
def test_any_eps_builds_a_bounded_attack_or_names_eps(eps: float, norm: str) -> None:
    for build in (lambda: PGD(eps=eps, norm=norm, steps=2), lambda: FGSM(eps=eps, norm=norm)):
        try:
            attack = build()
        except ParameterError as e:
            assert "'eps' parameter" in str(e)
        else:
            assert attack.eps is not None and 0 <= attack.eps <= (1.0 if norm == "linf"
                                                                   else 1000.0)
            assert all(np.isfinite(float(v)) for v in (attack.eps, attack.step_size))
    with pytest.raises(ParameterError, match="'eps' parameter of GeneticAttack"):
        GeneticAttack(eps=1.5)


class _Broken(Attack):
    """Returns what it is told to: NaN, out-of-range pixels, or beyond its budget."""

    name = "broken"

    def __init__(self, *, mode: str, eps: float = 0.1) -> None:
        self.mode = mode
        self._init_common(norm="linf", eps=eps, targeted=False, seed=0)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        ones = torch.ones(len(x), dtype=torch.int64)
        x_adv = {"nan": x + float("nan"), "range": x * 3 - 1, "budget": 1 - x,
                 "shape": x[:, :, :4]}[self.mode]
        return RunResult(x_adv=x_adv, queries=ones, gradient_evaluations=ones)


@pytest.mark.parametrize(("mode", "match"), [
    ("nan", "non-finite values"), ("range", "pixels outside"),
    ("budget", "beyond its linf budget 0.1"), ("shape", "of shape"),
])
def test_an_attack_output_that_cannot_be_judged_is_never_a_success(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor],
        mode: str, match: str) -> None:
    x, y = attack_batch
    with pytest.raises(AttackError, match=match):
        _Broken(mode=mode)(trained_convnet, x[:8], y[:8])


def test_diverging_training_stops_with_a_clear_error_and_saves_nothing(
        digits: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    with pytest.raises(TrainingDivergedError, match=r"lr 1e\+30"):
        train(model, digits.x_train, digits.y_train, epochs=1, lr=1e30, progress=False)
    out = tmp_path / "run"
    code, err = _cli(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--lr",
                      "1e30", "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and "Training diverged" in err and len(err.strip().splitlines()) == 1
    _no_leftovers(out)
    bad = build_model("mlp", digits.input_shape, digits.num_classes)
    with torch.no_grad():
        next(bad.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(bad, tmp_path / "nan.safetensors", CheckpointMeta(
            architecture="mlp", input_shape=digits.input_shape, num_classes=10))
    assert not (tmp_path / "nan.safetensors").exists()


@pytest.mark.parametrize("args", [
    ["attack", "--attack", "pgd-l2", "--eps", "1e200", "--param", "steps=2"],
    ["attack", "--attack", "fgsm", "--eps", "1e39"],
    ["evaluate", "--attacks", "fgsm", "--eps", "1e308"],
    ["evaluate", "--attacks", "pgd", "--eps", "1e308"],
])
def test_out_of_range_budgets_on_the_command_line(digits_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  args: list[str]) -> None:
    out = tmp_path / "o"
    code, err = _cli([*args, "--model", str(digits_run), "--data", "digits", "--n", "20",
                      "--out", str(out)], capsys)
    assert code == 2, err
    assert "'eps' parameter" in err and "step_size" not in err
    assert len(err.strip().splitlines()) == 1
    _no_leftovers(out)


# -- 2. run directories are all-or-nothing -------------------------------------------


@pytest.mark.parametrize("step", [1, 2, 3])
@pytest.mark.parametrize("command", ["train", "attack", "evaluate", "fool", "tsne"])
def test_a_failure_at_any_step_leaves_no_partial_run_directory(
        digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        command: str, step: int) -> None:
    """Every command renames two files into its temporary run directory, then the
    directory into place; a failure at any of those steps leaves nothing behind."""
    real, calls = os.replace, []

    def failing(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == step:
            raise RuntimeError("injected failure")
        real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    out = tmp_path / "out"
    args = {
        "train": ["train", "--data", "digits", "--model", "mlp", "--epochs", "1"],
        "attack": ["attack", "--model", str(digits_run), "--data", "digits", "--attack",
                   "fgsm", "--eps", "0.1", "--n", "10"],
        "evaluate": ["evaluate", "--model", str(digits_run), "--data", "digits", "--attacks",
                     "fgsm", "--eps", "0.1", "--n", "10", "--no-checks"],
        "fool": ["fool", "--model", str(digits_run), "--generations", "2", "--population",
                 "10", "--classes", "0"],
        "tsne": ["tsne", "--model", str(digits_run), "--data", "digits", "--attack", "fgsm",
                 "--eps", "0.2", "--n", "40"],
    }[command]
    with pytest.raises(RuntimeError, match="injected"):
        main([*args, "--out", str(out)])
    assert len(calls) == step
    _no_leftovers(out)


def test_an_existing_run_is_refused_before_any_work_and_replaced_only_with_overwrite(
        digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    base = ["evaluate", "--model", str(digits_run), "--data", "digits", "--attacks", "fgsm",
            "--n", "10", "--no-checks", "--out", str(out)]
    assert _cli([*base, "--eps", "0.1"], capsys)[0] == 0
    first = (out / "report.json").read_text()
    started = time.perf_counter()
    code, err = _cli([*base, "--eps", "0.2"], capsys)
    assert code == 2 and "already holds a run. Pass --overwrite" in err
    assert time.perf_counter() - started < 2  # refused before loading anything
    assert (out / "report.json").read_text() == first
    assert _cli([*base, "--eps", "0.2", "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "report.json").read_text())["provenance"]["eps"] == [0.2]
    assert sorted(p.name for p in out.iterdir()) == [".robustness-run", "report.html",
                                                      "report.json", "report.md",
                                                      "samples.safetensors"]
    _no_leftovers(tmp_path / "nothing")


@pytest.mark.parametrize("where", ["file", "below-file"])
def test_unusable_out_paths_are_one_line_exit_2(tmp_path: Path, where: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
    code, err = _cli(["train", "--data", "digits", "--model", "mlp", "--epochs", "1",
                      "--out", str(out)], capsys)
    assert code == 2 and "'--out' parameter" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "f").read_text() == "x"


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with run_directory(out) as tmp:
        (tmp / "a.txt").write_text("first")
        with pytest.raises(ParameterError, match=r"another robustness command \(pid \d+\) is "
                                                 r"writing now"):
            with run_directory(out):
                pass
    assert (out / "a.txt").read_text() == "first"
    # A lock left by a process that no longer exists is stale and taken over, and the
    # temporary directory that process left behind is removed.
    (tmp_path / ".stale.lock").write_text("999999999\n")
    (tmp_path / ".stale.tmp-killed").mkdir()
    with run_directory(tmp_path / "stale") as tmp:
        (tmp / "b.txt").write_text("ok")
    assert (tmp_path / "stale" / "b.txt").exists()
    assert not (tmp_path / ".stale.tmp-killed").exists()


def test_files_follow_the_umask(tmp_path: Path) -> None:
    from robustness.core.io import write_json

    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_gate_output_paths_are_checked_first(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["gate", str(tmp_path / "missing.toml"), "--json", str(tmp_path)], capsys)
    assert code == 2 and "'--json' parameter must be a file path" in err
    assert "Traceback" not in err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(eps=st.one_of(st.floats(), st.sampled_from(["abc", "", "1e999", "-0", "0x10", "nan"])),
       n=st.one_of(st.integers(min_value=-5, max_value=10**12),
                   st.sampled_from(["all", "x", "1.5", ""])),
       lr=st.one_of(st.floats(), st.sampled_from(["1e400", "-1", "0"])))
def test_numeric_options_fuzzed_never_leave_a_run_behind(tmp_path: Path, eps: object,
                                                        n: object, lr: object) -> None:
    """Any value of the numeric options either parses or is a usage error (exit 2); a run
    that then fails (no such checkpoint / data here) writes nothing."""
    out = tmp_path / "fuzz"
    for args in (["attack", "--model", str(tmp_path / "missing"), "--data", "digits",
                  "--attack", "pgd", "--eps", str(eps), "--n", str(n)],
                 ["evaluate", "--model", str(tmp_path / "missing"), "--data", "digits",
                  "--attacks", "fgsm", "--eps", str(eps), "--n", str(n)],
                 ["train", "--data", str(tmp_path / "missing.npz"), "--model", "mlp",
                  "--lr", str(lr), "--epochs", str(n)]):
        try:
            code = main([*args, "--out", str(out)])
        except SystemExit as e:  # argparse: a value of the wrong form
            code = e.code
        assert code == 2
        _no_leftovers(out)


# -- 3. library attacks with bad settings --------------------------------------------


@pytest.mark.parametrize(("spec", "key"), [
    ("torchattacks:CW(steps='abc')", "steps"),
    ("torchattacks:PGD(alpha='abc')", "alpha"),
    ("foolbox:LinfPGD(rel_stepsize='abc')", "rel_stepsize"),
])
def test_library_arguments_of_the_wrong_type_are_refused_when_built(spec: str,
                                                                    key: str) -> None:
    if spec.startswith("torchattacks:"):
        pytest.importorskip("torchattacks")
    parsed = parse_attack_list(spec)[0]
    with pytest.raises(ParameterError, match=rf"The '{key}' parameter of \w+\.\w+ must be"):
        parsed.build(0.3 if parsed.bounded() else None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="pgdfsmenti(),=0123456789.'\" -_:[]{}", max_size=30))
def test_the_attack_spec_language_answers_any_text_with_specs_or_a_named_error(
        text: str) -> None:
    try:
        specs = parse_attack_list(text, owner="robustness evaluate", name="--attacks")
    except ParameterError as e:
        assert "robustness evaluate" in str(e) or "parameter of" in str(e)
    else:
        assert specs and all(s.name for s in specs)


def test_unknown_attacks_fail_before_the_checkpoint_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(["evaluate", "--model", str(tmp_path / "missing"), "--data", "digits",
                      "--attacks", "pgdd", "--eps", "0.1", "--out", str(tmp_path / "o")],
                     capsys)
    assert code == 2 and "pgdd" in err and "No checkpoint" not in err


# -- 4. conflicting or missing settings -----------------------------------------------


@pytest.mark.parametrize(("args", "match"), [
    (["evaluate", "--attacks", "pgd(eps=0.5)", "--eps", "0.1"],
     "'--attacks' parameter of robustness evaluate must be attack specs without their own eps"),
    (["attack", "--attack", "fgsm", "--eps", "0.1", "--param", "eps=0.5"],
     "'--param eps' parameter of robustness attack must be left out: --eps 0.1"),
    (["attack", "--attack", "pgd"], "'--eps' parameter of robustness attack must be given"),
    (["attack", "--attack", "fgsm", "--eps", "0.1", "--n", "100000"],
     "'--n' parameter of robustness attack must be at most 360"),
    (["evaluate", "--attacks", "fgsm", "--eps", "0.1", "--n", "100000"],
     "'--n' parameter of robustness evaluate must be at most 360"),
    (["attack", "--attack", "fgsm", "--eps", "0.1", "--param", "3=4"],
     "'--param' parameter of robustness attack"),
    # eps 0 is no attack: refused rather than reported as a "robust accuracy"
    (["attack", "--attack", "fgsm", "--eps", "0"], "argument --eps: expected a budget > 0"),
    (["attack", "--attack", "fgsm", "--eps", "1e-400"],  # underflows to 0.0
     "argument --eps: expected a budget > 0"),
    (["attack", "--attack", "pgd", "--param", "eps=0"],
     "'--param eps' parameter of robustness attack must be a finite budget > 0"),
    (["evaluate", "--attacks", "fgsm", "--eps", "0,0.1"],
     "argument --eps: expected comma-separated budgets > 0"),
    # iteration counts beyond any real budget are typos, refused before the model loads
    (["attack", "--attack", "pgd", "--eps", "0.1", "--param", "steps=1000000000000"],
     "'steps' parameter of PGD must be an int in the range [1, 1000000]"),
    (["evaluate", "--attacks", "pgd(steps=1000000000000)", "--eps", "0.1"],
     "'steps' parameter of PGD must be an int in the range [1, 1000000]"),
    (["evaluate", "--attacks", "genetic(population=10000000)", "--eps", "0.1"],
     "population"),
    (["evaluate", "--attacks", "torchattacks:PGD(steps=1000000000000)", "--eps", "0.1"],
     "[1, 1000000]"),
    # every budget is checked before the model loads, not only the first
    (["evaluate", "--attacks", "fgsm,pgd(steps=2)", "--eps", "0.1,1e308"],
     "--eps 0.1,1e+308: The 'eps' parameter of FGSM must be a finite float in [0, 1]"),
    (["evaluate", "--attacks", "fgsm", "--eps", "0.1", "--source-model", "/nonexistent"],
     "--source-model /nonexistent: No checkpoint at /nonexistent"),
])
def test_conflicts_and_missing_values_are_errors_naming_both_sources(
        digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        args: list[str], match: str) -> None:
    out = tmp_path / "o"
    code, err = _cli([*args, "--model", str(digits_run), "--data", "digits", "--out",
                      str(out)], capsys)
    assert code == 2 and match in err, err
    _no_leftovers(out)


def test_n_all_uses_the_whole_split_and_the_api_refuses_more_than_there_is(
        digits_run: Path, tmp_path: Path, trained_convnet: nn.Module, mnist: Dataset,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "all"
    assert _cli(["attack", "--model", str(digits_run), "--data", "digits", "--attack", "fgsm",
                 "--eps", "0.1", "--n", "all", "--out", str(out)], capsys)[0] == 0
    assert json.loads((out / "summary.json").read_text())["n"] == 360
    with pytest.raises(ParameterError, match=r"'n' parameter of evaluate must be an int in "
                                             r"the range \[1, 1000\]"):
        evaluate(trained_convnet, mnist, ["fgsm"], [0.1], n=5000)


# -- 5. hostile checkpoints and tensors -------------------------------------------------


def _forged(path: Path, model: nn.Module, meta: dict[str, object]) -> Path:
    """A checkpoint file with valid integrity fields around arbitrary metadata."""
    from safetensors.torch import save_file

    from robustness.checkpoint import FORMAT, FORMAT_VERSION, _digest

    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    meta_json = json.dumps(meta, sort_keys=True)
    save_file(tensors, str(path), metadata={"format": FORMAT,
                                            "format_version": str(FORMAT_VERSION),
                                            "meta": meta_json,
                                            "sha256": _digest(tensors, meta_json)})
    return path


@pytest.mark.parametrize(("meta", "match"), [
    ({"num_classes": 10**9, "input_shape": [1, 200_000, 200_000]}, "impossible metadata"),
    ({"num_classes": 10, "classes": ["only one"]}, "1 class names for num_classes 10"),
    ({"num_classes": 12}, "should have shape"),
    # a built-in dataset's shape is known: metadata that contradicts it is forged
    ({"dataset": "mnist"}, r"dataset 'mnist' has images of shape \(1, 28, 28\)"),
    ({"dataset": "digits", "num_classes": 5}, "in 10 classes"),
    ({"seed": -5}, r"impossible metadata: seed -5 \(expected an int in \[0, 4294967295\]\)"),
    ({"architecture": "convnet"}, r"forged.safetensors has impossible metadata: The "
                                  r"'input_shape' parameter of ConvNet"),
])
def test_forged_checkpoint_metadata_is_refused_before_anything_is_built(
        digits: Dataset, tmp_path: Path, meta: dict[str, object], match: str) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    full = {"architecture": "mlp", "input_shape": list(digits.input_shape), "num_classes": 10,
            **meta}
    path = _forged(tmp_path / "forged.safetensors", model, full)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_odd_files_are_named_plainly(tmp_path: Path) -> None:
    (tmp_path / "run" / "model.safetensors").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="it is a directory"):
        load_checkpoint(tmp_path / "run")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(ParameterError) as info:
        load_dataset(str(junk))
    assert "allow_pickle" not in str(info.value)
    with pytest.raises(ParameterError, match=r"test_fraction.*\(0, 1\)"):
        load_dataset("digits", test_fraction=1.5)


class _Tuple(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        return out, out


class _Flat(_Tuple):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model(x).max(1).values


class _ArgmaxOneHot(_Tuple):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with torch.no_grad():
            return nn.functional.one_hot(self.model(x).argmax(1), 10).float()


@pytest.mark.parametrize(("case", "match"), [
    ("float64", r"'x' parameter of PGD must be a tensor of the model's dtype torch.float32"),
    ("int32", r"'y' parameter of PGD must be an int64 tensor"),
    ("8x8", r"'model' parameter of PGD must be a module that accepts inputs of shape "
            r"\(2, 1, 8, 8\)"),
    ("tuple", r"must be a module returning one logits tensor of shape \(2, K\) for 2 inputs. "
              r"Got a tuple instead"),
    ("flat", r"logits of shape \(2, K\) for 2 inputs. Got shape \(2,\) instead"),
    ("argmax", r"'model' parameter of PGD must be differentiable w.r.t. its input"),
])
def test_python_api_inputs_that_do_not_fit_are_named(trained_convnet: nn.Module,
                                                     attack_batch: tuple[torch.Tensor,
                                                                         torch.Tensor],
                                                     case: str, match: str) -> None:
    x, y = attack_batch[0][:4], attack_batch[1][:4]
    model: nn.Module = trained_convnet
    if case == "float64":
        x = x.double()
    elif case == "int32":
        y = y.int()
    elif case == "8x8":
        x = x[:, :, :8, :8]
    else:
        model = {"tuple": _Tuple, "flat": _Flat, "argmax": _ArgmaxOneHot}[case](model).eval()
    with pytest.raises(ParameterError, match=match):
        PGD(eps=0.1, steps=2)(model, x, y)


# -- 6. interruption --------------------------------------------------------------------


def test_ctrl_c_is_one_line_exit_130_and_no_run_directory(digits_run: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robustness.cli", "evaluate", "--model", str(digits_run),
         # A million PGD steps without early stopping: still running when SIGINT comes,
         # on any CPU (a genetic attack stops per sample once broken, and on a fast
         # machine finished before the signal).
         "--data", "digits", "--attacks", "pgd(steps=1000000)", "--eps", "0.3",
         "--n", "50", "--no-checks", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1],
        # Ctrl-C as a terminal delivers it: a run started in the background by a shell
        # without job control (`.ci/run &`) ignores SIGINT, the child inherits that, and
        # Python then installs no KeyboardInterrupt handler (the test waited out 300 s).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("Evaluating")  # the attack is running now
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)  # generous: a loaded 2-core machine is slow
    finally:
        if proc.poll() is None:  # never leave it running into later tests
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip() == f"robustness evaluate: interrupted; {out} was not written"
    _no_leftovers(out)


def test_overwrite_never_deletes_a_directory_this_harness_did_not_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("the user's")
    for extra in ([], ["--overwrite"]):
        code, err = _cli(["train", "--data", "digits", "--model", "mlp", "--epochs", "1",
                          "--out", str(mine), *extra], capsys)
        assert code == 2 and "holds other files" in err, err
        assert sorted(p.name for p in mine.iterdir()) == ["keep.txt"]
    # A run this harness wrote carries its marker, and --overwrite may replace it.
    with run_directory(tmp_path / "run") as tmp:
        (tmp / "a.txt").write_text("first")
    assert (tmp_path / "run" / ".robustness-run").exists()
    with run_directory(tmp_path / "run", overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".robustness-run", "b.txt"]


@pytest.mark.parametrize("where", ["", ".", "dangling-link"])
def test_out_paths_that_cannot_be_a_run_are_refused_before_any_work(
        tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if where == "dangling-link":
        (tmp_path / where).symlink_to(tmp_path / "nowhere")
    started = []
    monkeypatch.setattr("robustness.train.train", lambda *a, **k: started.append(1))
    code, err = _cli(["train", "--data", "digits", "--model", "mlp", "--epochs", "1",
                      "--out", where], capsys)
    assert code == 2 and "'--out' parameter" in err and len(err.strip().splitlines()) == 1
    assert not started


@pytest.mark.parametrize(("args", "message"), [
    (["--eps", "0.1,,0.2", "--attacks", "fgsm"], "argument --eps: expected comma-separated"),
    (["--eps", "0.1", "--attacks", "pgd(steps=2,steps=3)"], "each keyword argument once"),
    (["--eps", "0.1", "--attacks", "fgsm", "--seed", "99999999999999999999999"],
     "argument --seed: expected an integer in [0, 4294967295]"),
])
def test_lists_keywords_and_seeds_are_never_silently_resolved(
        digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        args: list[str], message: str) -> None:
    out = tmp_path / "out"
    try:
        code = main(["evaluate", "--model", str(digits_run), "--data", "digits", *args,
                     "--out", str(out)])
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    _no_leftovers(out)


def test_an_unwritable_baseline_is_refused_before_any_gate_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    toml = tmp_path / "gates.toml"
    toml.write_text('[[gate]]\nname = "g"\nmodel = "m/model.safetensors"\ndata = "digits"\n'
                    'eps = 0.1\nrobust_accuracy = 0.5\n')
    code, err = _cli(["gate", str(toml), "--update-baseline", "--baseline",
                      str(tmp_path / "file" / "b.json")], capsys)
    assert code == 2 and "'--baseline' parameter" in err and "below the file" in err, err
    assert len(err.strip().splitlines()) == 1


def test_data_a_checkpoint_cannot_record_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "wide.npz"  # 1 x 5000 images: wider than any checkpoint may declare
    np.savez(data, x=np.zeros((20, 1, 1, 5000), np.float32), y=np.arange(20) % 2)
    started = []
    monkeypatch.setattr("robustness.train.train", lambda *a, **k: started.append(1))
    out = tmp_path / "out"
    code, err = _cli(["train", "--data", str(data), "--model", "mlp", "--epochs", "1",
                      "--out", str(out)], capsys)
    assert code == 2 and "'--data' parameter of robustness train" in err, err
    assert "input shape (1, 1, 5000)" in err and not started
    _no_leftovers(out)


@pytest.mark.parametrize(("args", "match"), [
    (["fool", "--model", "{digits}", "--classes", "10", "--generations", "1"],
     "'--classes' parameter of robustness fool must be classes in [0, 9]"),
    (["experiment", "ensembles", "--quick", "--data", "digits"],
     "'--data' parameter of robustness experiment ensembles must be a dataset the reference "
     "ConvNet"),
])
def test_errors_of_other_commands_name_the_option_typed(
        digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        args: list[str], match: str) -> None:
    out = tmp_path / "o"
    code, err = _cli([a.format(digits=digits_run) for a in args] + ["--out", str(out)], capsys)
    assert code == 2 and match in err, err
    assert len(err.strip().splitlines()) == 1
    _no_leftovers(out)
