"""torchattacks and foolbox attacks behind our protocol, addressed by name.

``TorchattacksAttack("CW", c=1.0, steps=50)`` and
``FoolboxAttack("LinfDeepFoolAttack", eps=0.3)`` are ordinary :class:`Attack`
subclasses: the base template validates the inputs, seeds, restores the model's
modes and re-evaluates success, so an adapted attack's numbers are computed exactly
like ours. The libraries are imported only when an adapter is built.

Neither library reports its cost, so the adapters run the model inside a
:class:`QueryCounter` that counts the inputs it evaluates and the input gradients
taken through it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from attacks.base import Attack, AttackError, RunResult
from robustness.core.validation import (
    MAX_ITERATIONS,
    MAX_POPULATION,
    MAX_RESTARTS,
    ParameterError,
    check_float,
    check_int,
    did_you_mean,
    invalid,
)

# torchattacks attacks whose geometry their name does not give away ("...L2" is L2,
# everything else L-inf): L2 minimisers, and L0 / L1 / noise attacks that have no
# L-inf or L2 budget ("none").
_TORCHATTACKS_L2: frozenset[str] = frozenset({"CW", "DeepFool"})
_TORCHATTACKS_NO_NORM: frozenset[str] = frozenset(
    {"VANILA", "GN", "EADL1", "EADEN", "JSMA", "OnePixel", "Pixle", "SparseFool"}
)
_FOOLBOX_DISTANCES = ("linf", "l2", "l1", "l0")


class _CountInputGradient(torch.autograd.Function):
    """Identity whose backward pass tallies the rows of every gradient reaching the input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, counter: QueryCounter) -> torch.Tensor:
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.counter.gradient_rows += grad.shape[0]
        return grad, None


