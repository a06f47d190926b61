"""The collection web app over HTTP: every endpoint, and the inputs a reviewer would try.

A digits MLP is really trained and served; drawings are real PNGs; a round really runs
the DADC loop on the accepted examples and the server switches to the model it trained.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx2")

from PIL import Image, ImageDraw
from starlette.testclient import TestClient

from robustness.cli import main

TOKEN = "test-admin-token-0123456789"


def drawing(kind: int = 1, size: int = 280) -> bytes:
    """A white-on-black stroke drawing, PNG bytes (what the page's canvas sends)."""
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    if kind == 1:
        d.line([(140, 40), (140, 240)], fill=255, width=22)
    elif kind == 0:
        d.ellipse([(70, 40), (210, 240)], outline=255, width=22)
    else:
        d.line([(60, 60), (220, 60), (100, 240)], fill=255, width=22)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "model"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "5",
                 "--no-progress", "--out", str(out)]) == 0
    return out


def _app(checkpoint: Path, tmp: Path) -> Any:
    from robustness.collect.app import create_app

    return create_app(checkpoint, f"sqlite:///{tmp / 'collect.db'}", admin_token=TOKEN,
                      work_dir=tmp / "work")


@pytest.fixture
def client(checkpoint: Path, tmp_path: Path) -> TestClient:
    return TestClient(_app(checkpoint, tmp_path))


ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _submit(client: TestClient, png: bytes, label: int | str) -> Any:
    return client.post("/api/submissions", files={"image": ("d.png", png, "image/png")},
                       data={"label": str(label)})


