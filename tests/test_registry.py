"""Attacks by name, CLI keyword parsing, and bad input through every registered attack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from attacks.adapters import FoolboxAttack, TorchattacksAttack
from attacks.base import Attack
from attacks.genetic import GeneticAttack
from attacks.gradient import FGSM, PGD
from attacks.registry import ATTACKS, available_attacks, make_attack, parse_attack_kwargs
from robustness.core.validation import ParameterError

ROOT = Path(__file__).resolve().parents[1]
needs_torchattacks = pytest.mark.torchattacks


# --- make_attack ------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "kwargs", "cls", "norm"), [
    ("fgsm", {"eps": 0.2}, FGSM, "linf"),
    ("pgd", {"eps": 0.3, "steps": 5}, PGD, "linf"),
    ("pgd", {"eps": 0.3, "norm": "linf"}, PGD, "linf"),
    ("pgd-l2", {"eps": 2.0}, PGD, "l2"),
    pytest.param("torchattacks:CW", {"c": 1.0, "steps": 50}, TorchattacksAttack, "l2",
                 marks=needs_torchattacks),
    pytest.param("torchattacks:PGD", {"eps": 0.3}, TorchattacksAttack, "linf",
                 marks=needs_torchattacks),
    ("foolbox:LinfDeepFoolAttack", {}, FoolboxAttack, "linf"),
    ("foolbox:LinfPGD", {"eps": 0.3, "steps": 10}, FoolboxAttack, "linf"),
])
def test_make_attack_builds_by_name(spec: str, kwargs: dict[str, object], cls: type,
                                    norm: str) -> None:
    attack = make_attack(spec, **kwargs)
    assert type(attack) is cls
    assert attack.norm == norm
    assert attack.eps == kwargs.get("eps")


def test_make_attack_passes_kwargs_through() -> None:
    attack = make_attack("pgd", eps=0.1, steps=7, step_size=0.02, seed=3)
    assert isinstance(attack, PGD)
    assert (attack.eps, attack.steps, attack.step_size, attack.seed) == (0.1, 7, 0.02, 3)


def test_genetic_builds_by_name() -> None:
    attack = make_attack("genetic", eps=0.3, generations=5, population=6)
    assert type(attack) is GeneticAttack
    assert (attack.eps, attack.generations, attack.population) == (0.3, 5, 6)


# In a fresh interpreter: this session has long since imported both libraries.
_LAZY_PROBE = """
import sys
import attacks
from attacks.registry import make_attack
libraries = ("torchattacks", "foolbox")
print(*(m in sys.modules for m in libraries))
make_attack("fgsm", eps=0.1), make_attack("pgd-l2", eps=1.0), make_attack("genetic", eps=0.3)
print(*(m in sys.modules for m in libraries))
make_attack("foolbox:LinfPGD", eps=0.3)
print(*(m in sys.modules for m in libraries))
"""


def test_libraries_are_imported_only_when_one_of_their_attacks_is_built() -> None:
    # attacks/adapters.py: "The libraries are imported only when an adapter is built."
    run = subprocess.run([sys.executable, "-c", _LAZY_PROBE], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["False False",  # after importing the package
                                       "False False",  # after building our own attacks
                                       "False True"]   # after building a foolbox attack


@pytest.mark.parametrize(("spec", "kwargs", "match"), [
    ("pdg", {}, r"'spec' parameter of make_attack .*'pgd', 'pgd-l2'.*did you mean 'pgd'"),
    ("PGD", {}, r"did you mean 'pgd'"),
    ("torchattack:CW", {}, r"did you mean 'torchattacks'"),
    ("cw", {}, r"'torchattacks:NAME', 'foolbox:NAME'"),
    pytest.param("torchattacks:Nope", {}, r"'name' parameter of TorchattacksAttack",
                 marks=needs_torchattacks),
    ("foolbox:LinfPDG", {"eps": 0.3}, r"did you mean 'LinfPGD'"),
    ("pgd", {"epsilon": 0.3}, r"'epsilon' parameter of PGD .*did you mean 'eps'"),
    ("fgsm", {"steps": 3}, r"'steps' parameter of FGSM"),
    ("pgd-l2", {"norm": "linf"}, r"'norm' parameter of make_attack\('pgd-l2'\) must be 'l2'"),
    ("pgd", {"eps": -0.1}, r"'eps' parameter of PGD must be a finite float"),
    ("pgd", {"eps": float("nan")}, r"'eps' parameter of PGD must be a finite float"),
    ("fgsm", {"eps": "0.3"}, r"'eps' parameter of FGSM"),
    pytest.param("torchattacks:PGD", {"eps": -1.0}, r"'eps' parameter of TorchattacksAttack",
                 marks=needs_torchattacks),
    ("foolbox:LinfPGD", {"eps": float("nan")}, r"'eps' parameter of FoolboxAttack"),
])
def test_make_attack_rejects_bad_specs(spec: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        make_attack(spec, **kwargs)


@needs_torchattacks
def test_available_attacks_lists_ours_then_the_libraries() -> None:
    names = available_attacks()
    assert names[:len(ATTACKS)] == ["fgsm", "pgd", "pgd-l2", "genetic"]
    assert {"torchattacks:CW", "torchattacks:PGDL2", "foolbox:LinfDeepFoolAttack",
            "foolbox:L2CarliniWagnerAttack", "foolbox:GenAttack"} <= set(names)
    assert available_attacks(libraries=False) == list(ATTACKS)


def test_available_attacks_leaves_out_a_library_that_is_not_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import attacks.adapters as adapters

    monkeypatch.setitem(sys.modules, "torchattacks", None)  # "import torchattacks" fails
    adapters._torchattacks_classes.cache_clear()
    try:
        names = available_attacks()
    finally:
        adapters._torchattacks_classes.cache_clear()
    assert names[:len(ATTACKS)] == list(ATTACKS)
    assert not [n for n in names if n.startswith("torchattacks:")]
    assert {"foolbox:LinfPGD", "foolbox:LinfDeepFoolAttack", "foolbox:GenAttack"} <= set(names)
    assert available_attacks(libraries=False) == list(ATTACKS)


# --- parse_attack_kwargs ----------------------------------------------------------


def test_parse_attack_kwargs_reads_literals() -> None:
    parsed = parse_attack_kwargs(["eps=0.3", "steps=40", "random_start=false", "loss=margin",
                                  "targeted=True", "step_size=1e-2", "name=\"8\"", "seed = 2"])
    assert parsed == {"eps": 0.3, "steps": 40, "random_start": False, "loss": "margin",
                      "targeted": True, "step_size": 0.01, "name": "8", "seed": 2}
    assert type(parsed["steps"]) is int


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
                       st.integers() | st.floats(allow_nan=False) | st.booleans()
                       | st.from_regex(r"[a-z][a-z-]{0,8}", fullmatch=True).filter(
                           lambda s: s not in ("true", "false", "null"))))
def test_parse_attack_kwargs_round_trips(kwargs: dict[str, object]) -> None:
    pairs = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in kwargs.items()]
    assert parse_attack_kwargs(pairs) == kwargs


@pytest.mark.parametrize(("pairs", "match"), [
    (["eps"], r"'key=value' strings"),
    (["=0.3"], r"'key=value' strings"),
    (["eps=0.3", "eps=0.1"], r"repeated keys. Got 'eps' twice"),
])
def test_parse_attack_kwargs_rejects_malformed_pairs(pairs: list[str], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        parse_attack_kwargs(pairs)


def test_cli_round_trip_builds_the_attack() -> None:
    attack = make_attack("pgd", **parse_attack_kwargs(["eps=0.1", "steps=5", "early_stop=true"]))
    assert isinstance(attack, PGD)
    assert (attack.eps, attack.steps, attack.early_stop) == (0.1, 5, True)


# --- bad input through every registered attack ------------------------------------

SPECS = {
    "fgsm": {"eps": 0.1},
    "pgd": {"eps": 0.1, "steps": 2},
    "pgd-l2": {"eps": 1.0, "steps": 2},
    "genetic": {"eps": 0.1, "generations": 2, "population": 4},
    "torchattacks:PGD": {"eps": 0.1, "steps": 2},
    "torchattacks:CW": {"steps": 2},
    "foolbox:LinfPGD": {"eps": 0.1, "steps": 2},
    "foolbox:LinfDeepFoolAttack": {"steps": 2},
}
# Only the torchattacks adapters need the optional library; every other attack runs always.
SPEC_PARAMS = [pytest.param(spec, marks=needs_torchattacks)
               if spec.startswith("torchattacks:") else spec for spec in SPECS]


def _attack(spec: str) -> Attack:
    return make_attack(spec, **SPECS[spec])


class _WrongShape(nn.Module):
    """Returns (N, 1, K) instead of logits (N, K)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, None, :10]