class QueryCounter(nn.Module):
    """Wrap a model and count what a library attack spends on it.

    Parameters
    ----------
    model
        Maps (B, C, H, W) to logits (B, K).

    Attributes
    ----------
    rows
        Inputs evaluated so far: the sum of ``B`` over all forward calls.
    gradient_rows
        Inputs whose gradient was back-propagated to the input: the sum of ``B``
        over every backward pass that reached a forward call's input.
    calls
        Forward calls so far.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Mirror the root flag only: train()/eval() here would overwrite the wrapped
        # model's per-submodule modes. Libraries read it to decide what to restore.
        self.training = model.training
        self.rows = 0
        self.gradient_rows = 0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K) logits of the wrapped model."""
        self.rows += x.shape[0]
        self.calls += 1
        if x.requires_grad and torch.is_grad_enabled():
            x = _CountInputGradient.apply(x, self)
        return self.model(x)

    def per_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(queries, gradient_evaluations)``, each (n,) int64, for a batch of ``n`` samples.

        The libraries do not say which rows belong to which sample, so every sample is
        charged the batch average, rounded up. This is exact when every call covers
        the whole batch (all gradient attacks here) and an average otherwise (e.g.
        torchattacks' DeepFool, which works one sample at a time).
        """
        queries = torch.full((n,), math.ceil(self.rows / n), dtype=torch.int64)
        grads = torch.full((n,), math.ceil(self.gradient_rows / n), dtype=torch.int64)
        return queries, grads


# The ranges the libraries document for their common hyperparameters (torchattacks and
# foolbox docstrings). Neither library checks them: torchattacks' PGD with steps=-1 runs no
# step at all and returns its random start, which reads as robustness.
_LIBRARY_RANGES: dict[str, tuple[str, float, bool]] = {
    # name: (kind, low, low_open)
    "steps": ("int", 1, False), "n_restarts": ("int", 1, False),
    "binary_search_steps": ("int", 1, False), "max_iter": ("int", 1, False),
    "n_iter": ("int", 1, False), "population": ("int", 2, False),
    "n_classes": ("int", 2, False), "candidates": ("int", 1, False),
    "n_queries": ("int", 1, False), "query_limit": ("int", 1, False),
    "max_queries": ("int", 1, False), "n_samples": ("int", 1, False),
    "iterations": ("int", 1, False), "num_iterations": ("int", 1, False),
    "max_iterations": ("int", 1, False), "p_init": ("float", 0.0, True),
    "c": ("float", 0.0, True), "initial_const": ("float", 0.0, True),
    "lr": ("float", 0.0, True), "stepsize": ("float", 0.0, True),
    "abs_stepsize": ("float", 0.0, True), "rel_stepsize": ("float", 0.0, True),
    "alpha": ("float", 0.0, False), "kappa": ("float", 0.0, False),
    "confidence": ("float", 0.0, False), "overshoot": ("float", 0.0, False),
}

_COUNT_LIMITS = {"n_restarts": MAX_RESTARTS, "population": MAX_POPULATION}


def check_library_ranges(owner: str, kwargs: Mapping[str, Any]) -> None:
    """Check the common hyperparameters in ``kwargs`` against the libraries' documented
    ranges (:data:`_LIBRARY_RANGES`); raise :class:`ParameterError` naming the first bad one."""
    for key, value in kwargs.items():
        if key not in _LIBRARY_RANGES or value is None:
            continue
        kind, low, low_open = _LIBRARY_RANGES[key]
        if kind == "int":
            check_int(owner, key, value, low=int(low), high=_COUNT_LIMITS.get(key, MAX_ITERATIONS))
        else:
            check_float(owner, key, value, low=low, low_open=low_open)


def check_kwargs(owner: str, func: Callable[..., Any], kwargs: Mapping[str, Any], *,
                 supplied: Collection[str] = ()) -> None:
    """Check ``kwargs`` against the signature of ``func`` (a class or a function).

    Parameters
    ----------
    owner
        Name used in error messages, e.g. ``"torchattacks.PGD"``.
    func
        The callable the keyword arguments are meant for.
    kwargs
        The user's keyword arguments.
    supplied
        Parameters the caller fills in itself (e.g. ``model``); the user may not pass them.

    Raises
    ------
    ParameterError
        Naming the first keyword ``func`` does not accept (with close matches), a
        reserved one, or a required parameter that is missing.
    """
    parameters = inspect.signature(func).parameters
    named = [n for n, p in parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in supplied]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for key, value in kwargs.items():
        if key in supplied:
            raise invalid(owner, key, "left out: the adapter supplies it",
                          f"a {type(value).__name__}", raw=True)
        if key not in named and not open_ended:
            accepted = ", ".join(named) or "none"
            raise invalid(owner, key, f"one of its keyword arguments: {accepted}"
                          f"{did_you_mean(key, named)}", f"unknown keyword {key}={_brief(value)}",
                          raw=True)
    for name in named:
        if parameters[name].default is inspect.Parameter.empty and name not in kwargs:
            raise invalid(owner, name, "given: it has no default", "nothing", raw=True)
    for key, value in kwargs.items():
        if key in named and value is not None:
            _check_like_default(owner, key, value, parameters[key].default)
    check_library_ranges(owner, kwargs)


def _check_like_default(owner: str, key: str, value: Any, default: Any) -> None:
    """A keyword whose documented default is a bool, int or float must be one too: the
    libraries do not check, and fail deep inside (``steps='abc'``) or not at all."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise invalid(owner, key, "a bool (true or false)", value)
    elif isinstance(default, int | float):  # an int default may still take floats (CW's c=1)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(owner, key, "a number", value)


def _brief(value: Any) -> str:
    """``repr(value)`` cut to one short line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _lookup(owner: str, library: str, name: Any, classes: Mapping[str, type]) -> type:
    """The class called ``name`` in ``classes``, or a ParameterError with close matches."""
    if isinstance(name, str) and name in classes:
        return classes[name]
    hint = did_you_mean(name, classes) if isinstance(name, str) else ""
    if not hint:
        hint = f" (available: {', '.join(sorted(classes))})"
    raise invalid(owner, "name", f"the name of a {library} attack class{hint}", name)


def torchattacks_names() -> list[str]:
    """Names of the torchattacks attack classes the adapter can build (imports torchattacks)."""
    return sorted(_torchattacks_classes())


def foolbox_names() -> list[str]:
    """Names of the foolbox attack classes the adapter can build (imports foolbox)."""
    return sorted(_foolbox_classes())


@functools.cache
def _torchattacks_classes() -> dict[str, type]:
    ta = importlib.import_module("torchattacks")
    base = importlib.import_module("torchattacks.attack").Attack
    classes = {}
    for name in ta.__all__:
        cls = getattr(ta, name)
        # Wrappers such as MultiAttack take attacks, not a model: not adaptable by name.
        if (inspect.isclass(cls) and issubclass(cls, base)
                and next(iter(inspect.signature(cls).parameters), None) == "model"):
            classes[name] = cls
    return classes


@functools.cache
def _foolbox_classes() -> dict[str, type]:
    fa = importlib.import_module("foolbox.attacks")
    base = fa.base.Attack
    return {name: cls for name, cls in vars(fa).items()
            if inspect.isclass(cls) and issubclass(cls, base) and not inspect.isabstract(cls)}


@contextlib.contextmanager
def _library_sandbox(model: nn.Module, seed: int, attack: str = "the library attack"
                     ) -> Iterator[None]:
    """Run a library attack without side effects on the caller.

    * An exception raised inside the library becomes one :class:`~attacks.base.AttackError`
      naming ``attack`` and the library's message (not a traceback from its internals).
    * Weight gradients are switched off: the attacks need input gradients only, and
      some (torchattacks CW, DeepFool, JSMA) call ``backward()``, which would
      otherwise accumulate into the caller's ``param.grad``.
    * NumPy's global RNG is seeded (foolbox's GenAttack and Pointwise, torchattacks'
      OnePixel draw from it) and restored afterwards, as the template does for torch.
    * Anything printed is discarded: the protocol never prints, and torchattacks
      prints from its base class (mode changes, device detection).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    # The libraries draw from the legacy global RNG, so that is the one to seed.
    numpy_state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        for p in params:
            p.requires_grad_(False)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except ParameterError:
        raise
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError,
            ZeroDivisionError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise AttackError(f"{attack} failed inside the library: {type(e).__name__}"
                          f"{': ' + first if first else ''}. Check its arguments against the "
                          f"library's documentation.") from e
    finally:
        for p in params:
            p.requires_grad_(True)
        np.random.set_state(numpy_state)  # noqa: NPY002


