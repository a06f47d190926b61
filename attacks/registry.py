"""Attacks by name, for configs and the CLI, and the attack-spec language.

``make_attack("pgd", eps=0.3, steps=40)``, ``make_attack("pgd-l2", eps=2.0)``,
``make_attack("torchattacks:CW", c=1.0)``, ``make_attack("foolbox:LinfDeepFoolAttack")``.
Keyword arguments are checked against the attack's signature before it is built,
so a typo is reported by name with close matches instead of as a ``TypeError``.

An attack *spec* names an attack and its arguments in one string, as configs and
``--attacks`` take them: ``"pgd(steps=40, restarts=5)"``, ``"torchattacks:CW(c=1)"``;
a list is comma-separated: ``"fgsm,pgd(steps=20),genetic"``. Arguments are Python
keyword arguments whose values are literals (bare words are strings: ``loss=ce``).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from attacks.adapters import FoolboxAttack, TorchattacksAttack, check_kwargs
from attacks.base import Attack
from attacks.gradient import FGSM, PGD
from robustness.core.validation import did_you_mean, invalid

AttackFactory = Callable[..., Attack]

# Literals a shell user is likely to type in Python spelling rather than JSON.
_PYTHON_LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}


def _build(spec: str, cls: type[Attack], kwargs: dict[str, Any], **fixed: Any) -> Attack:
    """Check ``kwargs`` against ``cls`` and build it with ``fixed`` arguments the name implies."""
    for key, value in fixed.items():
        if key in kwargs and kwargs[key] != value:
            raise invalid(f"make_attack({spec!r})", key, f"{value!r} (implied by the name "
                          f"{spec!r}; see available_attacks())", kwargs[key])
    kwargs = {k: v for k, v in kwargs.items() if k not in fixed}
    check_kwargs(cls.__name__, cls, kwargs)
    return cls(**kwargs, **fixed)


def _fgsm(**kwargs: Any) -> Attack:
    return _build("fgsm", FGSM, kwargs)


def _pgd(**kwargs: Any) -> Attack:
    return _build("pgd", PGD, kwargs, norm="linf")


def _pgd_l2(**kwargs: Any) -> Attack:
    return _build("pgd-l2", PGD, kwargs, norm="l2")


def _genetic(**kwargs: Any) -> Attack:
    from attacks.genetic import GeneticAttack

    return _build("genetic", GeneticAttack, kwargs)


ATTACKS: dict[str, AttackFactory] = {
    "fgsm": _fgsm,
    "pgd": _pgd,
    "pgd-l2": _pgd_l2,
    "genetic": _genetic,
}
"""Our attacks: name -> factory taking the attack's keyword arguments."""

LIBRARIES: dict[str, AttackFactory] = {
    "torchattacks": TorchattacksAttack,
    "foolbox": FoolboxAttack,
}
"""Library prefixes: ``"PREFIX:NAME"`` builds ``LIBRARIES[PREFIX](NAME, **kwargs)``."""


def make_attack(spec: str, **kwargs: Any) -> Attack:
    """Build an attack from its registry name.

    Parameters
    ----------
    spec
        One of :data:`ATTACKS` (``"fgsm"``, ``"pgd"``, ``"pgd-l2"``, ``"genetic"``), or
        ``"torchattacks:NAME"`` / ``"foolbox:NAME"`` for any class of those libraries.
    **kwargs
        The attack's keyword arguments (``eps``, ``steps``, ``seed``, ...).

    Returns
    -------
    Attack

    Raises
    ------
    ParameterError
        For an unknown name (listing the available ones), an unknown or missing
        keyword argument, or an invalid value.
    """
    hint = ""
    if isinstance(spec, str):
        prefix, sep, name = spec.partition(":")
        if sep and prefix in LIBRARIES:
            return LIBRARIES[prefix](name, **kwargs)
        if spec in ATTACKS:
            return ATTACKS[spec](**kwargs)
        word, candidates = (prefix, LIBRARIES) if sep else (spec, ATTACKS)
        hint = did_you_mean(word, candidates)
    patterns = [*ATTACKS, *(f"{prefix}:NAME" for prefix in LIBRARIES)]
    raise invalid("make_attack", "spec", f"one of {', '.join(map(repr, patterns))}{hint}", spec)


