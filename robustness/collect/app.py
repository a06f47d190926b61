"""The collection web app (Starlette): people try to fool the model; reviewers accept what
they submit; accepted examples train the next model version through the DADC loop.

HTTP contract (kept stable; ``docs/collect.md`` documents every field):

* ``GET /`` the page, ``GET /admin`` the review page, ``GET /static/...`` their JS and CSS;
* ``GET /api/model`` -> ``{"version", "classes", "input_shape"}``;
* ``POST /api/predict`` (multipart ``image``) -> ``{"prediction", "probabilities",
  "model_version", "input"}`` (``input``: the preprocessed image the model saw, rows of
  floats);
* ``POST /api/submissions`` (multipart ``image``, ``label``) -> 201 ``{"id", "fooled",
  "prediction", "model_version", "your_submissions", "your_fooled"}``;
* ``GET /api/stats`` -> per model version: submissions, fooled, fooling rate, accepted,
  verified model error rate (vMER), accepted per class, and each round's accuracies;
* admin (``Authorization: Bearer TOKEN``): ``GET /api/admin/submissions?status=``,
  ``GET /api/admin/submissions/{id}/image``, ``POST /api/admin/submissions/{id}``
  (JSON ``{"status", "label"?}``), ``POST /api/admin/rounds`` -> 202 ``{"round"}``,
  ``GET /api/admin/rounds/{n}``, ``GET /api/admin/export`` -> ``.npz``.

Every error is JSON ``{"error": "..."}`` with a 4xx status (5xx only for our own bugs).
"""

from __future__ import annotations

import hmac
import io
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import Engine, Integer, func, select, update
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from robustness.checkpoint import CheckpointMeta, load_checkpoint
from robustness.collect import db
from robustness.collect.images import MAX_BYTES, ImageError, decode, preprocess
from robustness.core.modes import predict

STATIC = Path(__file__).parent / "static"
MAX_BODY = MAX_BYTES + 64 * 1024  # one image plus the multipart envelope
COOKIE = "rh_client"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data: blob:; object-src 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class ApiError(Exception):
    """An error the client caused: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LimitsAndHeaders:
    """ASGI middleware: refuse bodies over ``max_body`` bytes (declared or streamed) with a
    JSON 413, and add the security headers to every response."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_big = JSONResponse({"error": f"the request body is larger than {self.max_body} "
                                         "bytes"}, status_code=413)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await too_big(scope, receive, send_with_headers)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise ApiError(413, f"the request body is larger than {self.max_body} bytes")
            return message

        await self.app(scope, limited, send_with_headers)


class Collector:
    """The app's state: database, current model, the round worker."""

    def __init__(self, model_path: str | Path, engine: Engine, *, admin_token: str,
                 work_dir: Path) -> None:
        self.engine = engine
        self.admin_token = admin_token
        self.work_dir = Path(work_dir)
        self.lock = threading.Lock()  # guards the model switch
        self.round_thread: threading.Thread | None = None
        with engine.begin() as conn:
            latest = conn.execute(select(db.models).order_by(db.models.c.version.desc())).first()
            if latest is None:
                conn.execute(db.models.insert().values(version=1, path=str(model_path),
                                                       created=time.time(), round=None))
                latest = conn.execute(select(db.models).where(db.models.c.version == 1)).first()
            # A round interrupted by a restart did not finish: say so.
            conn.execute(update(db.rounds).where(db.rounds.c.status == "running").values(
                status="failed", progress="interrupted: the server stopped during the round"))
        assert latest is not None
        self._load(int(latest.version), latest.path)

    def _load(self, version: int, path: str) -> None:
        model, meta = load_checkpoint(path)
        self._serve(version, path, model, meta)

    def _serve(self, version: int, path: str, model: torch.nn.Module,
               meta: CheckpointMeta) -> None:
        """Switch the served model (no I/O: a round loads the checkpoint before it commits,
        so a client that sees the round finished gets the new version right after)."""
        with self.lock:
            self.model, self.meta, self.version = model.eval(), meta, version
            self.model_path = path

    @property
    def classes(self) -> list[str]:
        meta: CheckpointMeta = self.meta
        return list(meta.classes) or [str(k) for k in range(meta.num_classes)]

    def infer(self, data: bytes) -> tuple[torch.Tensor, list[float], int, int]:
        """Upload -> (input tensor, probabilities, prediction, model version)."""
        try:
            grey = decode(data)
        except ImageError as e:
            raise ApiError(415 if "not a PNG" in str(e) else 400, str(e)) from None
        with self.lock:
            model, meta, version = self.model, self.meta, self.version
        c_, h, w = meta.input_shape
        x = preprocess(grey, (int(c_), int(h), int(w)))
        probs = predict(model, x[None]).softmax(1)[0]
        return x, [round(float(p), 6) for p in probs], int(probs.argmax()), version


