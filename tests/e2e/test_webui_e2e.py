"""deploybench's exact figures in Locust's web UI (loadtests/webui.py), live while a test runs.

One Locust in web-UI mode (not headless, ``--autostart``) runs the tabular scenario open loop (``constant``,
50 requests/s) against the known-latency test server. The tests read ``/deploybench/stats`` (the JSON the tabs
render), cross-check it against Locust's own ``/stats/requests``, render the three tabs in headless Chromium
(the Debian package; only that part is skipped without it) and stop the test from the web API.

The screenshot of the latency tab is kept as ``results/test-artifacts/webui-tab.png`` (and the pacing and CPU
tabs beside it) for a person to look at; ``results/`` is git-ignored.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.known_latency import KnownLatencyServer
from tests.support.waiting import kill_leftovers, wait_until

pytestmark = pytest.mark.e2e  # starts the test server, Locust and Chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "results" / "test-artifacts"
ENDPOINT = "POST /predict"
RATE = 50.0
START_TIMEOUT_S = 30.0
WORKERS = 2
BROWSER_TIMEOUT_S = 30.0


@dataclass
class Running:
    mode: str  # "local" (one Locust process) or "master" (a master and WORKERS workers)
    web: str  # Locust's web UI, http://127.0.0.1:PORT
    locust: subprocess.Popen[bytes]  # the local runner or the master
    log: Path
    tmp: Path
    workers: list[subprocess.Popen[bytes]]

    def stats(self) -> dict[str, Any]:
        r = httpx.get(f"{self.web}/deploybench/stats", timeout=10)
        r.raise_for_status()
        return r.json()

    def locust_stats(self) -> dict[str, Any]:
        r = httpx.get(f"{self.web}/stats/requests", timeout=10)
        r.raise_for_status()
        return r.json()

    def endpoint(self, data: dict[str, Any]) -> dict[str, Any] | None:
        return next((e for e in data["endpoints"] if e["name"] == ENDPOINT), None)

    def alive(self) -> None:
        for p in [self.locust, *self.workers]:
            assert p.poll() is None, f"locust exited: {self.log.read_text()[-3000:]}"

    def wait_for_requests(self, n: int) -> dict[str, Any]:
        """The JSON once the endpoint has at least ``n`` measured requests and, on a master, every worker has
        reported (the master's view merges the workers that reported; polled against a deadline)."""

        def ready() -> dict[str, Any] | None:
            self.alive()
            data = self.stats()
            ep = self.endpoint(data)
            workers = sum(g["role"] == "worker" for g in data["generators"])
            everyone = self.mode == "local" or workers == len(self.workers)
            return data if ep is not None and ep["count"] >= n and everyone else None

        return wait_until(ready, START_TIMEOUT_S, f"{n} requests in /deploybench/stats", interval_s=0.2)


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports the process listens on (Locust started with --web-port 0 / --master-bind-port 0: the OS
    picks them, and nobody can take one between the pick and the bind)."""
    with contextlib.suppress(psutil.Error):
        return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN"}
    return set()


@pytest.fixture(scope="module", params=["local", "master"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"webui-{mode}")
    log = tmp / "locust.log"
    port_file = tmp / "master.port"
    locustfile = str(REPO / "loadtests" / "tabular.py")
    server = KnownLatencyServer(service_ms=2.0)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server.start()
        cmd = [sys.executable, "-m", "locust", "-f", locustfile, "--host", server.url,
               "--web-host", "127.0.0.1", "--web-port", "0", "--autostart", "-u", "4", "-r", "4",
               "--load-model", "constant", "--rate", f"{RATE:g}",
               "--results-dir", str(tmp / "results")]  # fmt: skip
        if mode == "master":
            cmd += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", "0",
                    "--master-port-file", str(port_file), "--expect-workers", str(WORKERS)]  # fmt: skip
        with log.open("wb") as fh:
            procs.append(subprocess.Popen(cmd, cwd=tmp, stdout=fh, stderr=subprocess.STDOUT))
        master_port = 0
        if mode == "master":

            def port() -> int | None:
                assert procs[0].poll() is None, f"locust exited: {log.read_text()[-3000:]}"
                text = port_file.read_text().strip() if port_file.exists() else ""
                return int(text) if text else None

            master_port = wait_until(port, START_TIMEOUT_S, "the master's port file", interval_s=0.1)
            worker = [sys.executable, "-m", "locust", "-f", locustfile, "--worker",
                      "--master-host", "127.0.0.1", "--master-port", str(master_port)]  # fmt: skip
            with (tmp / "workers.log").open("wb") as fh:
                procs += [
                    subprocess.Popen(worker, cwd=tmp, stdout=fh, stderr=subprocess.STDOUT)
                    for _ in range(WORKERS)
                ]

        def web_port() -> int | None:
            assert procs[0].poll() is None, f"locust exited: {log.read_text()[-3000:]}"
            ports = _listening_ports(procs[0].pid) - {master_port}
            return ports.pop() if len(ports) == 1 else None

        web = wait_until(web_port, START_TIMEOUT_S, "Locust's web UI to listen", interval_s=0.1)
        yield Running(mode, f"http://127.0.0.1:{web}", procs[0], log, tmp, procs[1:])
    finally:
        kill_leftovers(procs)
        server.stop()


def test_json_has_the_exact_figures_live_and_agrees_with_locust(running: Running) -> None:
    data = running.wait_for_requests(30)
    assert data["source"] == "deploybench" and data["role"] == running.mode
    assert data["state"] in ("spawning", "running")
    assert data["open_loop"] is True and data["load_model"] == "constant" and data["rate_rps"] == RATE
    assert data["window_s"] > 0 and data["window_closed"] is False
    ep = running.endpoint(data)
    assert ep is not None and ep["count"] >= 30 and ep["errors"] == 0, ep
    cor, unc = ep["latency_us"], ep["uncorrected_latency_us"]
    for key in ("p50", "p90", "p99", "p99.9", "max"):
        assert isinstance(cor[key], int) and isinstance(unc[key], int), (key, cor, unc)
        # corrected = uncorrected + the send's delay against its intended time: never smaller, per request
        assert cor[key] >= unc[key] > 0, (key, cor, unc)
    assert cor["p50"] <= cor["p90"] <= cor["p99"] <= cor["p99.9"] <= cor["max"]
    assert unc["p50"] >= 2000  # the server sleeps 2 ms: µs figures, exact (not Locust's 1 ms buckets)
    assert ep["offered_rps"] == pytest.approx(RATE) and ep["throughput_rps"] > 0

    pacing = data["pacing"]["total"]
    assert pacing["offered_rps"] == pytest.approx(RATE)
    assert 0.5 * RATE < pacing["achieved_rps"] <= pacing["scheduled_rps"] * 1.01, pacing
    assert pacing["sent"] >= ep["count"] and pacing["scheduled"] >= pacing["sent"]
    for key in ("late_sends", "dropped_sends", "dropped", "not_sent", "unfinished", "max_send_lag_us"):
        assert isinstance(pacing[key], int) and pacing[key] >= 0, (key, pacing)

    gens = data["generators"]
    if running.mode == "local":
        assert [(g["role"], g["pid"]) for g in gens] == [("local", running.locust.pid)]
        assert pacing["name"] == "all" and data["pacing"]["generators"] == []
    else:  # the master's merged view: its own process, then each worker's; each worker's pacing share
        pids = [running.locust.pid, *(w.pid for w in running.workers)]
        assert [g["role"] for g in gens] == ["master", *["worker"] * WORKERS]
        assert sorted(g["pid"] for g in gens) == sorted(pids)
        shares = data["pacing"]["generators"]
        assert [s["name"] for s in shares] == [f"worker {i}" for i in range(WORKERS)]
        assert [s["offered_rps"] for s in shares] == [pytest.approx(RATE / WORKERS)] * WORKERS
        assert sum(s["answered_in_window"] for s in shares) == ep["count"] == pacing["answered_in_window"]
    senders = [g for g in gens if g["role"] != "master"]
    for g in senders:
        assert g["busy_percent"] is not None and 0 < g["busy_percent"] < 400, g
        assert g["cpu_s"] > 0 and g["cpu_percent_mean"] is not None, g
    assert sum(g["requests"] for g in senders) >= ep["count"]

    # Locust's own count, read at the same instant: every request event reached both (no warm-up here)
    locust_now = data["locust"]["endpoints"][ENDPOINT]
    assert abs(locust_now - ep["answered"]) <= ep["in_flight"] + 1, (locust_now, ep)

    # Locust's /stats/requests (cached by Locust up to 2 s, ours up to 1 s): between two of our reads, give
    # or take what was in flight and what 3 s of the rate adds
    before = running.endpoint(running.stats())
    t0 = time.monotonic()
    row = next(
        s for s in running.locust_stats()["stats"] if s["name"] == "/predict" and s["method"] == "POST"
    )
    after = running.endpoint(running.stats())
    assert before is not None and after is not None
    slack = max(before["in_flight"], after["in_flight"]) + RATE * (3.0 + time.monotonic() - t0)
    assert before["answered"] - slack <= row["num_requests"] <= after["answered"] + slack, (
        before,
        row,
        after,
    )


class _Tables(HTMLParser):
    """The rendered tables: each a list of rows, each row the texts of its cells (th or td)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _render(chromium: str, url: str, png: Path, profile: Path) -> list[dict[str, str]]:
    """Load ``url`` in headless Chromium, save a screenshot, and return the rows of the tab's table as
    {column title: cell text}."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=4000", "--window-size=1400,900",
           f"--screenshot={png}", "--dump-dom", url]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = _Tables()
    parser.feed(proc.stdout)
    assert png.is_file() and png.stat().st_size > 0
    tables = [t for t in parser.tables if t]
    assert len(tables) == 1, f"expected the tab's one table, got {tables!r}\n{proc.stdout[-3000:]}"
    head, *body = tables[0]
    return [dict(zip(head, row, strict=True)) for row in body]


def test_the_tabs_render_the_json_in_a_browser(running: Running) -> None:
    data = running.wait_for_requests(30)
    ep = running.endpoint(data)
    assert ep is not None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium): the browser check needs it")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    rows = {}
    for tab, suffix in (("deploybench", ""), ("deploybench-pacing", "-pacing"), ("deploybench-cpu", "-cpu")):
        png = running.tmp / f"webui-tab{suffix}.png"  # the test's own copy, and one kept for a person
        rows[tab] = _render(chromium, f"{running.web}/?tab={tab}", png, running.tmp / f"profile{suffix}")
        mode = "" if running.mode == "local" else f"-{running.mode}"
        shutil.copyfile(png, ARTIFACTS / f"webui-tab{mode}{suffix}.png")

    (row,) = rows["deploybench"]
    assert row["Endpoint"] == ENDPOINT
    assert int(row["Count"]) >= ep["count"] and int(row["Errors"]) == 0
    shown = {k: float(row[f"{k} ms"]) for k in ("P50", "P90", "P99", "P99.9", "Max")}
    shown_unc = {k: float(row[f"Uncorr. {k} ms"]) for k in ("P50", "P90", "P99", "P99.9", "Max")}
    for k in shown:
        assert shown[k] >= shown_unc[k] >= 2.0, (k, row)  # ms with µs digits; the server sleeps 2 ms
    assert shown["P50"] <= shown["P99"] <= shown["Max"]
    later = running.endpoint(running.stats())
    assert later is not None and int(row["Count"]) <= later["count"]  # what was live then, not made up

    pace, *shares = rows["deploybench-pacing"]
    assert pace["Generator"] == "all" and float(pace["Offered req/s"]) == pytest.approx(RATE)
    assert [s["Generator"] for s in shares] == ([] if running.mode == "local" else ["worker 0", "worker 1"])
    assert float(pace["Achieved req/s"]) > 0 and int(pace["Sent"]) >= ep["count"]
    assert int(pace["Dropped"]) >= 0 and int(pace["Late sends"]) >= 0

    cpu = rows["deploybench-cpu"]
    pids = {r["Process"]: int(r["PID"]) for r in cpu}
    if running.mode == "local":
        assert pids == {"local": running.locust.pid}
    else:
        assert pids["master"] == running.locust.pid and len(pids) == 1 + WORKERS
        assert {pids[f"worker {i}"] for i in range(WORKERS)} == {w.pid for w in running.workers}
    senders = [r for r in cpu if r["Process"] != "master"]
    assert all(float(r["Busy % of a core"]) > 0 for r in senders), cpu
    assert sum(int(r["Requests"]) for r in senders) >= ep["count"]


def test_after_stop_the_counts_are_final_and_match_locust(running: Running) -> None:
    running.wait_for_requests(30)
    r = httpx.post(f"{running.web}/stop", timeout=10)
    assert r.status_code == 200 and r.json()["success"], r.text

    def final() -> dict[str, Any] | None:
        data = running.stats()
        return data if data["state"] == "stopped" and data["sealed"] else None

    data = wait_until(final, 15.0, "the stopped test's sealed figures", interval_s=0.2)
    ep = running.endpoint(data)
    assert ep is not None and ep["in_flight"] == 0 and data["window_closed"] is True
    sent_errors = sum(
        v for k, v in ep["errors_by_kind"].items() if k not in ("dropped", "not-sent", "unfinished")
    )

    # Every request in the window is in both; Locust may also count or miss the few that answered after the
    # window was sealed at the stop (ours: after_window_count, outside the figures). Locust caches
    # /stats/requests up to 2 s, and a master adds the workers' last stats reports as they come: poll.
    seen: list[int | None] = []

    def locust_agrees() -> bool:
        body = running.locust_stats()
        rows = [s for s in body["stats"] if s["name"] == "/predict" and s["method"] == "POST"]
        seen.append(rows[0]["num_requests"] if rows else None)
        n = seen[-1]
        return (
            body["state"] == "stopped"
            and n is not None
            and ep["count"] + sent_errors - 1 <= n <= ep["answered"] + 1
        )

    try:
        wait_until(locust_agrees, 15.0, "Locust's final count to agree", interval_s=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: ours {ep}, Locust's last answers {seen[-5:]}") from None
    assert ep["scheduled"] == ep["count"] + ep["errors"]  # open loop: every slot accounted for
