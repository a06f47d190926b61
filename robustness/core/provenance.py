"""What a result was produced with: library versions and the platform."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

_DISTRIBUTIONS = ("robustness-harness", "torch", "numpy", "torchattacks", "foolbox")


def library_versions() -> dict[str, str]:
    """Versions that matter for reproducing a result (installed distributions only)."""
    out = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def run_environment() -> dict[str, str]:
    """:func:`library_versions` plus the platform string, for report provenance."""
    return {**library_versions(), "platform": platform.platform()}