class _LibraryAttack(Attack):
    """What the two adapters share: a library class name, its kwargs and ``repr``."""

    library: ClassVar[str]
    deterministic: ClassVar[bool] = True

    attack_name: str
    kwargs: dict[str, Any]

    def __repr__(self) -> str:
        params = self._params()
        args = ", ".join([repr(params.pop("name"))] + [f"{k}={v!r}" for k, v in params.items()])
        return f"{type(self).__name__}({args})"

    def _params(self) -> dict[str, Any]:
        return {"name": self.attack_name, **self.kwargs, "eps": self.eps, "norm": self.norm,
                "targeted": self.targeted, "seed": self.seed}

    def _unsupported_mode(self) -> ParameterError:
        mode = "targeted" if self.targeted else "untargeted"
        return invalid(type(self).__name__, "targeted",
                       f"{not self.targeted}: the {self.library} attack {self.attack_name} "
                       f"does not support {mode} attacks", self.targeted)


class TorchattacksAttack(_LibraryAttack):
    """Any torchattacks attack, by class name, behind our protocol.

    Parameters
    ----------
    name
        A torchattacks class name, e.g. ``"PGD"``, ``"CW"``, ``"PGDL2"``, ``"Square"``.
    norm
        The norm ``perturbation_norm`` is reported in. Inferred by default: ``"l2"``
        for names ending in ``L2`` and for CW and DeepFool, ``"none"`` for L0 / L1 /
        noise attacks, else ``"linf"``. For classes that take a ``norm`` argument
        themselves (APGD, FAB, Square, AutoAttack) this value, spelled ``"linf"`` /
        ``"l2"`` or ``"Linf"`` / ``"L2"``, is passed on to the library too.
    targeted
        Run in torchattacks' targeted-by-label mode towards the template's targets.
    seed
        Seeds torch and NumPy for the run; passed on as ``seed`` to classes that take one.
    **kwargs
        The class's own keyword arguments (everything but ``model``), checked against
        its signature. ``eps`` among them is validated and reported as the budget.

    Notes
    -----
    ``queries`` / ``gradient_evaluations`` are the inputs evaluated / differentiated
    through the model divided by the batch size (see :meth:`QueryCounter.per_sample`).
    """

    name: ClassVar[str] = "torchattacks"
    library: ClassVar[str] = "torchattacks"

    def __init__(self, name: str, /, *, norm: str | None = None, targeted: bool = False,
                 seed: int = 0, **kwargs: Any) -> None:
        owner = type(self).__name__
        self._cls = _lookup(owner, "torchattacks", name, _torchattacks_classes())
        self.attack_name = name
        check_kwargs(f"torchattacks.{name}", self._cls, kwargs, supplied=("model", "seed"))
        self.kwargs = dict(kwargs)
        defaults = {n: p.default for n, p in inspect.signature(self._cls).parameters.items()}
        self._library_norm: str | None = None
        if "norm" in defaults:
            norm = _library_norm(owner, norm if norm is not None else defaults["norm"])
            self._library_norm = {"linf": "Linf", "l2": "L2"}[norm]
        elif norm is None:
            norm = "l2" if name.endswith("L2") or name in _TORCHATTACKS_L2 else (
                "none" if name in _TORCHATTACKS_NO_NORM else "linf")
        self._takes_seed = "seed" in defaults
        self._init_common(norm=norm, eps=kwargs.get("eps", defaults.get("eps")),
                          targeted=targeted, seed=seed)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        counter = QueryCounter(model)
        kwargs = dict(self.kwargs)
        if self._library_norm is not None:
            kwargs["norm"] = self._library_norm
        if self._takes_seed:
            kwargs["seed"] = self.seed
        with _library_sandbox(model, self.seed, repr(self)):
            attack = self._cls(counter, **kwargs)
            # torchattacks guesses the device from the first parameter; say it instead.
            attack.set_device(x.device)
            if target is not None:
                try:
                    attack.set_mode_targeted_by_label(quiet=True)
                except ValueError as err:  # "Targeted mode is not supported."
                    raise self._unsupported_mode() from err
            x_adv = attack(x, target if target is not None else y)
        return RunResult(x_adv.detach(), *counter.per_sample(x.shape[0]))


