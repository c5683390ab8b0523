"""`deploybench load` against your own API, in-process: headers, JSON lines and image-folder payloads, the
api scenario's options, bad input (one line, exit 2, before anything starts), and how the runner hands paths
and headers to the Locust process. No test here starts a process (tests/conftest.py fails one that does),
so every bad-input case is also proof that it was refused before Locust or a target started."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploybench.commands.cli import main as cli_main
from deploybench.errors import UsageError
from deploybench.loadtests import runner
from deploybench.loadtests.payloads import (
    BOUNDARY,
    HEADERS_ENV,
    MULTIPART_CONTENT_TYPE,
    load_payloads,
    make_images,
    merge_headers,
    parse_header,
    parse_headers,
    request_spec,
)


# -- headers -------------------------------------------------------------------------------------------
def test_parse_header_accepts_name_colon_value() -> None:
    assert parse_header("Authorization: Bearer abc:def") == ("Authorization", "Bearer abc:def")
    assert parse_header("X-Empty:") == ("X-Empty", "")
    assert parse_header("  X-Pad :  v  ") == ("X-Pad", "v")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Authorization Bearer abc", "has no colon: write it as 'Name: value'"),
        (": value", "is not a valid header name"),
        ("Bad Name: v", "is not a valid header name"),
        ("X-Inject: a\r\nEvil: b", "must not contain line breaks"),
    ],
)
def test_parse_header_refuses_bad_ones(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="--header") as err:
        parse_header(text)
    assert message in str(err.value)


def test_later_headers_win_case_insensitively_and_options_beat_the_environment() -> None:
    assert parse_headers(["x-key: 1", "X-Key: 2", "Other: 3"]) == {"X-Key": "2", "Other": "3"}
    env = json.dumps({"authorization": "from-env", "X-Env": "e"})
    merged = merge_headers(env, ["Authorization: from-option"])
    assert merged == {"X-Env": "e", "Authorization": "from-option"}
    with pytest.raises(UsageError, match=HEADERS_ENV):
        merge_headers("[1, 2]", None)


# -- payloads ------------------------------------------------------------------------------------------
def test_json_lines_are_kept_as_written_in_order_and_blank_lines_skipped(tmp_path: Path) -> None:
    f = tmp_path / "rows.jsonl"
    f.write_text('{"features": [5.1, 3.5, 1.4, 0.2]}\n\n  {"instances": [[1,2,3,4]]}  \n[1, 2]\n"text"\n')
    p = load_payloads(f)
    assert p.kind == "json-lines" and p.source == str(f)
    assert p.bodies == (b'{"features": [5.1, 3.5, 1.4, 0.2]}', b'{"instances": [[1,2,3,4]]}', b"[1, 2]",
                        b'"text"')  # fmt: skip
    assert set(p.content_types) == {"application/json"}
    assert p.describe() == {"payload": str(f), "payload_kind": "json-lines", "payload_count": 4,
                            "payload_bytes": sum(map(len, p.bodies))}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        (b'{"ok": 1}\n{"ok": 2}\n{"ok": 3,}\n', ":3:", "not valid JSON (Expecting property name"),
        (b"\n\n{not json}\n", ":3:", "not valid JSON"),
        (b'{"ok": 1}\n\xff\xfe\n', ":2:", "not UTF-8 text"),
        (b"\n  \n", ":", "no request bodies (write one JSON value per line)"),
    ],
)
def test_a_bad_json_lines_file_is_named_with_its_line(
    tmp_path: Path, content: bytes, where: str, message: str
) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_bytes(content)
    with pytest.raises(UsageError) as err:
        load_payloads(f)
    assert f"--payload {f}{where}" in str(err.value) and message in str(err.value), str(err.value)


def test_an_image_folder_becomes_multipart_uploads_in_name_order(tmp_path: Path) -> None:
    jpeg, png = make_images((16, 12), "jpeg", 1, 0)[0], make_images((16, 12), "png", 1, 0)[0]
    (tmp_path / "b.png").write_bytes(png)
    (tmp_path / "a.JPG").write_bytes(jpeg)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(png)
    (tmp_path / "sub").mkdir()
    p = load_payloads(tmp_path, field="image")
    assert p.kind == "image-folder" and len(p.bodies) == 2
    assert set(p.content_types) == {MULTIPART_CONTENT_TYPE} and BOUNDARY in MULTIPART_CONTENT_TYPE
    first, second = p.bodies
    assert b'name="image"; filename="a.JPG"' in first and b"Content-Type: image/jpeg" in first
    assert jpeg in first and first.endswith(f"\r\n--{BOUNDARY}--\r\n".encode())
    assert b'filename="b.png"' in second and b"Content-Type: image/png" in second and png in second


def test_an_empty_image_folder_and_a_missing_path_are_refused(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(UsageError, match=r"no image files \(\.jpg"):
        load_payloads(tmp_path)
    with pytest.raises(UsageError, match="no such file or folder"):
        load_payloads(tmp_path / "missing.jsonl")


def test_request_spec_defaults_and_checks(tmp_path: Path) -> None:
    f = tmp_path / "one.jsonl"
    f.write_text('{"a": 1}\n')
    assert request_spec().method == "GET" and request_spec().path == "/" and request_spec().payloads is None
    spec = request_spec("", "/v1/score?x=1", str(f))
    assert spec.method == "POST" and spec.path == "/v1/score?x=1"
    assert spec.describe()["payload_count"] == 1 and spec.describe()["method"] == "POST"
    assert request_spec("put", "/x").method == "PUT"
    with pytest.raises(UsageError, match="--path must start with '/'"):
        request_spec("", "v1/score")
    with pytest.raises(UsageError, match="--method 'GE T' is not an HTTP method"):
        request_spec("GE T", "/")


# -- the command line: bad input is one line and exit 2, before anything runs ------------------------------
@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so no one else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _load(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = cli_main(["load", *args])
    except SystemExit as exc:  # argparse errors
        rc = int(exc.code or 0)
    captured = capsys.readouterr()
    assert not captured.out.strip(), captured.out  # nothing ran
    return rc, captured.err


def test_bad_input_gives_one_line_and_exit_2_before_anything_runs(
    tmp_path: Path, refusing_port: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"ok": 1}\n{"ok": 2\n')
    (tmp_path / "good.jsonl").write_text('{"ok": 1}\n')
    (tmp_path / "plain_locust.py").write_text("from locust import HttpUser\n")
    url = f"http://127.0.0.1:{refusing_port}"
    out = ["--out", "out", "--duration", "1"]
    cases = [
        (["--url", url, "--header", "Authorization Bearer x", *out],
         "--header 'Authorization Bearer x' has no colon: write it as 'Name: value'"),
        (["--url", url, "--payload", "bad.jsonl", *out],
         f"--payload {tmp_path / 'bad.jsonl'}:2: not valid JSON"),
        (["--url", url, "--payload", "good.jsonl", *out],
         f"--url {url} is unreachable: Connection refused (127.0.0.1:{refusing_port})"),
        (["--url", url, *out], f"--url {url} is unreachable: Connection refused"),
        (["--url", f"{url}/x", "--scenario", "tabular", "--path", "/v1", *out],
         "--path: only for --scenario api (your own endpoint), not tabular"),
        (["--url", url, "--locustfile", "missing.py", *out], "--locustfile missing.py: no such file"),
        (["--url", url, "--locustfile", "plain_locust.py", *out], "no DeployBenchUser in it"),
        (["--url", url, "--locustfile", "plain_locust.py", "--scenario", "health", *out],
         "--locustfile runs your own scenario: drop --scenario"),
        (["--url", url, "--path", "no-slash", *out], "--path must start with '/'"),
    ]  # fmt: skip
    for args, message in cases:
        rc, err = _load(args, capsys)
        assert rc == 2, (args, err)
        assert message in err, (args, err)
        assert err.startswith("deploybench load: error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_unknown_hosts_and_silent_ports_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two other ways a URL is unreachable, without asking a resolver or waiting: the connection
    attempt is replaced by one that fails the way the socket module does."""

    def unknown(address: tuple[str, int], timeout: float) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    def silent(address: tuple[str, int], timeout: float) -> None:
        raise TimeoutError("timed out")

    monkeypatch.setattr(runner.socket, "create_connection", unknown)
    with pytest.raises(UsageError, match=r"--url http://model\.example:8000/v1 is unreachable: unknown host"):
        runner.check_reachable("http://model.example:8000/v1")
    monkeypatch.setattr(runner.socket, "create_connection", silent)
    with pytest.raises(UsageError, match=r"no answer from model\.example:443 within 5 s"):
        runner.check_reachable("https://model.example/v1")
    with pytest.raises(UsageError, match="must look like http://HOST"):
        runner.check_reachable("ftp://model.example")
    with pytest.raises(UsageError, match="the port is not a number"):
        runner.check_reachable("http://model.example:99999")