async def _image_field(request: Request) -> tuple[bytes, str | None]:
    """The multipart upload ``image`` (bytes) and the text field ``label`` (or None)."""
    try:
        form = await request.form(max_files=1, max_fields=4)
    except ApiError:
        raise
    except Exception as e:  # malformed multipart of any kind
        raise ApiError(400, f"expected a multipart/form-data body ({type(e).__name__})") from None
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "the multipart field 'image' (a PNG or JPEG file) is missing")
        data = await upload.read(MAX_BYTES + 1)
        label = form.get("label")
        return data, label if isinstance(label, str) else None
    finally:
        await form.close()  # the spooled temporary files


def _client(request: Request) -> tuple[str, bool]:
    cid = request.cookies.get(COOKIE, "")
    if 16 <= len(cid) <= 64 and cid.replace("-", "").replace("_", "").isalnum():
        return cid, False
    return secrets.token_urlsafe(16), True


def _with_cookie(response: Response, cid: str, new: bool) -> Response:
    if new:
        response.set_cookie(COOKIE, cid, max_age=365 * 24 * 3600, httponly=True,
                            samesite="strict")
    return response


def create_app(model_path: str | Path, db_url: str, *, admin_token: str,
               work_dir: str | Path, round_runner: Callable[..., dict[str, Any]] | None = None
               ) -> Starlette:
    """The ASGI app. ``round_runner(collector, n, npz, out, progress)`` trains a round's
    model and returns ``{"model_path", ...}`` (default: one DADC round)."""
    from robustness.collect.rounds import run_round

    engine = db.open_database(db_url)
    c = Collector(model_path, engine, admin_token=admin_token, work_dir=Path(work_dir))
    runner = round_runner or run_round

    def admin(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), c.admin_token.encode()):
            raise ApiError(401, "admin endpoints need the header 'Authorization: Bearer TOKEN'")

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def admin_page(request: Request) -> Response:
        return FileResponse(STATIC / "admin.html", media_type="text/html")

    async def model_info(request: Request) -> Response:
        return JSONResponse({"version": c.version, "classes": c.classes,
                             "input_shape": list(c.meta.input_shape)})

    async def predict_route(request: Request) -> Response:
        data, _ = await _image_field(request)
        x, probs, pred, version = await run_in_threadpool(c.infer, data)
        return JSONResponse({"prediction": pred, "probabilities": probs,
                             "model_version": version,
                             "input": [[round(float(v), 4) for v in row] for row in x[0]]})

    async def submit(request: Request) -> Response:
        data, raw = await _image_field(request)
        if raw is None or not raw.strip().isdigit() or int(raw) >= len(c.classes):
            raise ApiError(422, f"the field 'label' must be a class index in [0, "
                                f"{len(c.classes) - 1}]")
        label = int(raw)
        x, probs, pred, version = await run_in_threadpool(c.infer, data)
        cid, new = _client(request)

        def store() -> tuple[int, int, int]:
            with c.engine.begin() as conn:  # one transaction: acknowledged = committed
                sid = conn.execute(db.submissions.insert().values(
                    created=time.time(), client_id=cid, label=label, status="pending",
                    model_version=version, prediction=pred, probabilities=json.dumps(probs),
                    fooled=pred != label, png=data,
                    tensor=x.numpy().astype(np.float32).tobytes())).inserted_primary_key
                sid = sid[0] if sid else None
                mine = conn.execute(select(func.count(), func.sum(
                    db.submissions.c.fooled.cast(Integer))).where(
                    db.submissions.c.client_id == cid)).one()
            assert sid is not None
            return int(sid), int(mine[0]), int(mine[1] or 0)

        sid, count, fooled = await run_in_threadpool(store)
        return _with_cookie(JSONResponse({"id": sid, "fooled": pred != label,
                                          "prediction": pred, "model_version": version,
                                          "your_submissions": count, "your_fooled": fooled},
                                         status_code=201), cid, new)

    def _stats() -> dict[str, Any]:
        s = db.submissions.c
        with c.engine.connect() as conn:
            rows = conn.execute(select(s.model_version, s.status, s.fooled,
                                       func.coalesce(s.reviewed_label, s.label), func.count())
                                .group_by(s.model_version, s.status, s.fooled,
                                          func.coalesce(s.reviewed_label, s.label))).all()
            versions = conn.execute(select(db.models).order_by(db.models.c.version)).all()
            done = conn.execute(select(db.rounds).order_by(db.rounds.c.n)).all()
        per: dict[int, dict[str, Any]] = {
            int(v.version): {"model_version": int(v.version), "trained_in_round": v.round,
                             "submissions": 0, "fooled": 0, "accepted": 0,
                             "accepted_fooled": 0, "rejected": 0, "pending": 0,
                             "accepted_per_class": {k: 0 for k in c.classes}}
            for v in versions}
        for version, status, fooled, label, n in rows:
            d = per[int(version)]
            d["submissions"] += n
            d["fooled"] += n if fooled else 0
            d[status] += n
            if status == "accepted":
                d["accepted_fooled"] += n if fooled else 0
                name = c.classes[label] if 0 <= label < len(c.classes) else str(label)
                d["accepted_per_class"][name] = d["accepted_per_class"].get(name, 0) + n
        for d in per.values():
            d["fooling_rate"] = d["fooled"] / d["submissions"] if d["submissions"] else None
            # Dynabench's verified model error rate: accepted fooling / accepted examples.
            d["verified_model_error_rate"] = (d["accepted_fooled"] / d["accepted"]
                                              if d["accepted"] else None)
        return {"model_version": c.version, "versions": list(per.values()),
                "rounds": [_round_doc(r) for r in done]}

    async def stats(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(_stats))

    async def list_submissions(request: Request) -> Response:
        admin(request)
        status = request.query_params.get("status")
        if status is not None and status not in db.STATUSES:
            raise ApiError(422, f"status must be one of {', '.join(db.STATUSES)}")
        s = db.submissions.c

        def fetch() -> list[dict[str, Any]]:
            q = select(s.id, s.created, s.client_id, s.label, s.reviewed_label, s.status,
                       s.model_version, s.prediction, s.probabilities, s.fooled,
                       s.used_in_round).order_by(s.id)
            if status is not None:
                q = q.where(s.status == status)
            with c.engine.connect() as conn:
                return [{**r._asdict(), "probabilities": json.loads(r.probabilities)}
                        for r in conn.execute(q)]

        return JSONResponse({"submissions": await run_in_threadpool(fetch)})

    def _submission_id(request: Request) -> int:
        raw = request.path_params["sid"]
        if not raw.isdigit():
            raise ApiError(404, "no such submission")
        return int(raw)

    async def submission_image(request: Request) -> Response:
        admin(request)
        sid = _submission_id(request)
        with c.engine.connect() as conn:
            row = conn.execute(select(db.submissions.c.png).where(
                db.submissions.c.id == sid)).first()
        if row is None:
            raise ApiError(404, f"no submission {sid}")
        kind = "image/png" if bytes(row.png).startswith(b"\x89PNG") else "image/jpeg"
        return Response(bytes(row.png), media_type=kind)

    async def review(request: Request) -> Response:
        admin(request)
        sid = _submission_id(request)
        try:
            body = await request.json()
        except ApiError:
            raise
        except Exception:
            raise ApiError(400, "expected a JSON body {\"status\": \"accepted\"|\"rejected\", "
                                "\"label\": optional class index}") from None
        if not isinstance(body, dict) or body.get("status") not in ("accepted", "rejected",
                                                                     "pending"):
            raise ApiError(422, "'status' must be 'accepted', 'rejected' or 'pending'")
        label = body.get("label")
        if label is not None and (not isinstance(label, int) or isinstance(label, bool)
                                  or not 0 <= label < len(c.classes)):
            raise ApiError(422, f"'label' must be a class index in [0, {len(c.classes) - 1}]")
        values: dict[str, Any] = {"status": body["status"]}
        if label is not None:
            values["reviewed_label"] = label
        with c.engine.begin() as conn:
            row = conn.execute(select(db.submissions.c.prediction).where(
                db.submissions.c.id == sid)).first()
            if row is None:
                raise ApiError(404, f"no submission {sid}")
            if label is not None:  # fooled against the corrected label
                values["fooled"] = row.prediction != label
            conn.execute(update(db.submissions).where(db.submissions.c.id == sid)
                         .values(**values))
        return JSONResponse({"id": sid, **values})

    async def start_round(request: Request) -> Response:
        admin(request)
        from robustness.collect.rounds import start_round as start

        n = await run_in_threadpool(start, c, runner)
        return JSONResponse({"round": n}, status_code=202)

    async def round_status(request: Request) -> Response:
        admin(request)
        raw = request.path_params["n"]
        with c.engine.connect() as conn:
            row = conn.execute(select(db.rounds).where(
                db.rounds.c.n == (int(raw) if raw.isdigit() else -1))).first()
        if row is None:
            raise ApiError(404, f"no round {raw}")
        return JSONResponse(_round_doc(row))

    async def export(request: Request) -> Response:
        admin(request)
        from robustness.collect.rounds import export_npz

        buf = io.BytesIO()
        n = await run_in_threadpool(export_npz, c, buf)
        return Response(buf.getvalue(), media_type="application/octet-stream", headers={
            "content-disposition": 'attachment; filename="accepted.npz"',
            "x-examples": str(n)})

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    routes = [
        Route("/", page), Route("/admin", admin_page),
        Route("/api/model", model_info), Route("/api/predict", predict_route, methods=["POST"]),
        Route("/api/submissions", submit, methods=["POST"]), Route("/api/stats", stats),
        Route("/api/admin/submissions", list_submissions),
        Route("/api/admin/submissions/{sid}/image", submission_image),
        Route("/api/admin/submissions/{sid}", review, methods=["POST"]),
        Route("/api/admin/rounds", start_round, methods=["POST"]),
        Route("/api/admin/rounds/{n}", round_status),
        Route("/api/admin/export", export),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: on_api_error, HTTPException: on_http_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.collector = c
    app.add_middleware(LimitsAndHeaders, max_body=MAX_BODY)
    return app


def _round_doc(row: Any) -> dict[str, Any]:
    return {"round": int(row.n), "status": row.status, "progress": row.progress,
            "started": row.started, "finished": row.finished,
            "from_version": row.from_version, "model_version": row.model_version,
            "result": json.loads(row.result) if row.result else None}


__all__ = ["ApiError", "Collector", "create_app"]
