"""The architecture's promises: one-way layers, and a core that does not import torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("robustness", "attacks", "ensembles", "reports")
CORE = sorted(p.stem for p in (ROOT / "robustness" / "core").glob("*.py") if p.stem != "__init__")


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the contract in pyproject.toml, in a fresh interpreter."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, "
            "no_cache=True))")
    env = {**os.environ}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True)


def test_imports_respect_the_layers() -> None:
    run = _lint_imports(ROOT)  # the source tree itself comes first on the path
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_a_lazy_import_up_a_layer_breaks_the_contract(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg)
    io = src / "robustness" / "core" / "io.py"
    io.write_text(io.read_text() + "\n\ndef _up() -> None:\n    import attacks.registry\n")
    run = _lint_imports(tmp_path, pythonpath=src)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "robustness.core.io -> attacks.registry" in run.stdout


@pytest.mark.parametrize("module", CORE)
def test_core_does_not_import_torch(module: str) -> None:
    code = (f"import sys, robustness.core.{module}; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0, \
        f"robustness.core.{module} imports torch at import time"


@pytest.mark.parametrize("package", ["robustness", "attacks", "ensembles"])
def test_every_exported_name_resolves(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}.__all__ names that do not resolve: {missing}"


def test_importing_the_top_package_stays_light() -> None:
    code = "import sys, robustness; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
