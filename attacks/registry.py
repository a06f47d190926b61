"""Attacks by name, for configs and the CLI.

``make_attack("pgd", eps=0.3, steps=40)``, ``make_attack("pgd-l2", eps=2.0)``,
``make_attack("torchattacks:CW", c=1.0)``, ``make_attack("foolbox:LinfDeepFoolAttack")``.
Keyword arguments are checked against the attack's signature before it is built,
so a typo is reported by name with close matches instead of as a ``TypeError``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from typing import Any

from attacks.adapters import FoolboxAttack, TorchattacksAttack, check_kwargs
from attacks.base import Attack
from attacks.gradient import FGSM, PGD
from robustness.validation import invalid

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
    # Imported on use so that the registry does not depend on the module at import time.
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
        by_lower = {c.lower(): c for c in candidates}
        close = difflib.get_close_matches(word.lower(), list(by_lower), n=3, cutoff=0.6)
        if close:
            hint = f" (did you mean {', '.join(repr(by_lower[c]) for c in close)}?)"
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


def parse_attack_kwargs(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse CLI ``key=value`` strings into keyword arguments for :func:`make_attack`.

    Values are JSON literals where possible (``40`` -> int, ``0.3`` / ``1e-3`` ->
    float, ``true`` / ``false`` -> bool, ``null`` -> None; Python's ``True`` /
    ``False`` / ``None`` are accepted too) and strings otherwise (``loss=ce``).

    Parameters
    ----------
    pairs
        E.g. ``["eps=0.3", "steps=40", "random_start=false", "loss=margin"]``.

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
            raise invalid("parse_attack_kwargs", "pairs", "'key=value' strings whose key is "
                          "a Python identifier", pair)
        if key in kwargs:
            raise invalid("parse_attack_kwargs", "pairs", "free of repeated keys",
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
