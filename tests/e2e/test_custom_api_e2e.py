"""`deploybench load` against your own API: --path/--method/--header/--payload (JSON lines, image folder) and
your own Locust file with a DeployBenchUser subclass, end to end (real Locust processes).

The JSON-lines and image-folder runs go to a recording HTTP server in this test process (a thread on a
loopback port), which keeps every request it got, so the test checks what was actually sent: method, path,
headers, bodies and their order. The own-locustfile run goes to the known-latency test server, so the
measurement can be checked against a known service time."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deploybench.commands.cli import main as cli_main
from deploybench.loadtests.payloads import make_images
from deploybench.record import load_record
from deploybench.stats import decode_histogram
from tests.support.known_latency import KnownLatencyServer

pytestmark = pytest.mark.e2e  # every test here runs Locust

TOKEN = "t0k-5ecret-value"  # must never reach a record or a log


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    url: str
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> list[Seen]:
        with self.lock:
            return list(self.requests)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A loopback HTTP server that answers every request 200 (JSON, with a Server-Timing header) and keeps
    what it got; shut down after the test."""
    rec = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with rec.lock:
                rec.requests.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            data = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Server-Timing", "infer;dur=0.250")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _record_from_output(out: str) -> Path:
    lines = [line for line in out.splitlines() if line.startswith("record: ")]
    assert lines, out
    return Path(lines[-1].removeprefix("record: "))


