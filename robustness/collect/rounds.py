"""Rounds of the collection app: accepted examples -> a DADC round -> the next model version.

A round exports the accepted examples not used before as an ``.npz`` (``x``, ``y``, the
submitter as ``group``, ``classes``) and runs one round of :func:`robustness.dadc.run_dadc`
with it as a ``file:`` source, starting from the current model: the submitters are split
into a training part and a held-out human test set, the examples of the training part that
fool the current model are trained on, and a control arm gets as many standard examples.
It runs in a background thread (predictions keep being served); when it finishes the app
switches to the DADC arm's model, and every later submission records the new version.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update

from robustness.checkpoint import load_checkpoint
from robustness.collect import db

if TYPE_CHECKING:
    from robustness.collect.app import Collector


def accepted_examples(c: Collector, *, unused_only: bool = False) -> dict[str, Any]:
    """Accepted submissions as arrays: ``x`` (N, C, H, W) float32, ``y``, ``group``, ``id``."""
    s = db.submissions.c
    q = select(s.id, s.tensor, s.label, s.reviewed_label, s.client_id).where(
        s.status == "accepted").order_by(s.id)
    if unused_only:
        q = q.where(s.used_in_round.is_(None))
    with c.engine.connect() as conn:
        rows = conn.execute(q).all()
    shape = tuple(c.meta.input_shape)
    x = np.stack([np.frombuffer(r.tensor, dtype=np.float32).reshape(shape) for r in rows]) \
        if rows else np.zeros((0, *shape), dtype=np.float32)
    y = np.array([r.reviewed_label if r.reviewed_label is not None else r.label
                  for r in rows], dtype=np.int64)
    return {"x": x, "y": y, "group": np.array([r.client_id for r in rows], dtype=str),
            "id": [int(r.id) for r in rows]}


def export_npz(c: Collector, file: IO[bytes] | str | Path, *, unused_only: bool = False) -> int:
    """Write the accepted examples as an ``.npz`` dataset (``robustness dadc --source
    file:``, ``robustness evaluate --data``, ``robustness train --data``); return N."""
    ex = accepted_examples(c, unused_only=unused_only)
    np.savez(file, x=ex["x"], y=ex["y"], group=ex["group"], classes=np.array(c.classes))
    return len(ex["y"])


def run_round(c: Collector, n: int, npz: Path, out: Path,
              progress: Callable[[str], None]) -> dict[str, Any]:
    """One DADC round from ``npz``, starting from the current model; returns the new model
    path and the round's figures."""
    from robustness.dadc import DadcConfig, run_dadc
    from robustness.data import load_examples

    examples = load_examples(npz)
    from robustness.dadc.selection import group_split

    train_idx, held = group_split(examples.groups, fraction=0.3, seed=n)
    if not train_idx:
        raise ValueError("no accepted examples outside the held-out submitters")
    from robustness.data import load_dataset

    meta = c.meta
    data = load_dataset(meta.dataset, seed=meta.seed or 0)
    pool = len(data.x_train) - max(1, len(data.x_train) // 4)
    cfg = DadcConfig(data=meta.dataset, start_model=c.model_path, source=f"file:{npz}",
                     rounds=1, per_round=min(len(train_idx), pool), n_eval=None,
                     heldout_fraction=0.3, seed=n, checks=False)
    result = run_dadc(cfg, out, echo=progress)
    final = {(r["arm"], r["set"]): r["accuracy"] for r in result["table"] if r["round"] == 1}
    return {"model_path": str(out / "rounds" / "r1" / "dadc" / "model.safetensors"),
            "examples": len(examples.y), "heldout_examples": len(held),
            "trained": result["rounds"][0]["trained"],
            "accuracy_standard_test": final.get(("dadc", "clean")),
            "accuracy_human_test": final.get(("dadc", "heldout")),
            "control_accuracy_standard_test": final.get(("control", "clean")),
            "control_accuracy_human_test": final.get(("control", "heldout")),
            "lines": result["lines"]}


def start_round(c: Collector, runner: Callable[..., dict[str, Any]]) -> int:
    """Record a new round and start it in a background thread; return its number."""
    from robustness.collect.app import ApiError

    with c.lock:
        if c.round_thread is not None and c.round_thread.is_alive():
            raise ApiError(409, "a round is already running")
        ex = accepted_examples(c, unused_only=True)
        if len(ex["y"]) < 2:
            raise ApiError(409, "a round needs at least 2 accepted examples not used before; "
                                f"there are {len(ex['y'])}")
        with c.engine.begin() as conn:
            last = conn.execute(select(db.rounds.c.n).order_by(db.rounds.c.n.desc())).first()
            n = (int(last.n) if last else 0) + 1
            conn.execute(db.rounds.insert().values(n=n, status="running", progress="starting",
                                                   started=time.time(),
                                                   from_version=c.version))
        thread = threading.Thread(target=_work, args=(c, n, ex["id"], runner), daemon=True,
                                  name=f"collect-round-{n}")
        c.round_thread = thread
    thread.start()
    return n


def _work(c: Collector, n: int, ids: list[int], runner: Callable[..., dict[str, Any]]) -> None:
    def progress(line: str) -> None:
        with c.engine.begin() as conn:
            conn.execute(update(db.rounds).where(db.rounds.c.n == n).values(progress=line))

    folder = c.work_dir / f"round-{n}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        npz = folder / "accepted.npz"
        export_npz(c, npz, unused_only=True)
        result = runner(c, n, npz, folder / "dadc", progress)
        # Load before committing: the round reads "finished" only once its model is ready.
        model, meta = load_checkpoint(result["model_path"])
        with c.engine.begin() as conn:
            last = conn.execute(select(db.models.c.version).order_by(
                db.models.c.version.desc())).first()
            version = (int(last.version) if last else 0) + 1
            conn.execute(db.models.insert().values(version=version, path=result["model_path"],
                                                   created=time.time(), round=n))
            conn.execute(update(db.submissions).where(db.submissions.c.id.in_(ids))
                         .values(used_in_round=n))
            conn.execute(update(db.rounds).where(db.rounds.c.n == n).values(
                status="finished", finished=time.time(), model_version=version,
                progress="finished", result=json.dumps(result)))
        c._serve(version, result["model_path"], model, meta)
    except Exception as e:  # the server keeps serving; the round says what went wrong
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        with c.engine.begin() as conn:
            conn.execute(update(db.rounds).where(db.rounds.c.n == n).values(
                status="failed", finished=time.time(), progress=f"failed: {detail}"))


__all__ = ["accepted_examples", "export_npz", "run_round", "start_round"]
