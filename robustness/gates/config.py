"""User input -> :class:`~robustness.gates.gate.Gate`: marker kwargs, TOML tables, gate files.

:func:`gate_from_mapping` validates one gate's settings (a pytest marker's keyword
arguments, a ``[[gate]]`` table); :func:`load_gate_file` reads a whole gate file for
``robustness gate``. Every mistake is a :class:`~robustness.gates.errors.GateConfigError`
naming the source, the key, what was expected and what was received.

The gate file schema (paths are relative to the file)::

    [defaults]                     # optional; inherited by every gate
    budget = "fast"                # "fast" | "standard"
    n = 500                        # test images (default: the budget's)
    seed = 0
    rule = "upper"                 # "upper" | "point"
    max_drop = 0.0                 # baseline tolerance of thresholds without max_drop
    baseline = "robustness-baseline.json"

    [[gate]]
    name = "convnet-mnist"                 # required, unique
    model = "model/model.safetensors"      # required: a checkpoint (file or run directory)
    data = "mnist"                         # default: the checkpoint's dataset
    attacks = ["fgsm", "pgd(steps=10)"]    # default: the budget's
    eps = 0.1
    robust_accuracy = 0.5                  # minimum (and/or max_drop)
    attack = "pgd"                         # default: worst case across attacks
    max_drop = 0.05
    rule = "upper"

    [[gate.thresholds]]                    # optional further thresholds of this gate
    eps = 0.2
    robust_accuracy = 0.1

Precedence: a gate's own keys, then the overrides (command-line options), then
``[defaults]``. Nothing here imports torch at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustness.core.validation import (
    EPS_EXPECTED,
    ParameterError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    did_you_mean,
    invalid,
)
from robustness.gates.errors import GateConfigError
from robustness.gates.gate import BUDGETS, DEFAULT_BUDGET, Gate, GateDefaults
from robustness.gates.threshold import DEFAULT_RULE, RULES, Threshold

GATE_KEYS: dict[str, str] = {
    "name": "gate id (baseline key); default: the test id / required in TOML",
    "model": "checkpoint path or trained ensemble directory (relative to the project root / "
             "the TOML file), 'pkg.module:factory' with weights, or nn.Module",
    "weights": "safetensors weights of a 'pkg.module:factory' model (relative path as model)",
    "aggregation": "how an ensemble directory's members are combined: mean, max, vote, "
                   "logit_mean (default mean)",
    "members": "use the first N members of an ensemble directory (default all)",
    "data": "dataset name ('mnist', 'digits', 'idx:DIR', 'PATH.npz'); default: the "
            "checkpoint's dataset",
    "attacks": "attack specs run in order, e.g. ['fgsm', 'pgd(steps=20)']; default: the "
               "budget's",
    "budget": f"attack preset: {', '.join(BUDGETS)}",
    "n": "number of test images; default: the budget's",
    "seed": "seed of the attacks",
    "eps": "the budget the threshold applies at (a float)",
    "robust_accuracy": "minimum robust accuracy in [0, 1]",
    "attack": "the attack the threshold applies to; default: worst case across attacks",
    "max_drop": "largest allowed drop from the baseline",
    "rule": f"statistical rule: {', '.join(RULES)}",
    "norm": "the norm eps is in ('linf', 'l2'): needed for the worst case when the attacks "
            "use several norms",
    "allow_findings": "sanity-check findings accepted for this gate, by check name (e.g. "
                      "['input-gradients']); any other warning makes the gate unverified",
    "reference_attack": "add the reference PGD to the worst case in every norm used "
                        "(default true; false removes it explicitly)",
    "thresholds": "further thresholds: Threshold objects or tables with eps, "
                  "robust_accuracy, attack, max_drop, rule, norm",
}
_THRESHOLD_KEYS = ("eps", "robust_accuracy", "attack", "max_drop", "rule", "norm")
DEFAULTS_KEYS = ("budget", "n", "seed", "rule", "max_drop", "baseline")  # [defaults]
TOP_KEYS = ("defaults", "gate")  # top-level tables of a gate file


def unknown_key(owner: str, key: str, known: Iterable[str]) -> GateConfigError:
    """The error for a key ``owner`` does not know, suggesting the closest known one."""
    known = list(known)
    hint = did_you_mean(key, known, n=1)
    return GateConfigError(f"{owner} got an unknown key '{key}'{hint}. Known keys: "
                           f"{', '.join(known)}.")


def _resolve_path(value: str, base_dir: Path) -> Path:
    p = Path(os.path.expandvars(value)).expanduser()
    return p if p.is_absolute() else base_dir / p


def _threshold(owner: str, values: Mapping[str, Any], defaults: GateDefaults,
               *, regression_only_ok: bool) -> Threshold:
    eps = values.get("eps")
    if eps is None:
        raise invalid(owner, "eps", "a float: the budget the threshold applies at", None)
    if isinstance(eps, list | tuple):
        raise invalid(owner, "eps", "a single float (give further budgets as separate "
                      "thresholds)", eps)
    eps = check_float(owner, "eps", eps, low=0.0, low_open=True, expected=EPS_EXPECTED)
    ra = values.get("robust_accuracy")
    if ra is not None:
        ra = check_float(owner, "robust_accuracy", ra, low=0.0, high=1.0)
    max_drop = values.get("max_drop")
    if max_drop is not None:
        max_drop = check_float(owner, "max_drop", max_drop, low=0.0, high=1.0)
    if ra is None and max_drop is None:
        if not regression_only_ok:
            raise invalid(owner, "robust_accuracy", "given (or max_drop): a threshold needs "
                          "something to check", None)
        max_drop = defaults.max_drop  # record figures; compare with the baseline only
    attack = values.get("attack")
    if attack is not None and (not isinstance(attack, str) or not attack.strip()):
        raise invalid(owner, "attack", "an attack label such as 'pgd', or absent for the worst "
                      "case across attacks", attack)
    rule = check_choice(owner, "rule", values.get("rule", defaults.rule), tuple(RULES))
    norm = values.get("norm")
    if norm is not None:
        norm = check_choice(owner, "norm", norm, ("linf", "l2", "none"))
    return Threshold(robust_accuracy=ra, eps=eps, attack=attack, max_drop=max_drop, rule=rule,
                     norm=norm)


def _attack_list(owner: str, value: Any) -> tuple[str, ...]:
    from attacks.registry import parse_attack_specs

    if isinstance(value, str):
        specs = parse_attack_specs(value)
    elif isinstance(value, list | tuple) and value and all(isinstance(v, str) and v.strip()
                                                           for v in value):
        specs = [v.strip() for v in value]
    else:
        raise invalid(owner, "attacks", "a non-empty list of attack specs such as ['fgsm', "
                      "'pgd(steps=20)'] or one comma-separated string", value)
    if len(set(specs)) != len(specs):
        raise invalid(owner, "attacks", "a list without duplicates", specs)
    return tuple(specs)


def check_attack_specs(owner: str, specs: Sequence[str], eps: float) -> None:
    """Build every attack once so a typo fails at configuration time, before any work.

    Uses the same parsing and construction as :func:`robustness.evaluate`.
    """
    from attacks.registry import parse_attack_spec

    for spec in specs:
        try:
            parsed = parse_attack_spec(spec)
            parsed.build(eps if parsed.bounded() else None)
        except ParameterError as e:
            raise GateConfigError(f"{owner}: attack {spec!r} is invalid: {e}") from None


def gate_from_mapping(values: Mapping[str, Any], *, owner: str, default_name: str | None,
                      defaults: GateDefaults, base_dir: Path) -> Gate:
    """Validate user gate settings (a pytest marker's kwargs, a TOML table) into a :class:`Gate`.

    Parameters
    ----------
    values
        Keys of :data:`GATE_KEYS`.
    owner
        How to name the source in messages, e.g. ``"@pytest.mark.robustness on test_x"``.
    default_name
        The gate's name when ``values`` has none; None makes ``name`` required.
    defaults
        Inherited settings.
    base_dir
        Relative checkpoint and data paths are resolved against it.

    Returns
    -------
    Gate

    Raises
    ------
    GateConfigError
        Naming the key, what was expected and what was received.
    """
    try:
        return _gate_from_mapping(values, owner, default_name, defaults, base_dir)
    except GateConfigError:
        raise
    except ParameterError as e:
        raise GateConfigError(str(e)) from None


def _gate_from_mapping(values: Mapping[str, Any], owner: str, default_name: str | None,
                       defaults: GateDefaults, base_dir: Path) -> Gate:
    from torch import nn

    from robustness.data import canonical_dataset_name

    for key in values:
        if key not in GATE_KEYS:
            raise unknown_key(owner, key, GATE_KEYS)
    name = values.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise invalid(owner, "name", "a non-empty string identifying the gate", name)

    from robustness.model_source import is_factory

    model = values.get("model")
    if isinstance(model, str | os.PathLike) and not is_factory(os.fspath(model)):
        model = _resolve_path(os.fspath(model), base_dir)
    elif isinstance(model, str):
        model = model.strip()
    elif model is not None and not isinstance(model, nn.Module):
        raise invalid(owner, "model", "a checkpoint path, an ensemble directory, "
                      "'pkg.module:factory' or a torch.nn.Module", type(model).__name__, raw=True)
    weights = values.get("weights")
    if weights is not None:
        if not isinstance(weights, str | os.PathLike):
            raise invalid(owner, "weights", "a path to a .safetensors file", weights)
        weights = _resolve_path(os.fspath(weights), base_dir)
    aggregation = values.get("aggregation")
    if aggregation is not None:
        check_choice(owner, "aggregation", aggregation, ("mean", "max", "vote", "logit_mean"))
    members = values.get("members")
    if members is not None:
        members = check_int(owner, "members", members, low=1)
    data = values.get("data")
    if isinstance(data, str):
        if not data.strip():
            raise invalid(owner, "data", "a dataset name such as 'mnist'", data)
        data = canonical_dataset_name(os.path.expandvars(data), base_dir)

    budget = check_choice(owner, "budget", values.get("budget", defaults.budget), tuple(BUDGETS))
    n = values.get("n", defaults.n)
    if n is not None:
        n = check_int(owner, "n", n, low=1)
    seed = check_int(owner, "seed", values.get("seed", defaults.seed), low=0)
    attacks = _attack_list(owner, values["attacks"]) if values.get("attacks") is not None \
        else None

    thresholds: list[Threshold] = []
    extra = values.get("thresholds", [])
    if not isinstance(extra, list | tuple):
        raise invalid(owner, "thresholds", "a list of Threshold objects or tables", extra)
    top = {k: values[k] for k in _THRESHOLD_KEYS if k in values and k != "rule"}
    if top or not extra:
        thresholds.append(_threshold(owner, {**top, **({"rule": values["rule"]}
                                                        if "rule" in values else {})},
                                     defaults, regression_only_ok=True))
    elif "rule" in values:
        check_choice(owner, "rule", values["rule"], tuple(RULES))
    for i, t in enumerate(extra):
        where = f"{owner} thresholds[{i}]"
        if isinstance(t, Threshold):
            if t.eps is None:
                raise invalid(where, "eps", "a float: the budget the threshold applies at", None)
            thresholds.append(t)
        elif isinstance(t, Mapping):
            for key in t:
                if key not in _THRESHOLD_KEYS:
                    raise unknown_key(where, key, _THRESHOLD_KEYS)
            inherited = {"rule": values["rule"]} if "rule" in values else {}
            thresholds.append(_threshold(where, {**inherited, **t}, defaults,
                                         regression_only_ok=False))
        else:
            raise invalid(where, "thresholds", "Threshold objects or tables", t)
    allow = values.get("allow_findings", [])
    if isinstance(allow, str) or not isinstance(allow, list | tuple) or not all(
            isinstance(a, str) and a.strip() for a in allow):
        raise invalid(owner, "allow_findings", "a list of check names such as "
                      "['input-gradients']", allow)
    from robustness.evaluation.report import CHECKS

    for a in allow:
        if a.strip() not in CHECKS:
            raise invalid(owner, "allow_findings", f"check names among {', '.join(CHECKS)}"
                          f"{did_you_mean(a.strip(), CHECKS)}", a)
    reference = check_bool(owner, "reference_attack", values.get("reference_attack", True))
    gate = Gate(name=name.strip(), thresholds=tuple(thresholds), model=model, data=data,
                attacks=attacks, budget=budget, n=n, seed=seed,
                tolerance=check_float(owner, "max_drop (default)", defaults.max_drop,
                                      low=0.0, high=1.0),
                allow_findings=tuple(a.strip() for a in allow), reference_attack=reference,
                weights=weights, aggregation=aggregation, members=members)
    check_attack_specs(owner, gate.attacks if gate.attacks is not None
                       else BUDGETS[gate.budget].attacks, gate.eps[0])
    return gate


@dataclass(frozen=True)
class GateFile:
    """A parsed gate file: its gates and the baseline path it names (if any)."""

    path: Path
    gates: list[Gate]
    baseline: Path | None


def load_gate_file(path: Path, *, budget: str | None = None, n: int | None = None,
                   seed: int | None = None, rule: str | None = None,
                   max_drop: float | None = None, baseline: Path | None = None,
                   only: Sequence[str] | None = None) -> GateFile:
    """Parse and validate a gate file; the keyword arguments override its ``[defaults]``.

    Parameters
    ----------
    path
        The TOML file (schema in the module docstring).
    budget, n, seed, rule, max_drop, baseline
        Overrides of ``[defaults]`` (None: the file's value, else the built-in default).
    only
        Gate names to keep; every one must name a gate of the file.

    Returns
    -------
    GateFile

    Raises
    ------
    GateConfigError
        Naming the file, the table and the key.
    """
    import tomllib

    if not path.is_file():
        raise GateConfigError(f"No gate file at {path}: the file does not exist.")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GateConfigError(f"{path} is not valid TOML: {e}") from None
    base = path.resolve().parent
    for key in doc:
        if key not in TOP_KEYS:
            raise unknown_key(f"{path}", key, TOP_KEYS)
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise GateConfigError(f"{path}: [defaults] must be a table; got {defaults!r}.")
    for key in defaults:
        if key not in DEFAULTS_KEYS:
            raise unknown_key(f"{path} [defaults]", key, DEFAULTS_KEYS)
    owner = f"{path} [defaults]"
    try:
        d = GateDefaults(
            budget=check_choice(owner, "budget", _pick(budget, defaults.get("budget"),
                                                        DEFAULT_BUDGET), tuple(BUDGETS)),
            n=_pick(n, check_int(owner, "n", defaults["n"], low=1)
                    if "n" in defaults else None, None),
            seed=_pick(seed, check_int(owner, "seed", defaults["seed"], low=0)
                       if "seed" in defaults else None, 0),
            rule=check_choice(owner, "rule", _pick(rule, defaults.get("rule"), DEFAULT_RULE),
                              tuple(RULES)),
            max_drop=_pick(max_drop, check_float(owner, "max_drop", defaults["max_drop"],
                                                 low=0.0, high=1.0)
                           if "max_drop" in defaults else None, 0.0))
        if baseline is None and "baseline" in defaults:
            if not isinstance(defaults["baseline"], str) or not defaults["baseline"].strip():
                raise invalid(owner, "baseline", "a path to a JSON file", defaults["baseline"])
            baseline = _resolve_path(defaults["baseline"], base)
    except ParameterError as e:
        raise GateConfigError(str(e)) from None

    tables = doc.get("gate")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise GateConfigError(f"{path} must define at least one gate as a [[gate]] table with "
                              f"name, model, eps and robust_accuracy (or max_drop).")
    gates: list[Gate] = []
    for i, table in enumerate(tables):
        label = table.get("name", i)
        owner = f"{path} [[gate]] {label!r}"
        if "model" not in table:
            raise GateConfigError(f"{owner} has no 'model': name the trained checkpoint to "
                                  f"gate (e.g. model = \"model/model.safetensors\").")
        if not isinstance(table["model"], str) or not table["model"].strip():
            raise GateConfigError(str(invalid(owner, "model", "a checkpoint path (a string)",
                                              table["model"])))
        gates.append(gate_from_mapping(table, owner=owner, default_name=None, defaults=d,
                                       base_dir=base))
    names = [g.name for g in gates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GateConfigError(f"{path}: gate names must be unique (they key the baseline); "
                              f"repeated: {', '.join(duplicates)}.")
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise GateConfigError(f"--gate {unknown[0]!r} names no gate in {path}; gates: "
                                  f"{', '.join(names)}.")
        gates = [g for g in gates if g.name in only]
    # An override that a gate's own value would silently beat is a conflict: name both.
    overrides = {"budget": budget, "n": n, "seed": seed}
    for table in tables:
        if only and table.get("name") not in only:
            continue
        for key, value in overrides.items():
            if value is not None and key in table and table[key] != value:
                raise GateConfigError(
                    f"{path} [[gate]] {table.get('name')!r} sets {key} = {table[key]!r}, which "
                    f"conflicts with --{key} {value}: remove one of them.")
    return GateFile(path=path, gates=gates, baseline=baseline)


def _pick(override: Any, file: Any, builtin: Any) -> Any:
    return override if override is not None else file if file is not None else builtin


__all__ = [
    "GATE_KEYS",
    "GateFile",
    "check_attack_specs",
    "gate_from_mapping",
    "load_gate_file",
    "unknown_key",
]
