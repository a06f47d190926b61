"""The backend choice, without Ray: the local default, bad options, and Ray missing.

The Ray backend itself is tested against a local Ray instance in ``test_ray.py``
(``nox -s ray``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from robustness.cli import main
from robustness.core.backend import (
    RAY_INSTALL_HINT,
    BackendUnavailable,
    LocalBackend,
    RayOptions,
    get_backend,
)
from robustness.core.validation import ParameterError


def _square(item: int, *, offset: int) -> int:
    return item * item + offset


def test_the_local_backend_runs_every_item_in_order_with_the_shared_objects() -> None:
    runs = list(get_backend("local").run(_square, [3, 1, 2], {"offset": 10}))
    assert runs == [(0, 19), (1, 11), (2, 14)]
    assert isinstance(get_backend(), LocalBackend)


def test_bad_backend_options_are_refused_by_name() -> None:
    with pytest.raises(ParameterError, match=r"'backend' parameter of evaluate.*'local', "
                       r"'processes', 'ray'"):
        get_backend("dask", owner="evaluate")
    with pytest.raises(ParameterError, match=r"'ray_address' parameter .* only with backend ray"):
        get_backend("local", ray_address="auto")
    with pytest.raises(ParameterError, match=r"'cpus_per_task' parameter of RayOptions must "
                       r"be an int in the range \[1, inf\)"):
        RayOptions(cpus_per_task=0)
    with pytest.raises(ParameterError, match="'address' parameter of RayOptions"):
        RayOptions(address=" ")


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without the ``ray`` extra (``import ray`` fails)."""
    monkeypatch.setitem(sys.modules, "ray", None)


def test_without_ray_the_ray_backend_says_how_to_install_it(no_ray: None) -> None:
    with pytest.raises(BackendUnavailable) as e:
        get_backend("ray")
    assert str(e.value) == RAY_INSTALL_HINT
    assert "pip install 'robustness-harness[ray]'" in RAY_INSTALL_HINT


@pytest.mark.parametrize("command", [
    ["evaluate", "--model", "m.safetensors", "--data", "mnist", "--attacks", "fgsm",
     "--eps", "0.1"],
    ["experiment", "ensembles", "--quick"],
    ["gate", "gates.toml"],
    ["dadc", "--quick"],
])
def test_commands_with_backend_ray_and_no_ray_print_one_install_line_and_write_nothing(
        command: list[str], no_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gates.toml").write_text('[gate.g]\nmodel = "m.safetensors"\ndata = "mnist"\n'
                                         '[[gate.g.thresholds]]\neps = 0.1\n'
                                         'robust_accuracy = 0.5\n')
    out = [] if command[0] == "gate" else ["--out", "run"]
    assert main([*command, "--backend", "ray", *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(RAY_INSTALL_HINT), err
    assert not (tmp_path / "run").exists()


def test_a_ray_option_without_backend_ray_names_the_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "ensembles", "--quick", "--ray-cpus-per-task", "2",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "'--ray-cpus-per-task' parameter of robustness experiment ensembles must be " \
           "given only with --backend ray. Got 2" in err
    assert not (tmp_path / "run").exists()