def available_attacks(*, libraries: bool = True) -> list[str]:
    """Names :func:`make_attack` accepts.

    Parameters
    ----------
    libraries
        Also list every ``"torchattacks:NAME"`` and ``"foolbox:NAME"`` (imports both
        libraries; one that is not installed is left out).

    Returns
    -------
    list of str
        Our attacks first, then the library attacks sorted by name.
    """
    names = list(ATTACKS)
    if libraries:
        # Imported here: the adapters import their libraries lazily too.
        from attacks.adapters import foolbox_names, torchattacks_names

        for prefix, list_names in (("torchattacks", torchattacks_names),
                                   ("foolbox", foolbox_names)):
            try:
                names += [f"{prefix}:{name}" for name in list_names()]
            except ImportError:
                continue
    return names


def parse_attack_kwargs(pairs: Iterable[str], *, owner: str = "parse_attack_kwargs",
                        name: str = "pairs") -> dict[str, Any]:
    """Parse CLI ``key=value`` strings into keyword arguments for :func:`make_attack`.

    Values are JSON literals where possible (``40`` -> int, ``0.3`` / ``1e-3`` ->
    float, ``true`` / ``false`` -> bool, ``null`` -> None; Python's ``True`` /
    ``False`` / ``None`` are accepted too) and strings otherwise (``loss=ce``).

    Parameters
    ----------
    pairs
        E.g. ``["eps=0.3", "steps=40", "random_start=false", "loss=margin"]``.
    owner, name
        How the user gave them, for messages (the CLI: ``"robustness attack"``,
        ``"--param"``).

    Returns
    -------
    dict
        ``{"eps": 0.3, "steps": 40, "random_start": False, "loss": "margin"}``.

    Raises
    ------
    ParameterError
        For a pair without ``=``, a key that is not an identifier, or a repeated key.
    """
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = str(pair).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise invalid(owner, name, "'key=value' strings whose key is "
                          "a Python identifier", pair)
        if key in kwargs:
            raise invalid(owner, name, "free of repeated keys",
                          f"{key!r} twice", raw=True)
        kwargs[key] = _parse_value(text.strip())
    return kwargs


