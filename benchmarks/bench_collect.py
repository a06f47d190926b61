"""Load test of the collection app against a real uvicorn server on 127.0.0.1.

Run as ``python benchmarks/bench_collect.py`` (``nox -s bench -- collect``). A digits MLP
is trained and served by ``robustness collect``; 20 concurrent clients each send 50
(predict, submit) pairs of real PNG drawings. Checked: no 5xx, and every acknowledged
submission stored exactly once. Printed: p50 / p95 latency of predict and of submit, and
throughput. Then a second load is cut by SIGKILL of the server mid-way; after a restart,
every submission acknowledged before the kill must still be there.
"""

from __future__ import annotations

import io
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLIENTS, PER_CLIENT = 20, 50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _png(i: int) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("L", (140, 140), 0)
    d = ImageDraw.Draw(img)
    d.line([(30 + i % 80, 20), (70, 120)], fill=255, width=12)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class Server:
    def __init__(self, model: Path, db: Path, token: Path, port: int, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "robustness.cli", "collect", "--model", str(model),
                    "--db", f"sqlite:///{db}", "--port", str(port), "--admin-token-file",
                    str(token)]
        self.base, self.log = f"http://127.0.0.1:{port}", log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import httpx2 as httpx

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        for _ in range(600):
            try:
                httpx.get(self.base + "/api/model", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit(f"the server did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def load(base: str, stop: threading.Event | None = None) -> dict[str, list]:
    """CLIENTS threads x PER_CLIENT (predict, submit); latencies, acknowledged ids, 5xx."""
    import httpx2 as httpx

    out: dict[str, list] = {"predict": [], "submit": [], "acked": [], "5xx": [], "failed": []}
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for i in range(PER_CLIENT):
                if stop is not None and stop.is_set():
                    return
                png = _png(k * PER_CLIENT + i)
                try:
                    t = time.perf_counter()
                    p = http.post("/api/predict", files={"image": ("d.png", png, "image/png")})
                    dp = time.perf_counter() - t
                    t = time.perf_counter()
                    s = http.post("/api/submissions", files={
                        "image": ("d.png", png, "image/png")}, data={"label": str(i % 10)})
                    ds = time.perf_counter() - t
                except httpx.HTTPError as e:  # the server was killed
                    with lock:
                        out["failed"].append(str(e))
                    return
                with lock:
                    out["predict"].append(dp)
                    out["submit"].append(ds)
                    for r in (p, s):
                        if r.status_code >= 500:
                            out["5xx"].append(r.status_code)
                    if s.status_code == 201:
                        out["acked"].append(s.json()["id"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def stored_ids(base: str, token: Path) -> list[int]:
    import httpx2 as httpx

    r = httpx.get(base + "/api/admin/submissions", timeout=60,
                  headers={"Authorization": f"Bearer {token.read_text().strip()}"})
    return [s["id"] for s in r.json()["submissions"]]


def main() -> int:
    from robustness.cli import main as cli

    print(f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load "
          f"average {os.getloadavg()[0]:.2f}; {CLIENTS} clients x {PER_CLIENT} (predict, submit)")
    work = Path(tempfile.mkdtemp(prefix="bench-collect-"))
    model = work / "model"
    assert cli(["train", "--data", "digits", "--model", "mlp", "--epochs", "3",
                "--no-progress", "--out", str(model)]) == 0
    server = Server(model, work / "c.db", work / "token", _free_port(), work / "server.log")
    server.start()
    start = time.perf_counter()
    result = load(server.base)
    wall = time.perf_counter() - start
    ids = stored_ids(server.base, work / "token")
    problems = []
    if result["5xx"]:
        problems.append(f"{len(result['5xx'])} responses with 5xx")
    if sorted(ids) != sorted(result["acked"]) or len(set(ids)) != len(ids):
        problems.append(f"{len(result['acked'])} acknowledged, {len(ids)} stored "
                        f"({len(set(ids))} distinct)")
    latency = []
    for name in ("predict", "submit"):
        lat = sorted(result[name])
        p95 = lat[int(0.95 * (len(lat) - 1))]
        latency.append(f"{name} p50 {1000 * statistics.median(lat):.1f} ms, p95 "
                       f"{1000 * p95:.1f} ms ({len(lat)} requests)")
        print(f"{name:8s} p50 {1000 * statistics.median(lat):7.1f} ms   p95 {1000 * p95:7.1f} ms"
              f"   ({len(lat)} requests)")
    print(f"{len(result['acked'])} submissions acknowledged in {wall:.1f} s "
          f"({len(result['acked']) / wall:.0f}/s, each with a predict); {len(ids)} stored")
    # Kill the server mid-load; every acknowledged submission must survive the restart.
    before = set(ids)
    stop = threading.Event()
    killer = threading.Timer(2.0, server.kill)
    killer.start()
    cut = load(server.base, stop)
    killer.join()
    server.start()
    after = set(stored_ids(server.base, work / "token"))
    lost = set(cut["acked"]) - after
    print(f"killed mid-load: {len(cut['acked'])} acknowledged before SIGKILL, "
          f"{len(lost)} lost after restart; {len(after - before)} new rows stored")
    if lost:
        problems.append(f"{len(lost)} acknowledged submissions lost after SIGKILL")
    server.kill()
    for p in problems:
        print(f"FAILED: {p}")
    from robustness.bench import at_most, print_targets, write_record

    targets = [at_most("collect: responses with 5xx under load", len(result["5xx"]), 0),
               at_most("collect: acknowledged submissions lost after SIGKILL", len(lost), 0)]
    print_targets(targets)
    write_record(Path("runs/bench/collect.json"), "collect", targets, summary=[
        *latency, f"{len(result['acked'])} submissions acknowledged in {wall:.1f} s by "
        f"{CLIENTS} clients ({len(result['acked']) / wall:.0f}/s, each with a predict)"],
        stored=len(ids), acknowledged=len(result["acked"]))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