def _library_norm(owner: str, value: Any) -> str:
    """``"linf"`` / ``"l2"`` from our or torchattacks' spelling."""
    norm = str(value).lower()
    if norm not in ("linf", "l2"):
        raise invalid(owner, "norm", "one of 'linf', 'l2' (or 'Linf', 'L2')", value)
    return norm


class FoolboxAttack(_LibraryAttack):
    """Any foolbox 3 attack, by class name, behind our protocol.

    The model is wrapped as ``foolbox.PyTorchModel(model, bounds=(0, 1))`` and the
    attack is called with ``epsilons=eps``; its eps-clipped output is returned.

    Parameters
    ----------
    name
        A class (or alias) in ``foolbox.attacks``, e.g. ``"LinfPGD"``,
        ``"LinfDeepFoolAttack"``, ``"L2CarliniWagnerAttack"``, ``"GenAttack"``.
    eps
        Budget passed as ``epsilons``. Required by fixed-epsilon attacks (PGD, FGSM,
        GenAttack, ...); ``None`` lets minimisation attacks (DeepFool, CW) search for
        the smallest perturbation without a bound.
    norm
        The norm ``perturbation_norm`` is reported in; inferred from the attack's
        ``distance`` (L-inf, L2; L0 / L1 give ``"none"``). Attacks that need a
        ``distance`` argument get the foolbox distance of this norm.
    targeted
        Use ``TargetedMisclassification`` with the template's targets.
    seed
        Seeds torch and NumPy for the run.
    **kwargs
        The class's keyword arguments, checked against its signature; ``distance``
        may be given as a string (``"linf"``, ``"l2"``, ``"l1"``, ``"l0"``).

    Notes
    -----
    ``queries`` / ``gradient_evaluations`` are counted as for :class:`TorchattacksAttack`;
    they include foolbox's own success checks.
    """

    name: ClassVar[str] = "foolbox"
    library: ClassVar[str] = "foolbox"

    def __init__(self, name: str, /, *, eps: float | None = None, norm: str | None = None,
                 targeted: bool = False, seed: int = 0, **kwargs: Any) -> None:
        owner = type(self).__name__
        cls = _lookup(owner, "foolbox", name, _foolbox_classes())
        self.attack_name = name
        self.kwargs = dict(kwargs)
        check_kwargs(f"foolbox.{name}", cls, kwargs)
        fb = importlib.import_module("foolbox")
        library_kwargs = dict(kwargs)
        if "distance" in inspect.signature(cls).parameters:
            distance = kwargs.get("distance", norm)
            if distance is None:
                raise invalid(f"foolbox.{name}", "distance", "given (e.g. distance='l2') or "
                              "implied by norm=", "nothing", raw=True)
            if isinstance(distance, str):
                if distance not in _FOOLBOX_DISTANCES:
                    raise invalid(f"foolbox.{name}", "distance",
                                  "one of 'linf', 'l2', 'l1', 'l0'", distance)
                library_kwargs["distance"] = getattr(fb.distances, distance)
        self._attack = cls(**library_kwargs)
        if norm is None:
            p = getattr(getattr(self._attack, "distance", None), "p", None)
            norm = {math.inf: "linf", 2: "l2"}.get(p, "none") if p is not None else "none"
        if eps is None and isinstance(self._attack, fb.attacks.base.FixedEpsilonAttack):
            raise invalid(owner, "eps", f"a finite float >= 0: foolbox's {name} is a "
                          "fixed-epsilon attack", eps)
        self._init_common(norm=norm, eps=eps, targeted=targeted, seed=seed)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None) -> RunResult:
        fb = importlib.import_module("foolbox")
        counter = QueryCounter(model)
        fmodel = fb.PyTorchModel(counter, bounds=(0.0, 1.0), device=x.device)
        criterion = (fb.criteria.TargetedMisclassification(target) if target is not None
                     else fb.criteria.Misclassification(y))
        with _library_sandbox(model, self.seed, repr(self)):
            try:
                _, x_adv, _ = self._attack(fmodel, x, criterion, epsilons=self.eps)
            except ValueError as err:
                if str(err) != "unsupported criterion":
                    raise
                raise self._unsupported_mode() from err
        return RunResult(x_adv.detach(), *counter.per_sample(x.shape[0]))