def test_deploybench_locustfile_prints_the_scenario_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["locustfile", "image"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_absolute() and path == runner.SCENARIO_DIR / "image.py" and path.is_file()
    assert cli_main(["locustfile"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    names = {p.name for p in folder.glob("*.py")}
    assert names >= {"tabular.py", "image.py", "health.py", "api.py", "user.py"}


# -- what the runner hands to Locust ---------------------------------------------------------------------
def test_locust_env_puts_this_copy_first_and_headers_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.delenv(HEADERS_ENV, raising=False)
    env = runner.locust_env({"Authorization": "Bearer t0k"})
    assert json.loads(env[HEADERS_ENV]) == {"Authorization": "Bearer t0k"}
    # This checkout is not a site-packages folder, so it goes first on the Locust process's path.
    assert env["PYTHONPATH"].split(os.pathsep) == [str(runner.PROJECT_ROOT), "/elsewhere"]
    assert HEADERS_ENV not in runner.locust_env(None)


def test_user_locustfile_and_api_options_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text("from deploybench.loadtests.user import DeployBenchUser\n")
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    assert runner.user_locustfile("mine.py") == tmp_path / "mine.py"
    options = {"path": "/v1", "payload": "rows.jsonl"}
    described = runner.api_request(options)
    assert options["payload"] == str(tmp_path / "rows.jsonl")
    assert described == {"method": "POST", "path": "/v1", "payload": str(tmp_path / "rows.jsonl"),
                         "payload_kind": "json-lines", "payload_count": 2, "payload_bytes": 16}  # fmt: skip
    assert runner.scenario_file("api").is_file() and runner.scenario_file("api").is_absolute()
    with pytest.raises(UsageError, match="unknown scenario 'nope'"):
        runner.scenario_file("nope")