def _parse_value(text: str) -> Any:
    """A JSON (or Python) literal if ``text`` is one, else ``text`` itself."""
    if text in _PYTHON_LITERALS:
        return _PYTHON_LITERALS[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# -- the attack-spec language ------------------------------------------------------------

_SPEC_NAME = re.compile(r"\s*([A-Za-z_][\w.-]*(?::[A-Za-z_]\w*)?)\s*")
_BARE_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class AttackSpec:
    """One attack as configs name it: a registry name and keyword arguments.

    ``label`` is how reports and gates refer to it: the spec as written, normalised
    (``"pgd(steps=20)"``), or the bare name when there are no arguments.

    ``factory`` builds attacks that are not in the registry (e.g. the ensemble-aware
    adaptive attack of :mod:`ensembles.adaptive`, which this layer cannot import): it is
    called with ``kwargs``, ``seed`` and ``eps`` instead of :func:`make_attack`.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    factory: Callable[..., Attack] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        if not self.kwargs:
            return self.name
        args = ",".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                        for k, v in self.kwargs.items())
        return f"{self.name}({args})"

    def build(self, eps: float | None = None, *, seed: int = 0) -> Attack:
        """The attack, at budget ``eps`` when given (spec arguments override ``seed``)."""
        kwargs = {"seed": seed, **self.kwargs}
        if eps is not None:
            kwargs["eps"] = eps
        if self.factory is not None:
            return self.factory(**kwargs)
        return make_attack(self.name, **kwargs)

    def bounded(self, *, seed: int = 0) -> bool:
        """Does the attack take a budget? Decided by building it without one.

        Attacks with a default budget (ours, torchattacks' PGD) report it in ``eps``;
        foolbox's fixed-epsilon attacks refuse to be built without one; minimum-norm
        attacks (CW, DeepFool) build fine and report ``eps=None``.
        """
        from robustness.core.validation import ParameterError

        try:
            probe = self.build(seed=seed)
        except ParameterError as without:
            # A fixed-budget attack that needs eps; any other error is the spec's own and
            # is the one to report (not an "unknown keyword eps" from a retry).
            if "'eps' parameter" not in str(without):
                raise
            return True
        return probe.eps is not None


def _literal(node: ast.expr, text: str, where: tuple[str, str]) -> Any:
    """The value of one keyword argument: a Python literal, or a bare word as a string."""
    if isinstance(node, ast.Name):
        return _BARE_WORDS.get(node.id, node.id)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise invalid(*where, "keyword arguments whose values are "
                      "literals (numbers, strings, True/False/None, lists)",
                      ast.get_source_segment(text, node) or text) from None


def _call_kwargs(args: str, spec: str, where: tuple[str, str]) -> dict[str, Any] | None:
    """Keyword arguments of ``f(<args>)`` parsed by Python's own parser; None if not valid."""
    source = f"f({args})"
    try:
        call = ast.parse(source, mode="eval").body
    except SyntaxError:
        return None
    assert isinstance(call, ast.Call)
    if call.args or any(k.arg is None for k in call.keywords):
        raise invalid(*where, "keyword arguments only, such as "
                      "'pgd(steps=20)'", spec)
    names = [str(k.arg) for k in call.keywords]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise invalid(*where, f"each keyword argument once ({', '.join(repeated)} given "
                      f"{'twice' if len(repeated) == 1 else 'more than once'})", spec)
    return {str(k.arg): _literal(k.value, source, where) for k in call.keywords}


def _scan(text: str, pos: int, where: tuple[str, str]) -> tuple[AttackSpec, int]:
    """Read one spec starting at ``pos``; return it and the position after it.

    ``where`` is the (owner, parameter) that errors name.
    """
    m = _SPEC_NAME.match(text, pos)
    if not m:
        raise invalid(*where, "an attack name such as 'pgd' or "
                      "'torchattacks:CW', optionally with arguments 'pgd(steps=20)'", text)
    name, pos = m.group(1), m.end()
    if pos == len(text) or text[pos] != "(":
        return AttackSpec(name), pos
    # The arguments end at the first ')' that closes a valid Python call, so commas
    # and parentheses inside string literals are handled by Python's parser.
    for close in (i for i, ch in enumerate(text) if ch == ")" and i > pos):
        kwargs = _call_kwargs(text[pos + 1:close], text, where)
        if kwargs is not None:
            return AttackSpec(name, kwargs), close + 1
    raise invalid(*where, "balanced parentheses around keyword "
                  "arguments, such as 'pgd(steps=20)'", text)


def parse_attack_spec(spec: str | tuple[str, dict[str, Any]] | AttackSpec) -> AttackSpec:
    """One spec: ``"pgd(steps=20)"``, ``("pgd", {"steps": 20})`` or an :class:`AttackSpec`."""
    if isinstance(spec, AttackSpec):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) \
            and isinstance(spec[1], dict):
        return AttackSpec(spec[0], dict(spec[1]))
    if not isinstance(spec, str) or not spec.strip():
        raise invalid("parse_attack_spec", "spec", "an attack spec such as 'pgd' or "
                      "'pgd(steps=20)', or a (name, kwargs) pair", spec)
    parsed, end = _scan(spec, 0, ("parse_attack_spec", "spec"))
    if spec[end:].strip():
        raise invalid("parse_attack_spec", "spec", "one attack spec such as 'pgd(steps=20)' "
                      "(separate several with commas in a list)", spec)
    return parsed


def parse_attack_list(text: str, *, owner: str = "parse_attack_list",
                      name: str = "attacks") -> list[AttackSpec]:
    """``"fgsm, pgd(steps=20,step_size=0.01), genetic"`` -> three :class:`AttackSpec`.

    ``owner`` and ``name`` say how the user gave the list, for messages (the CLI passes
    ``"robustness evaluate"`` and ``"--attacks"``).
    """
    if not isinstance(text, str) or not text.strip():
        raise invalid(owner, name, "a comma-separated list of attack "
                      "specs such as 'fgsm,pgd(steps=20),genetic'", text)
    specs, pos = [], 0
    while True:
        spec, pos = _scan(text, pos, (owner, name))
        specs.append(spec)
        rest = text[pos:].lstrip()
        if not rest:
            return specs
        if rest[0] != ",":
            raise invalid(owner, name, "a comma-separated list of attack "
                          "specs such as 'fgsm,pgd(steps=20),genetic'", text)
        pos = len(text) - len(rest) + 1


def parse_attack_specs(text: str) -> list[str]:
    """The labels of :func:`parse_attack_list` (the form ``--attacks`` and configs pass on)."""
    return [s.label for s in parse_attack_list(text)]
