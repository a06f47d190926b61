"""argparse ``type=`` converters shared by every ``robustness`` command and the pytest plugin.

Each raises :class:`argparse.ArgumentTypeError`, which argparse turns into a one-line
usage error naming the option (exit status 2). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from robustness.core.validation import EPS_ZERO_REASON, SEED_MAX


def _error(expected: str, got: str | float) -> argparse.ArgumentTypeError:
    """The one message shape: text that did not parse is quoted, a parsed value is not."""
    return argparse.ArgumentTypeError(f"expected {expected}; got {got!r}")


def number(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise _error("a number", text) from None
    if not math.isfinite(value):
        raise _error("a finite number", text)
    return value


def non_negative_number(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = number(text)
    if value < 0:
        raise _error("a finite number >= 0", value)
    return value


def _int(text: str, low: int, expected: str, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _error(expected, text) from None
    if value < low or (high is not None and value > high):
        raise _error(expected, value)
    return value




def seed(text: str) -> int:
    """argparse type: a seed, an integer in [0, 2**32 - 1]."""
    return _int(text, 0, f"an integer in [0, {SEED_MAX}]", SEED_MAX)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int(text, 1, "a positive integer")


def count_or_all(text: str) -> int | None:
    """argparse type: an integer >= 1, or ``all`` (None: every item)."""
    if text.strip().lower() == "all":
        return None
    return _int(text, 1, "a positive integer or 'all'")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int(text, 0, "an integer >= 0")


def _number_in(text: str, *, low_open: bool) -> float:
    """A float in [0, 1], or in (0, 1] when ``low_open``."""
    expected = f"a number in {'(' if low_open else '['}0, 1]"
    try:
        value = float(text)
    except ValueError:
        raise _error(expected, text) from None
    if not (0.0 < value if low_open else 0.0 <= value) or not value <= 1.0:
        raise _error(expected, value)
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    return _number_in(text, low_open=False)


def positive_fraction(text: str) -> float:
    """argparse type: a number in (0, 1], e.g. an L-inf budget on [0, 1] images."""
    return _number_in(text, low_open=True)


def _items(text: str) -> list[str]:
    """The comma-separated items; an empty one (``0.1,,0.2``) is an error, never dropped."""
    items = [v.strip() for v in text.split(",")]
    if any(not v for v in items):
        raise ValueError(f"empty item in {text!r}")
    return items


def number_list(text: str) -> list[float]:
    """argparse type: comma-separated finite numbers, e.g. ``0.1,0.2,0.3``."""
    expected = "comma-separated numbers such as 0.1,0.2,0.3"
    try:
        values = [float(v) for v in _items(text)]
    except ValueError:
        raise _error(expected, text) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise _error(expected, text)
    return values


def budget(text: str) -> float:
    """argparse type: a perturbation budget, a finite number > 0 (eps 0 is no attack)."""
    value = number(text)
    if not value > 0.0:  # also 1e-400, which parses to 0.0
        raise _error(f"a budget > 0 ({EPS_ZERO_REASON})", text)
    return value


def budget_list(text: str) -> list[float]:
    """argparse type: comma-separated budgets > 0, e.g. ``0.1,0.2,0.3``."""
    values = number_list(text)
    if not all(v > 0.0 for v in values):
        raise _error(f"comma-separated budgets > 0 such as 0.1,0.2,0.3 ({EPS_ZERO_REASON})",
                     text)
    return values


def int_list(text: str, *, low: int | None = None,
             expected: str = "comma-separated integers such as 0,3,7") -> list[int]:
    """argparse type: comma-separated integers (each >= ``low`` when given)."""
    try:
        values = [int(v) for v in _items(text)]
    except ValueError:
        raise _error(expected, text) from None
    if not values or (low is not None and min(values) < low):
        raise _error(expected, text)
    return values


def positive_int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1, e.g. ensemble sizes ``5,25,50``."""
    return int_list(text, low=1, expected="comma-separated integers >= 1 such as 5,25,50")


def choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """argparse type factory: a comma-separated, non-empty subset of ``choices``."""

    def convert(text: str) -> list[str]:
        try:
            values = _items(text)
        except ValueError:
            raise _error(f"a comma-separated subset of {','.join(choices)}", text) from None
        if not values or any(v not in choices for v in values):
            raise _error(f"a comma-separated subset of {','.join(choices)}", text)
        return values

    return convert
