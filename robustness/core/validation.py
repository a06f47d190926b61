"""One message template for every bad-input error in the harness.

Every public entry point validates what it is given and, when something is
wrong, raises :class:`ParameterError` with a message of the form::

    The 'eps' parameter of PGD must be a finite float >= 0. Got -0.1 instead.

so a user always learns which parameter, what was expected and what was received.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # torch is imported where tensors are checked, so this module stays light
    import torch


class ParameterError(ValueError):
    """A user-supplied value does not meet its documented constraint."""


def _is_tensor(value: Any) -> bool:
    """``isinstance(value, torch.Tensor)`` without importing torch (a tensor implies it is)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def did_you_mean(word: str, candidates: Collection[str], *, n: int = 3) -> str:
    """``" (did you mean 'A', 'B'?)"`` from case-insensitive close matches, or ``""``.

    Prefixes count as close too: difflib misses truncations such as 'robust' for
    'robust_accuracy'.
    """
    by_lower = {c.lower(): c for c in candidates}
    low = word.lower()
    close = difflib.get_close_matches(low, list(by_lower), n=n, cutoff=0.6) or \
        [c for c in by_lower if low and (c.startswith(low) or low.startswith(c))][:1]
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(by_lower[c]) for c in close) + "?)"


def check_json_schema(data: Any, schema: dict[str, Any], *, what: str,
                      error: type[ValueError]) -> None:
    """Validate ``data`` against a JSON Schema; raise ``error`` naming the first bad field.

    The message reads ``"{what} at results/0/eps: '8/255' is not of type 'number'"``.
    """
    import jsonschema  # only documents that are read or written need it

    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise error(f"{what} at {where}: {e.message}") from None


def _short(value: Any) -> str:
    """Render a received value compactly (tensors by shape and dtype, not by content)."""
    if _is_tensor(value):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def invalid(owner: str, name: str, expected: str, got: Any, *, raw: bool = False) -> ParameterError:
    """Build the standard error for parameter ``name`` of ``owner``.

    Parameters
    ----------
    owner
        Who owns the parameter: a class or function name, e.g. ``"PGD"``.
    name
        The parameter's name as the user spells it.
    expected
        What was expected, phrased to follow "must be", e.g. ``"a float in [0, 1]"``.
    got
        The value received. Rendered with :func:`repr`, unless ``raw`` is true,
        in which case it is taken to be a ready description ("3 NaN values").
    """
    received = str(got) if raw else _short(got)
    return ParameterError(
        f"The '{name}' parameter of {owner} must be {expected}. Got {received} instead."
    )


# What a budget must be where a run measures robustness: eps 0 is no attack, and the
# "robust accuracy" it would report is the clean accuracy every report already has.
EPS_ZERO_REASON: Final = "eps 0 is no attack; clean accuracy is reported anyway"
EPS_EXPECTED: Final = f"a finite budget > 0 ({EPS_ZERO_REASON})"
SEED_MAX: Final = 2**32 - 1  # what every seeded library here (torch, numpy) accepts

# Upper bounds on counts a user types. Beyond them a run takes days or exhausts memory on
# any machine, so the value is a typo (steps=10**12), never a budget: refuse it up front.
MAX_ITERATIONS: Final = 1_000_000  # steps, generations, queries, epochs
MAX_RESTARTS: Final = 10_000
MAX_POPULATION: Final = 10_000  # candidates per image, each a full image in memory


def check_int(owner: str, name: str, value: Any, *, low: int | None = None,
              high: int | None = None) -> int:
    """Return ``value`` if it is an int within ``[low, high]``, else raise."""
    lo = "-inf" if low is None else str(low)
    hi = "inf)" if high is None else f"{high}]"
    expected = f"an int in the range [{lo}, {hi}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(owner, name, expected, value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise invalid(owner, name, expected, value)
    return value


def check_float(owner: str, name: str, value: Any, *, low: float | None = None,
                high: float | None = None, low_open: bool = False,
                high_open: bool = False, expected: str | None = None) -> float:
    """Return ``value`` as float if it is a finite real within the bounds, else raise.

    ``low_open`` / ``high_open`` make a bound exclusive, e.g. ``(0, 1]`` for fractions;
    ``expected`` replaces the generated description of the range in the message.
    """
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
    expected = expected or f"a finite float in the range {'(' if low_open else '['}{lo}, {hi}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(owner, name, expected, value)
    try:
        value = float(value)
    except OverflowError:  # an int beyond float range
        raise invalid(owner, name, expected, value) from None
    if not math.isfinite(value):
        raise invalid(owner, name, expected, value)
    if low is not None and (value < low or (low_open and value == low)):
        raise invalid(owner, name, expected, value)
    if high is not None and (value > high or (high_open and value == high)):
        raise invalid(owner, name, expected, value)
    return value


def check_bool(owner: str, name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (not merely truthy), else raise."""
    if not isinstance(value, bool):
        raise invalid(owner, name, "a bool", value)
    return value


def check_choice(owner: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise invalid(owner, name, f"one of {options}", value)
    return value


def check_images(owner: str, x: Any, name: str = "x") -> torch.Tensor:
    """Check a batch of images: a floating tensor (N, C, H, W) with finite values in [0, 1].

    Returns the tensor unchanged; never clips or converts user data.
    """
    import torch

    if not isinstance(x, torch.Tensor):
        raise invalid(owner, name, "a torch.Tensor of shape (N, C, H, W)", type(x).__name__,
                      raw=True)
    if x.dim() != 4:
        raise invalid(owner, name, "a 4-d tensor of shape (N, C, H, W)",
                      f"shape {tuple(x.shape)}", raw=True)
    if x.shape[0] == 0:
        raise invalid(owner, name, "a non-empty batch", "an empty batch (N=0)", raw=True)
    if not x.is_floating_point():
        raise invalid(owner, name, "a floating-point tensor with values in [0, 1]",
                      f"dtype {x.dtype}", raw=True)
    # min and max propagate NaN, so the happy path allocates nothing of x's size (a
    # NaN mask summed as int64 was 8 bytes per pixel: 63 MB for 10,000 MNIST images).
    lo, hi = float(x.min()), float(x.max())
    if math.isnan(lo) or math.isnan(hi):
        n_nan = int(torch.isnan(x).sum())
        raise invalid(owner, name, "free of NaN values", f"{n_nan} NaN values", raw=True)
    if lo < 0.0 or hi > 1.0:
        raise invalid(owner, name, "pixel values in [0, 1]",
                      f"values in [{lo:.4g}, {hi:.4g}]", raw=True)
    return x


def check_labels(owner: str, y: Any, n: int, num_classes: int | None = None,
                 name: str = "y") -> torch.Tensor:
    """Check integer class labels of shape (N,), each in ``[0, num_classes)``."""
    import torch

    if not isinstance(y, torch.Tensor):
        raise invalid(owner, name, "a torch.Tensor of int64 labels with shape (N,)",
                      type(y).__name__, raw=True)
    if y.dim() != 1 or y.shape[0] != n:
        raise invalid(owner, name, f"a 1-d tensor of {n} labels (one per input)",
                      f"shape {tuple(y.shape)}", raw=True)
    if y.dtype != torch.int64:
        raise invalid(owner, name, "an int64 tensor of class indices (convert with y.long())",
                      f"dtype {y.dtype}", raw=True)
    if num_classes is not None and n:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise invalid(owner, name, f"labels in [0, {num_classes - 1}]",
                          f"labels in [{lo}, {hi}]", raw=True)
    return y