def _bad_inputs(x: torch.Tensor, y: torch.Tensor, model: nn.Module
                ) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, str]]:
    x_nan, x_big, x_neg, y_big = x.clone(), x.clone(), x.clone(), y.clone()
    x_nan[1, 0, 5, 5] = float("nan")
    x_big[0, 0, 3, 3] = 1.2
    x_neg[0, 0, 3, 3] = -0.1
    y_big[2] = 10
    return {
        "nan pixel": (model, x_nan, y, r"'x' parameter .* free of NaN values. Got 1 NaN"),
        "pixel > 1": (model, x_big, y, r"'x' parameter .* pixel values in \[0, 1\]"),
        "pixel < 0": (model, x_neg, y, r"'x' parameter .* pixel values in \[0, 1\]"),
        "label out of range": (model, x, y_big, r"'y' parameter .* labels in \[0, 9\]"),
        "x/y shape mismatch": (model, x, y[:-1], r"'y' parameter .* 1-d tensor of 8 labels"),
        "3-d x": (model, x[:, 0], y, r"'x' parameter .* 4-d tensor"),
        "float labels": (model, x, y.float(), r"'y' parameter .* int64 tensor"),
        "model output shape": (_WrongShape(), x, y, r"'model' parameter .* logits"),
    }


BAD_INPUTS = ["nan pixel", "pixel > 1", "pixel < 0", "label out of range", "x/y shape mismatch",
              "3-d x", "float labels", "model output shape"]


@pytest.mark.parametrize("problem", BAD_INPUTS)
@pytest.mark.parametrize("spec", SPEC_PARAMS)
def test_bad_input_raises_parameter_error_naming_it(
        trained_convnet: nn.Module, attack_batch: tuple[torch.Tensor, torch.Tensor],
        spec: str, problem: str) -> None:
    x, y = attack_batch[0][:8], attack_batch[1][:8]
    model, bad_x, bad_y, match = _bad_inputs(x, y, trained_convnet)[problem]
    with pytest.raises(ParameterError, match=match):
        _attack(spec)(model, bad_x, bad_y)
