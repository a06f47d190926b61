"""Sessions: tests (default), e2e (slow end-to-end checks), ray, lint, typecheck, demo, bench.

Each session installs what it needs into its own virtualenv. Install order matters:
torch first (`torch==2.13.0` is the CPU build on this project's machines; any other
spec may pull a multi-GB CUDA build), then the project, then torchattacks with
--no-deps, because torchattacks declares torchvision (whose PyPI build pins its own
torch and cannot import against the CPU one) and requests~=2.25.1 (a downgrade).
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

TORCH = "torch==2.13.0"
TORCHATTACKS = "torchattacks==3.5.1"
ART = "adversarial-robustness-toolbox==1.20.1"


def install(session: nox.Session, *extras: str) -> None:
    """Install torch, the project (with extras) and torchattacks, in that order."""
    session.install(TORCH)
    session.install(f".[{','.join(extras)}]" if extras else ".")
    session.install("--no-deps", TORCHATTACKS)


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite (fast; slow end-to-end checks excluded)."""
    install(session, "test")
    session.run("pytest", "-m", "not slow and not ray", "--durations=20", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """Slow end-to-end checks: full training runs and accuracy targets."""
    install(session, "test")
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def ray(session: nox.Session) -> None:
    """The Ray backend's tests, on a local Ray instance limited to this machine's CPUs."""
    install(session, "test", "ray")
    session.run("pytest", "-m", "ray", "--durations=10", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole tree, and the import-layer contract (pyproject.toml)."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    # grimp reads the source tree (first on sys.path), so the project need not be installed.
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": "."})


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the four packages."""
    install(session, "dev")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Train the reference ConvNet on mnist, attack it, print the table (`robustness demo`)."""
    install(session)
    # The demo replaces its previous run (all-or-nothing); other options pass through.
    session.run("robustness", "demo", "--overwrite", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed benchmarks, each printing ratios against its peers measured in the same run.

    ``benchmarks/bench_*.py``: attacks against torchattacks / foolbox / ART, a 1,000-image
    evaluate, ensembles against N x one member, t-SNE against scikit-learn, the collection
    app under load, evaluate()'s peak memory, Ray. Each ends with its targets, met or
    missed, and writes ``runs/bench/NAME.json``; ``benchmarks/summary.py`` then writes
    ``docs/benchmarks.md``. Pass names to run only those: ``nox -s bench -- attacks``.
    """
    install(session, "collect", "ray")  # bench_collect serves the web app; bench_ray
    session.install(ART)  # a peer for the attack benchmark; needs neither torch nor torchvision
    session.install("httpx2>=2")  # bench_collect's HTTP clients
    found = sorted(Path("benchmarks").glob("bench_*.py"))
    scripts = {s.stem.removeprefix("bench_"): s for s in found}
    chosen = list(session.posargs) or list(scripts)
    unknown = [name for name in chosen if name not in scripts]
    if unknown:
        session.error(f"no benchmark named {unknown}; have {list(scripts)}")
    for script in (scripts[name] for name in chosen):
        session.run("python", str(script))
    # docs/benchmarks.md: every record in runs/bench, each with its own date and machine.
    session.run("python", "benchmarks/summary.py")