def test_the_page_model_and_prediction(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="pad"' in page.text
    assert "<script>" not in page.text and "http" not in page.text.split("<body>")[1]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert client.get("/static/app.js").status_code == 200
    model = client.get("/api/model").json()
    assert model == {"version": 1, "classes": [str(k) for k in range(10)],
                     "input_shape": [1, 8, 8]}
    r = client.post("/api/predict", files={"image": ("d.png", drawing(1), "image/png")})
    assert r.status_code == 200
    body = r.json()
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
    assert body["prediction"] == int(np.argmax(body["probabilities"]))
    x = np.array(body["input"])
    assert x.shape == (8, 8) and 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    # The stroke is centred the way MNIST digits are.
    cols = x.sum(0)
    assert abs((cols * np.arange(8)).sum() / cols.sum() - 4) < 1.0


def test_submissions_are_stored_counted_and_reviewed(client: TestClient) -> None:
    first = _submit(client, drawing(1), 1)
    assert first.status_code == 201
    body = first.json()
    assert set(body) >= {"id", "fooled", "prediction", "model_version"}
    assert body["fooled"] == (body["prediction"] != 1) and body["your_submissions"] == 1
    assert "rh_client" in first.cookies or "rh_client" in client.cookies
    second = _submit(client, drawing(0), 7).json()  # surely wrong: a 0 labelled 7
    assert second["your_submissions"] == 2
    listed = client.get("/api/admin/submissions?status=pending", headers=ADMIN).json()
    assert [s["id"] for s in listed["submissions"]] == [body["id"], second["id"]]
    image = client.get(f"/api/admin/submissions/{body['id']}/image", headers=ADMIN)
    assert image.status_code == 200 and image.content == drawing(1)
    # Accept one with a corrected label, reject the other.
    r = client.post(f"/api/admin/submissions/{second['id']}", headers=ADMIN,
                    json={"status": "accepted", "label": 0})
    assert r.status_code == 200 and r.json()["fooled"] == (second["prediction"] != 0)
    assert client.post(f"/api/admin/submissions/{body['id']}", headers=ADMIN,
                       json={"status": "rejected"}).status_code == 200
    stats = client.get("/api/stats").json()
    v1 = stats["versions"][0]
    assert v1["submissions"] == 2 and v1["accepted"] == 1 and v1["rejected"] == 1
    assert v1["accepted_per_class"]["0"] == 1
    assert v1["verified_model_error_rate"] == (1.0 if second["prediction"] != 0 else 0.0)
    # The export is a dataset the harness reads: only accepted examples, reviewed labels.
    export = client.get("/api/admin/export", headers=ADMIN)
    assert export.status_code == 200
    from robustness.data import load_examples

    path = Path(client.app.state.collector.work_dir)  # type: ignore[attr-defined]
    path.mkdir(parents=True, exist_ok=True)
    (path / "e.npz").write_bytes(export.content)
    ex = load_examples(path / "e.npz")
    assert ex.x.shape == (1, 1, 8, 8) and ex.y.tolist() == [0] and len(set(ex.groups)) == 1


def test_jpeg_uploads_and_hostile_cookies(client: TestClient) -> None:
    img = Image.open(io.BytesIO(drawing(0))).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    r = client.post("/api/predict", files={"image": ("d.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["probabilities"]) == 10
    # A cookie that is not one of ours is replaced, never stored or echoed.
    for hostile in ("<script>alert(1)</script>", "x' OR '1'='1", "a" * 500):
        client.cookies.set("rh_client", hostile)
        r = _submit(client, drawing(1), 1)
        assert r.status_code == 201 and hostile not in r.text
    rows = client.get("/api/admin/submissions", headers=ADMIN).json()["submissions"]
    assert len(rows) == 3
    assert all(row["client_id"].replace("-", "").replace("_", "").isalnum() and
               16 <= len(row["client_id"]) <= 64 for row in rows)


BAD_UPLOADS = [
    (b"hello, not an image", 415, "not a PNG or JPEG"),
    (b"GIF89a" + b"\x00" * 100, 415, "not a PNG or JPEG"),
    (png_bomb(100_000, 100_000), 400, "refused before decoding"),  # a decompression bomb
    (png_bomb(5000, 5000), 400, "refused before decoding"),
    (png_bomb(4096, 4096)[:-20], 400, "cannot be decoded"),  # truncated
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, 400, "cannot be decoded"),
]


@pytest.mark.parametrize(("payload", "status", "message"), BAD_UPLOADS)
def test_bad_uploads_are_json_errors_and_the_server_keeps_serving(
        client: TestClient, payload: bytes, status: int, message: str) -> None:
    for path in ("/api/predict", "/api/submissions"):
        r = client.post(path, files={"image": ("x.png", payload, "image/png")},
                        data={"label": "1"})
        assert r.status_code == status, (path, r.text)
        assert message in r.json()["error"]
    assert client.get("/api/model").status_code == 200
    assert client.get("/api/admin/submissions", headers=ADMIN).json()["submissions"] == []


def test_a_huge_image_and_an_oversized_body_are_refused(client: TestClient) -> None:
    img = Image.new("L", (5000, 10), 0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    r = _submit(client, buf.getvalue(), 1)
    assert r.status_code == 400 and "at most 4096 pixels a side" in r.json()["error"]
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 1024 * 1024)
    r = _submit(client, big, 1)
    assert r.status_code == 413 and "larger than" in r.json()["error"]


@pytest.mark.parametrize("label", ["10", "-1", "abc", "1.5", "", "<script>alert(1)</script>",
                                   "1; DROP TABLE submissions; --", "1' OR '1'='1"])
def test_wrong_labels_are_422_and_never_echoed(client: TestClient, label: str) -> None:
    r = _submit(client, drawing(1), label)
    assert r.status_code == 422 and "class index in [0, 9]" in r.json()["error"]
    assert "<script>" not in r.text and "DROP" not in r.text
    assert r.headers["content-type"].startswith("application/json")
    assert client.get("/api/stats").json()["versions"][0]["submissions"] == 0


def test_missing_fields_and_malformed_bodies(client: TestClient) -> None:
    r = client.post("/api/submissions", data={"label": "1"})
    assert r.status_code == 400 and "'image'" in r.json()["error"]
    r = client.post("/api/predict", content=b"--x\r\nbroken", headers={
        "content-type": "multipart/form-data; boundary=x"})
    assert 400 <= r.status_code < 500 and "error" in r.json()
    r = client.post("/api/submissions", files={"image": ("d.png", drawing(1), "image/png")})
    assert r.status_code == 422


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0000000000"},
                                     {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_admin_endpoints_need_the_token(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in (("get", "/api/admin/submissions"), ("get", "/api/admin/export"),
                         ("post", "/api/admin/rounds"), ("get", "/api/admin/rounds/1"),
                         ("get", "/api/admin/submissions/1/image")):
        r = getattr(client, method)(path, headers=headers)
        assert r.status_code == 401, (path, r.status_code)
        assert "Authorization: Bearer" in r.json()["error"]
    r = client.post("/api/admin/submissions/1", headers=headers, json={"status": "accepted"})
    assert r.status_code == 401


def test_review_inputs_are_checked(client: TestClient) -> None:
    sid = _submit(client, drawing(1), 1).json()["id"]
    cases = [
        (b"{not json", 400, "expected a JSON body"),
        (json.dumps({"status": "approved"}).encode(), 422, "'status' must be"),
        (json.dumps({"status": "accepted", "label": 12}).encode(), 422, "'label' must be"),
        (json.dumps({"status": "accepted", "label": "1"}).encode(), 422, "'label' must be"),
        (json.dumps(["accepted"]).encode(), 422, "'status' must be"),
    ]
    for body, status, message in cases:
        r = client.post(f"/api/admin/submissions/{sid}", headers={
            **ADMIN, "content-type": "application/json"}, content=body)
        assert r.status_code == status and message in r.json()["error"], r.text
    for bad in ("999", "1%20OR%201=1", "abc"):
        r = client.post(f"/api/admin/submissions/{bad}", headers=ADMIN,
                        json={"status": "accepted"})
        assert r.status_code == 404
    r = client.get("/api/admin/submissions?status=pending'%20OR%20'1'='1", headers=ADMIN)
    assert r.status_code == 422
    listed = client.get("/api/admin/submissions", headers=ADMIN).json()["submissions"]
    assert [s["status"] for s in listed] == ["pending"]  # nothing changed by the attempts


def test_a_round_trains_the_next_model_version(client: TestClient) -> None:
    # Too few accepted examples: a clear 409.
    r = client.post("/api/admin/rounds", headers=ADMIN)
    assert r.status_code == 409 and "at least 2 accepted" in r.json()["error"]
    rng = np.random.default_rng(0)
    ids = []
    for i in range(24):  # 4 people, 6 drawings each, labelled by what they meant
        client.cookies.set("rh_client", f"person-{i % 4:02d}-abcdefghijkl")
        kind = i % 3
        img = np.asarray(Image.open(io.BytesIO(drawing(kind))), dtype=np.float32)
        jitter = np.roll(img, int(rng.integers(-20, 20)), axis=1)
        buf = io.BytesIO()
        Image.fromarray(jitter.astype(np.uint8)).save(buf, format="PNG")
        ids.append(_submit(client, buf.getvalue(), {0: 0, 1: 1, 2: 7}[kind]).json()["id"])
    for sid in ids:
        client.post(f"/api/admin/submissions/{sid}", headers=ADMIN, json={"status": "accepted"})
    r = client.post("/api/admin/rounds", headers=ADMIN)
    assert r.status_code == 202
    n = r.json()["round"]
    assert client.post("/api/admin/rounds", headers=ADMIN).status_code in (409, 202)
    # Predictions are served while the round trains.
    assert client.post("/api/predict", files={
        "image": ("d.png", drawing(1), "image/png")}).status_code == 200
    deadline = time.time() + 240
    status: dict[str, Any] = {}
    while time.time() < deadline:
        status = client.get(f"/api/admin/rounds/{n}", headers=ADMIN).json()
        if status["status"] != "running":
            break
        time.sleep(0.5)
    assert status["status"] == "finished", status
    assert status["model_version"] == 2 and status["result"]["examples"] == 24
    assert 0 <= status["result"]["accuracy_standard_test"] <= 1
    assert client.get("/api/model").json()["version"] == 2
    later = _submit(client, drawing(1), 1).json()
    assert later["model_version"] == 2  # recorded on every later submission
    stats = client.get("/api/stats").json()
    assert [v["model_version"] for v in stats["versions"]] == [1, 2]
    assert stats["rounds"][0]["status"] == "finished"
    # The examples of a round are not used again by the next one.
    r = client.post("/api/admin/rounds", headers=ADMIN)
    assert r.status_code == 409 and "not used before" in r.json()["error"]


def test_a_database_of_another_schema_version_is_refused(checkpoint: Path,
                                                         tmp_path: Path) -> None:
    from sqlalchemy import update

    from robustness.collect import db

    app = _app(checkpoint, tmp_path)
    engine = app.state.collector.engine
    with engine.begin() as conn:
        conn.execute(update(db.meta).where(db.meta.c.key == "schema_version").values(value="99"))
    with pytest.raises(db.DatabaseVersionError, match="schema version 99"):
        _app(checkpoint, tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_acknowledged_submissions_survive_sigkill(checkpoint: Path, tmp_path: Path) -> None:
    import httpx2 as httpx

    port = _free_port()
    token = tmp_path / "token"
    cmd = [sys.executable, "-m", "robustness.cli", "collect", "--model", str(checkpoint),
           "--db", f"sqlite:///{tmp_path / 'c.db'}", "--port", str(port),
           "--admin-token-file", str(token)]

    log = tmp_path / "server.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/model", timeout=1)
                return proc
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
        raise AssertionError(log.read_text())

    proc = start()
    assert oct(token.stat().st_mode & 0o777) == "0o600"
    acked = []
    for i in range(10):
        r = httpx.post(f"http://127.0.0.1:{port}/api/submissions",
                       files={"image": ("d.png", drawing(i % 3), "image/png")},
                       data={"label": str(i % 10)})
        assert r.status_code == 201
        acked.append(r.json()["id"])
    proc.kill()  # SIGKILL, right after the last 2xx
    proc.wait()
    proc = start()
    try:
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
        stored = httpx.get(f"http://127.0.0.1:{port}/api/admin/submissions",
                           headers=headers).json()["submissions"]
        assert [s["id"] for s in stored] == acked
    finally:
        proc.kill()
        proc.wait()


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed "
                    "(apt-get install chromium)")
def test_a_person_and_a_reviewer_in_a_real_browser(checkpoint: Path, tmp_path: Path) -> None:
    """Draw, see a prediction, submit; sign in as admin, accept, start a round, see the new
    model version in the stats. Screenshots go to tmp_path/screenshots."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    import httpx2 as httpx

    expect = playwright.expect
    # A loaded CI machine answers slowly: wait generously for what the page shows.
    expect.set_options(timeout=60_000)
    port = _free_port()
    token_file = tmp_path / "token"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "robustness.cli", "collect", "--model", str(checkpoint),
             "--db", f"sqlite:///{tmp_path / 'c.db'}", "--port", str(port),
             "--admin-token-file", str(token_file)], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base}/api/model", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking"])
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error"
                        else None)
                outside: list[str] = []
                page.on("request", lambda r: None if r.url.startswith((base, "blob:", "data:"))
                        else outside.append(r.url))
                page.goto(base + "/")
                page.wait_for_selector("#label option", state="attached")
                box = page.locator("#pad").bounding_box()
                assert box is not None
                for i in range(3):  # three drawings of a "1", each submitted as 1
                    page.click("#clear")
                    x = box["x"] + box["width"] * (0.4 + 0.1 * i)
                    page.mouse.move(x, box["y"] + box["height"] * 0.15)
                    page.mouse.down()
                    for k in range(1, 11):
                        page.mouse.move(x, box["y"] + box["height"] * (0.15 + 0.07 * k))
                    page.mouse.up()
                    expect(page.locator("#prediction")).to_contain_text("The model says")
                    page.select_option("#label", "1")
                    page.click("#submit")
                    expect(page.locator("#mine")).to_contain_text(
                        f"Your submissions: {i + 1}")
                result = page.locator("#result").inner_text()
                assert "fooled the model" in result or "got it right" in result
                assert page.locator("#bars li").count() == 10
                page.screenshot(path=str(shots / "page.png"), full_page=True)
                # The reviewer.
                page.goto(base + "/admin")
                page.fill("#token", token_file.read_text().strip())
                page.click("#signin")
                page.wait_for_selector("#submissions tbody tr")
                assert page.locator("#submissions tbody tr").count() == 3
                for _ in range(3):
                    page.locator("#submissions tbody tr button.accepted").first.click()
                    expect(page.locator("#status")).to_contain_text("accepted")
                expect(page.locator("#submissions tbody tr")).to_have_count(0)
                page.click("#start-round")
                expect(page.locator("#round-status")).to_contain_text(
                    "new model version 2", timeout=240_000)
                expect(page.locator("#stats tbody tr")).to_have_count(2)
                stats = page.locator("#stats").inner_text()
                page.screenshot(path=str(shots / "admin.png"), full_page=True)
                page.goto(base + "/")
                expect(page.locator("#version")).to_have_text("2")
            finally:
                browser.close()
    finally:
        proc.kill()
        proc.wait()
    assert not errors, errors
    assert not outside, outside  # nothing from a CDN or anywhere else
    assert "100.0%" in stats or "0.0%" in stats  # the verified model error rate is shown
    assert (shots / "page.png").stat().st_size > 0 and (shots / "admin.png").stat().st_size > 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", "/nonexistent/model"], "No checkpoint at /nonexistent/model"),
    (["--db", "nonsense://x"], "The '--db' parameter of robustness collect must be an "
                               "SQLAlchemy URL"),
])
def test_bad_server_options_are_one_line_and_create_nothing(
        checkpoint: Path, tmp_path: Path, extra: list[str], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["collect", "--model", str(checkpoint), "--admin-token-file",
            str(tmp_path / "t" / "token"), "--db", f"sqlite:///{tmp_path / 'db' / 'c.db'}"]
    for i in range(0, len(extra), 2):
        args[args.index(extra[i]) + 1] = extra[i + 1]
    with pytest.raises(SystemExit) as info:
        sys.exit(main(args))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "t").exists()  # no token written for a server that never ran