def test_json_lines_with_path_method_and_headers(
    recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps({"features": [i, 1.5, 2.5, 0.5]}) for i in range(3)]
    payload = tmp_path / "rows.jsonl"
    payload.write_text("\n".join(lines) + "\n\n")
    rc = cli_main(["load", "--url", recorder.url, "--path", "/v1/score?version=2", "--method", "put",
                   "--header", f"Authorization: Bearer {TOKEN}", "--header", "X-Tenant: acme",
                   "--payload", str(payload), "--duration", "2", "--warmup", "0.5", "--users", "1",
                   "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    probe, *seen = recorder.seen()
    # the generator reads GET /health once (the target's self-description) with the same headers
    assert (probe.method, probe.path, probe.headers["Authorization"]) == ("GET", "/health", f"Bearer {TOKEN}")
    assert len(seen) > 10
    for i, req in enumerate(seen):  # one user: sent and received in order, the bodies cycled
        assert (req.method, req.path) == ("PUT", "/v1/score?version=2")
        assert req.headers["Authorization"] == f"Bearer {TOKEN}" and req.headers["X-Tenant"] == "acme"
        assert req.headers["Content-Type"] == "application/json"
        assert req.body == lines[i % 3].encode(), i

    path = _record_from_output(out)
    rec = load_record(path)
    assert rec.status == "complete" and rec.config["scenario"] == "api"
    (s,) = rec.series
    assert s.name == "PUT /v1/score?version=2" and s.count > 0 and not s.errors
    assert s.count + s.extra["warmup_count"] <= len(seen)  # every measured request reached the server
    assert decode_histogram(s.histogram).get_total_count() == s.count
    assert s.server_timing_us["infer"]["p50"] == 250  # Server-Timing kept per endpoint
    assert rec.config["request"] == {"method": "PUT", "path": "/v1/score?version=2", "payload": str(payload),
                                     "payload_kind": "json-lines", "payload_count": 3,
                                     "payload_bytes": sum(len(line) for line in lines)}  # fmt: skip
    assert rec.config["request_headers"] == ["Authorization", "X-Tenant"]  # names only
    for written in (path, Path(rec.config["generator_log"])):
        assert TOKEN not in written.read_text(), written


def test_image_folder_goes_out_as_multipart_uploads(
    recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    names = ["cat.jpg", "dog.jpeg", "fish.png"]
    for name, fmt in zip(names, ["jpeg", "jpeg", "png"], strict=True):
        (folder / name).write_bytes(make_images((40, 30), fmt, 1, len(name))[0])
    (folder / "labels.csv").write_text("not an image\n")
    rc = cli_main(["load", "--url", f"{recorder.url}/v2", "--path", "/predict/image",
                   "--payload", str(folder), "--multipart-field", "image", "--duration", "2", "--warmup", "0",
                   "--users", "2", "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    seen = [r for r in recorder.seen() if r.path != "/v2/health"]  # the generator's one health read
    # the URL's path prefix is kept
    assert len(seen) > 10 and {(r.method, r.path) for r in seen} == {("POST", "/v2/predict/image")}
    files = Counter()
    for req in seen:
        assert req.headers["Content-Type"].startswith("multipart/form-data; boundary=")
        m = re.search(rb'name="image"; filename="([^"]+)"\r\nContent-Type: (image/[a-z]+)\r\n\r\n', req.body)
        assert m, req.body[:200]
        files[m.group(1).decode()] += 1
        expected = (folder / m.group(1).decode()).read_bytes()
        assert expected in req.body and m.group(2) == (b"image/png" if expected[:4] == b"\x89PNG" else
                                                       b"image/jpeg")  # fmt: skip
    # cycled in name order by one shared counter: the counts differ by at most one, plus the (at most two)
    # requests still in flight when the run stopped
    assert set(files) == set(names) and max(files.values()) - min(files.values()) <= 3, files
    rec = load_record(_record_from_output(out))
    (s,) = rec.series
    assert rec.status == "complete" and s.name == "POST /predict/image" and s.count > 0 and not s.errors
    assert rec.config["request"]["payload_kind"] == "image-folder"
    assert rec.config["request"]["payload_count"] == 3
    assert rec.config["scenario_options"]["multipart_field"] == "image"


MY_API = """
from locust import task

from deploybench.loadtests.user import DeployBenchUser


class MyApiUser(DeployBenchUser):
    scenario = "my-api"

    @task(3)
    def predict(self) -> None:
        self.send("POST", "/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}, name="/predict")

    @task(1)
    def health(self) -> None:
        self.send("GET", "/health", name="/health")
"""


def test_own_locustfile_with_a_deploybench_user_is_measured_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's example file, open loop (Poisson, 60 rps), against a 10 ms server: both endpoints get
    corrected and uncorrected histograms, /predict's latency is at least the service time, Server-Timing is
    parsed, and the header option reaches a user-written scenario too."""
    locustfile = tmp_path / "my_api.py"
    locustfile.write_text(MY_API)
    with KnownLatencyServer(service_ms=10.0) as srv:
        rc = cli_main(["load", "--url", srv.url, "--locustfile", str(locustfile), "--load-model", "poisson",
                       "--rate", "60", "--users", "4", "--duration", "3", "--warmup", "0.5", "--seed", "3",
                       "--header", "X-Api-Key: abc", "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    rec = load_record(_record_from_output(out))
    assert rec.status == "complete" and rec.config["scenario"] == "my-api"
    assert rec.config["locustfile"] == str(locustfile) and rec.config["loop"] == "open-loop"
    assert rec.config["request_headers"] == ["X-Api-Key"]
    series = {s.name: s for s in rec.series}
    assert set(series) == {"POST /predict", "GET /health"}
    for s in series.values():
        assert s.count > 0 and not s.errors and s.uncorrected_latency_us is not None
        assert decode_histogram(s.histogram).get_total_count() == s.count
    predict = series["POST /predict"]
    assert predict.latency_us["min"] >= 10_000 and predict.server_timing_us["infer"]["p50"] >= 10_000
    assert predict.count > series["GET /health"].count  # task weights 3:1
    assert sum(s.offered_rps for s in series.values()) == pytest.approx(60.0, abs=0.01)


def test_own_locustfile_runs_under_plain_locust_too(tmp_path: Path) -> None:
    """`locust -f my_api.py` (no deploybench command) in the user's folder: the record lands in ./results."""
    (tmp_path / "my_api.py").write_text(MY_API)
    with KnownLatencyServer(service_ms=2.0) as srv:
        cmd = [sys.executable, "-m", "locust", "-f", "my_api.py", "--headless", "--host", srv.url, "-u", "2",
               "-r", "2", "-t", "30s", "--duration", "2", "--only-summary"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (tmp_path / "results").glob("*.json")
    rec = load_record(path)
    assert rec.status == "complete" and rec.config["scenario"] == "my-api"
    assert {s.name for s in rec.series} == {"POST /predict", "GET /health"}
