"""The two ways a gate can end badly: it is misconfigured, or a threshold failed.

Kept apart so a broken setup never reads as "the model got less robust": every module of
:mod:`robustness.gates` raises :class:`GateConfigError` for the first and only a judged
threshold raises :class:`GateFailure`.
"""

from __future__ import annotations

from robustness.core.validation import ParameterError


class GateConfigError(ParameterError):
    """A gate is misconfigured: bad keys, no model, an untrained model, mismatched data.

    Raised instead of a robustness verdict, so a broken setup never reads as "the model
    got less robust".
    """

    __module__ = "robustness.gates"  # the name tracebacks print, as users import it


class GateFailure(AssertionError):
    """A gate's threshold failed; the message is the verdict's full explanation."""

    __module__ = "robustness.gates"


__all__ = ["GateConfigError", "GateFailure"]
