"""``robustness collect``: serve the collection web app (uvicorn, 127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import Any

from robustness.core.argtypes import positive_int

DEFAULT_DB = "sqlite:///runs/collect/collect.db"


def add_collect_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness collect`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "collect", help="serve a web page where people try to fool the model",
        description="Serve the collection app: people draw or upload images and see whether "
                    "the model gets them wrong; reviewers (admin token) accept, reject or "
                    "relabel submissions, start DADC rounds from the accepted ones and "
                    "export them as .npz. Needs the collect extra: pip install "
                    "'robustness-harness[collect]'.")
    p.add_argument("--model", required=True, type=Path,
                   help="the checkpoint (or run directory) to serve as model version 1")
    p.add_argument("--db", default=DEFAULT_DB,
                   help="SQLAlchemy database URL (default: %(default)s; SQLite in WAL mode)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                                                        "%(default)s)")
    p.add_argument("--port", type=positive_int, default=8000,
                   help="port (default: %(default)s)")
    p.add_argument("--admin-token-file", type=Path, default=None,
                   help="read the admin token from this file (created with mode 0600 and a "
                        "new token if missing); default: a new token, printed once")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where rounds write their runs and models (default: beside the "
                        "SQLite file, else runs/collect)")
    return p


def _token(path: Path | None) -> tuple[str, bool]:
    """(token, whether it is new: then it is written to ``path`` by :func:`_save_token`)."""
    from robustness.core.validation import invalid

    if path is not None and path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if len(token) < 16:
            raise invalid("robustness collect", "--admin-token-file", "a file holding a "
                          "token of at least 16 characters", f"{path} ({len(token)} characters)",
                          raw=True)
        return token, False
    return secrets.token_urlsafe(24), True


def _save_token(path: Path, token: str) -> None:
    """Create ``path`` with mode 0600 (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")


def cmd_collect(args: argparse.Namespace) -> int:
    """``robustness collect``: runs until interrupted."""
    from robustness.core.validation import invalid

    try:
        import uvicorn

        from robustness.collect.app import create_app
        from robustness.collect.db import DatabaseVersionError
    except ImportError as e:
        raise invalid("robustness collect", "the collect extra", "installed: pip install "
                      "'robustness-harness[collect]'", f"missing {e.name}", raw=True) from None
    from sqlalchemy.exc import SQLAlchemyError

    from robustness.checkpoint import load_checkpoint

    load_checkpoint(args.model)  # a bad --model fails before anything is created
    url = str(args.db)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        default_work = Path(url[len("sqlite:///"):]).parent / "work"
    else:
        default_work = Path("runs/collect/work")
    work = args.work_dir or default_work
    token, new = _token(args.admin_token_file)
    try:
        app = create_app(args.model, url, admin_token=token, work_dir=work)
    except DatabaseVersionError as e:
        raise invalid("robustness collect", "--db", "a new database or one this version "
                      "created", str(e), raw=True) from None
    except SQLAlchemyError as e:
        raise invalid("robustness collect", "--db", "an SQLAlchemy URL of a reachable "
                      "database, e.g. sqlite:///runs/collect/collect.db",
                      f"{url} ({type(e).__name__}: {str(e).splitlines()[0]})", raw=True) from None
    if new and args.admin_token_file is not None:
        _save_token(args.admin_token_file, token)
    print(f"Serving {args.model} at http://{args.host}:{args.port}/ (review: "
          f"http://{args.host}:{args.port}/admin); database {url}", flush=True)
    if new and args.admin_token_file is None:
        print(f"Admin token (shown once): {token}", flush=True)
    elif new:
        print(f"Admin token written to {args.admin_token_file} (mode 0600)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
