"""Writing results into a run directory: atomically, so nothing half-written is left behind.

Files are written to a temporary name and renamed (:func:`atomic_write`); a whole run is
written into a temporary sibling directory and renamed into place when the command
succeeds (:func:`run_directory`), so a run directory is complete or absent.

torch and safetensors are imported only by :func:`write_tensors`."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.core.validation import ParameterError

if TYPE_CHECKING:
    import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Write through ``write(tmp_path)`` into a temp file beside ``path``, then rename.

    The file gets the mode the user's umask gives new files (``mkstemp`` alone would
    make it private, unlike every other file a command writes).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OutputError(ParameterError):
    """An output path cannot be used: it names a file, is not writable, already holds a
    run (without ``--overwrite``), or another command is writing it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


RUN_MARKER = ".robustness-run"  # written into every run directory: --overwrite may replace it
# What the commands write: a directory holding only these (written before RUN_MARKER
# existed) is a run too. Anything else in it is the user's and is never deleted.
RUN_FILES = frozenset({
    "report.json", "report.md", "report.html", "samples.safetensors", "results.json",
    "results.md", "model.safetensors", "examples.png", "train.json", "adversarial.safetensors",
    "summary.json", "grid.png", "fooling.json", "fooling.png", "fooling.safetensors",
    "tsne.json", "tsne.png", "tsne.safetensors", "members", "ensemble.json", "baseline",
    "adversarially_trained", "baseline_adversarials.safetensors"})


def is_run_directory(path: Path) -> bool:
    """``path`` holds a run this harness wrote (and nothing else of the user's)."""
    return (path / RUN_MARKER).exists() or all(p.name in RUN_FILES for p in path.iterdir())


def check_output_dir(out: Path, *, option: str = "--out", overwrite: bool = False) -> None:
    """Refuse ``out`` before any work if a run cannot be written there (see
    :func:`run_directory`)."""
    if str(out).strip() in ("", "."):
        raise OutputError(f"The '{option}' parameter must name a run directory, not the current "
                          f"directory. Got {str(out)!r} instead.")
    if out.is_symlink() and not out.exists():
        raise OutputError(f"The '{option}' parameter must be a directory to write the run "
                          f"into. Got {out}, a symbolic link to nothing, instead.")
    if out.exists() and not out.is_dir():
        raise OutputError(f"The '{option}' parameter must be a directory to write the run "
                          f"into. Got {out}, which is an existing file, instead.")
    if out.is_dir() and any(out.iterdir()):
        if not is_run_directory(out):
            # Never delete what this harness did not write, --overwrite or not.
            raise OutputError(f"The '{option}' parameter must be a new or empty directory, or "
                              f"an earlier run of this harness (with --overwrite). Got {out}, "
                              f"which holds other files; choose another directory.")
        if not overwrite:
            raise OutputError(f"The '{option}' parameter must be a new or empty directory; "
                              f"{out} already holds a run. Pass --overwrite to replace it, or "
                              f"choose another directory.")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"The '{option}' parameter must be a writable location. Got {out}, "
                          f"which is not writable.")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"The '{option}' parameter must be a path whose parents are "
                          f"directories. Got {out}, below the file {ancestor}, instead.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"The '{option}' parameter must be a writable location. Got {out}; "
                          f"{ancestor} is not writable.")


def check_output_file(path: Path, *, option: str) -> None:
    """Refuse, before any work, an output file path that cannot be written."""
    if path.is_dir():
        raise OutputError(f"The '{option}' parameter must be a file path. Got {path}, which is "
                          f"a directory, instead.")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"The '{option}' parameter must be a path whose parents are "
                          f"directories. Got {path}, below the file {ancestor}, instead.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"The '{option}' parameter must be a writable location. Got {path}; "
                          f"{ancestor} is not writable.")


@contextlib.contextmanager
def run_directory(out: str | os.PathLike[str], *, option: str = "--out",
                  overwrite: bool = False) -> Iterator[Path]:
    """Write a run all-or-nothing: yield a temporary sibling of ``out`` to write into,
    renamed to ``out`` when the block succeeds and removed when it fails (any exception,
    KeyboardInterrupt included).

    Parameters
    ----------
    out
        The run directory. It must not exist, be empty, or (with ``overwrite``) hold an
        earlier run, which is replaced only once the new run is complete.
    option
        How the user named it, for messages (``"--out"``).
    overwrite
        Replace an existing run.

    Raises
    ------
    OutputError
        Before any work: ``out`` is a file, lies below a file, is not writable, holds a
        run and ``overwrite`` is False, or another command holds its lock
        (``.NAME.lock`` beside it).
    """
    out = Path(out)
    check_output_dir(out, option=option, overwrite=overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"The '{option}' parameter must be a writable location. Got {out}: "
                          f"{e.strerror}.") from None
    lock = out.parent / f".{out.name}.lock"
    _acquire(lock, out, option)
    tmp: Path | None = None
    try:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
            os.chmod(tmp, 0o777 & ~_umask())
        except OSError as e:
            raise OutputError(f"The '{option}' parameter must be a writable location. Got "
                              f"{out}: {e.strerror}.") from None
        yield tmp
        (tmp / RUN_MARKER).write_text("a run directory of robustness-harness; --overwrite "
                                      "may replace it\n", encoding="utf-8")
        _replace(tmp, out, option)
        tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            lock.unlink()


def _acquire(lock: Path, out: Path, option: str) -> None:
    """Create the lock file, or explain who holds it (a dead holder's lock is taken over)."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                raise OutputError(f"The '{option}' parameter names {out}, which another "
                                  f"robustness command (pid {pid}) is writing now (lock file "
                                  f"{lock}). Wait for it, or choose another directory.") from None
            with contextlib.suppress(OSError):
                lock.unlink()  # stale: its process is gone
            for left in lock.parent.glob(f".{out.name}.tmp-*"):  # what the dead run left
                shutil.rmtree(left, ignore_errors=True)
            continue
        except OSError as e:
            raise OutputError(f"The '{option}' parameter must be a writable location. Got "
                              f"{out}: {e.strerror}.") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return
    raise OutputError(f"The lock file {lock} of {option} {out} could not be taken; remove it if "
                      f"no robustness command is running.")


def _replace(tmp: Path, out: Path, option: str) -> None:
    """Move the finished run into place; an earlier run is removed only after that."""
    old: Path | None = None
    try:
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except OSError as e:
        if old is not None and (old / out.name).exists() and not out.exists():
            os.replace(old / out.name, out)  # put the earlier run back
        raise OutputError(f"The run could not be moved into '{option}' {out}: "
                          f"{e.strerror or errno.errorcode.get(e.errno or 0, e)}.") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def read_json(path: str | os.PathLike[str], *, default_name: str) -> Any:
    """Read a JSON document: ``path`` itself, or ``path/default_name`` for a run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    return json.loads(p.read_text(encoding="utf-8"))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON (numbers stay numbers; NaN is refused)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")

    return atomic_write(Path(path), write)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    return atomic_write(Path(path), write)


def write_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as a safetensors file (loadable without unpickling)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(Path(path), lambda tmp: save_file(clean, tmp, metadata=metadata))
