"""The bad-input matrix against real servers of both frameworks: every case gets the expected 4xx with the
same JSON body on Flask and FastAPI, and none reaches the catch-all 500 handler.

Each test stands alone (any order, or run by itself): the servers are a shared module fixture, and a test
that needs bad input to have been sent sends it itself. Every test starts real servers (marked ``e2e``)."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from PIL import Image

from deploybench import paths
from deploybench.targets.serve import Limits, ServerProcess, TargetConfig
from deploybench.targets.zoo import build_zoo
from tests.support.servers import started_together

pytestmark = pytest.mark.e2e  # every test here uses the targets of a module fixture

pytestmark = pytest.mark.e2e

LIMITS = Limits(max_body_bytes=256 * 1024, max_pixels=1_000_000, max_batch=8)
FRAMEWORKS = {"flask": "gunicorn-gthread", "fastapi": "uvicorn"}
MODELS = {"tabular": "iris-rf", "image": "resnet18"}
OK_ROW = [5.1, 3.5, 1.4, 0.2]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[tuple[str, str], str]]:
    """(framework, kind) -> base URL: four servers with small limits, started concurrently."""
    zoo = paths.zoo_dir()
    build_zoo(zoo, models=["iris-rf"], formats=["onnx"])
    build_zoo(zoo, models=["resnet18"], formats=["onnx"])
    procs = {
        (fw, kind): ServerProcess(
            TargetConfig(
                framework=fw,
                server=srv,
                model=model,
                format="onnx",
                threads=2 if fw == "flask" else 1,
                zoo_dir=str(zoo.resolve()),
                limits=LIMITS,
            ),
            ready_timeout_s=120,
        )
        for fw, srv in FRAMEWORKS.items()
        for kind, model in MODELS.items()
    }
    with started_together(procs) as urls:
        yield urls


# -- fixtures: images made in memory ------------------------------------------------------------------
def png_bytes(width: int, height: int, solid: bool = False) -> bytes:
    if solid:
        img = Image.new("RGB", (width, height), (120, 30, 200))
    else:
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(width: int = 200, height: int = 150) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buf, "JPEG"
    )
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (decoding it would need ~30 GB)."""
    data = bytearray(png_bytes(1, 1))
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    struct.pack_into(">II", data, ihdr + 8, width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    struct.pack_into(">I", data, ihdr + 8 + 13, crc)
    return bytes(data)


def tiff_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF")
    return buf.getvalue()


def multipart(
    parts: list[tuple[str, bytes]], boundary: str = "xXxBOUNDARYxXx"
) -> tuple[bytes, dict[str, str]]:
    body = b""
    for name, data in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="f.bin"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def b64_body(image: object) -> bytes:
    return json.dumps({"image": image}).encode()


# -- the matrix ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    kind: str  # which target: "tabular" | "image"
    path: str
    body: bytes | None
    status: int
    code: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    chunked: bool = False


def _json(text: str) -> bytes:
    return text.encode()


_BIG = 300 * 1024  # over LIMITS.max_body_bytes
_mp_text, _mp_hdr = multipart([("file", b"this is not an image")])
_mp_empty, _ = multipart([("file", b"")])
_mp_other, _ = multipart([("picture", jpeg_bytes())])
_mp_two, _ = multipart([("file", jpeg_bytes()), ("file", jpeg_bytes())])
_mp_trunc_jpeg, _ = multipart([("file", jpeg_bytes()[:1500])])
_mp_trunc_png, _ = multipart([("file", png_bytes(300, 300)[:3000])])
_mp_bomb, _ = multipart([("file", png_bomb())])
_mp_big_pixels, _ = multipart([("file", png_bytes(1200, 1000, solid=True))])
_mp_tiff, _ = multipart([("file", tiff_bytes())])
_mp_ok, _ = multipart([("file", jpeg_bytes())])

CASES = [
    # -- iris JSON
    Case("missing-key", "tabular", "/predict", _json("{}"), 422, "invalid-request"),
    Case("extra-key", "tabular", "/predict", _json('{"features":[1,2,3,4],"x":1}'), 422, "invalid-request"),
    Case(
        "both-keys",
        "tabular",
        "/predict",
        _json('{"features":[1,2,3,4],"instances":[[1,2,3,4]]}'),
        422,
        "invalid-request",
    ),
    Case("body-is-array", "tabular", "/predict", _json("[1,2,3,4]"), 422, "invalid-request"),
    Case("too-few", "tabular", "/predict", _json('{"features":[1,2,3]}'), 422, "invalid-features"),
    Case("too-many", "tabular", "/predict", _json('{"features":[1,2,3,4,5]}'), 422, "invalid-features"),
    Case("strings", "tabular", "/predict", _json('{"features":["1","2","3","4"]}'), 422, "invalid-features"),
    Case("boolean", "tabular", "/predict", _json('{"features":[1,2,3,true]}'), 422, "invalid-features"),
    Case("null", "tabular", "/predict", _json('{"features":[1,2,null,4]}'), 422, "invalid-features"),
    Case("nested", "tabular", "/predict", _json('{"features":[[1,2,3,4]]}'), 422, "invalid-features"),
    Case("not-a-list", "tabular", "/predict", _json('{"features":"1,2,3,4"}'), 422, "invalid-features"),
    Case("nan-token", "tabular", "/predict", _json('{"features":[1,2,3,NaN]}'), 400, "invalid-json"),
    Case(
        "infinity-token", "tabular", "/predict", _json('{"features":[1,2,Infinity,4]}'), 400, "invalid-json"
    ),
    Case(
        "neg-infinity-token",
        "tabular",
        "/predict",
        _json('{"features":[-Infinity,2,3,4]}'),
        400,
        "invalid-json",
    ),
    Case(
        "overflow-to-inf", "tabular", "/predict", _json('{"features":[1e999,2,3,4]}'), 422, "invalid-features"
    ),
    Case(
        "negative", "tabular", "/predict", _json('{"features":[5.1,-3.5,1.4,0.2]}'), 422, "invalid-features"
    ),
    Case("too-big-value", "tabular", "/predict", _json('{"features":[1e7,1,1,1]}'), 422, "invalid-features"),
    Case(
        "huge-integer",
        "tabular",
        "/predict",
        _json('{"features":[' + "9" * 5000 + ",1,1,1]}"),
        400,
        "invalid-json",
    ),
    Case("empty-batch", "tabular", "/predict", _json('{"instances":[]}'), 422, "empty-batch"),
    Case(
        "batch-over-max",
        "tabular",
        "/predict",
        _json('{"instances":' + str([OK_ROW] * 9) + "}"),
        422,
        "batch-too-large",
    ),
    Case(
        "bad-row-in-batch",
        "tabular",
        "/predict",
        _json('{"instances":[[1,2,3,4],[1,2,3]]}'),
        422,
        "invalid-features",
    ),
    Case(
        "instances-not-list", "tabular", "/predict", _json('{"instances":{"a":1}}'), 422, "invalid-features"
    ),
    Case("not-json", "tabular", "/predict", b"features=1,2,3,4", 400, "invalid-json"),
    Case("empty-body", "tabular", "/predict", b"", 400, "invalid-json"),
    Case("not-utf8", "tabular", "/predict", b'{"features":[1,2,3,4]}\xff\xfe', 400, "invalid-json"),
    Case("deep-nesting", "tabular", "/predict", b"[" * 100_000 + b"]" * 100_000, 400, "invalid-json"),
    Case(
        "text-plain",
        "tabular",
        "/predict",
        _json('{"features":[1,2,3,4]}'),
        415,
        "unsupported-media-type",
        headers={"Content-Type": "text/plain"},
    ),
    Case(
        "no-content-type",
        "tabular",
        "/predict",
        _json('{"features":[1,2,3,4]}'),
        415,
        "unsupported-media-type",
        headers={},
    ),
    Case(
        "multipart-to-json-route",
        "tabular",
        "/predict",
        _mp_ok,
        415,
        "unsupported-media-type",
        headers=_mp_hdr,
    ),
    Case(
        "over-max-body",
        "tabular",
        "/predict",
        b'{"features":[' + b" " * _BIG + b"1,2,3,4]}",
        413,
        "payload-too-large",
    ),
    Case(
        "over-max-body-chunked",
        "tabular",
        "/predict",
        b'{"features":[' + b" " * _BIG + b"1,2,3,4]}",
        413,
        "payload-too-large",
        chunked=True,
    ),
    Case(
        "image-route-on-iris", "tabular", "/predict/image", _mp_ok, 409, "wrong-model-kind", headers=_mp_hdr
    ),
    Case("b64-route-on-iris", "tabular", "/predict/image/base64", b64_body("aGk="), 409, "wrong-model-kind"),
    # -- routing (JSON 404 / 405)
    Case("unknown-route", "tabular", "/nope", None, 404, "not-found", method="GET"),
    Case("unknown-route-post", "tabular", "/predict/text", _json("{}"), 404, "not-found"),
    Case("trailing-slash", "tabular", "/health/", None, 404, "not-found", method="GET"),
    Case("get-predict", "tabular", "/predict", None, 405, "method-not-allowed", method="GET"),
    Case("delete-health", "tabular", "/health", None, 405, "method-not-allowed", method="DELETE"),
    Case("put-image", "image", "/predict/image", b"", 405, "method-not-allowed", method="PUT"),
    Case("options-predict", "image", "/predict", None, 405, "method-not-allowed", method="OPTIONS"),
    # -- images: multipart
    Case("not-an-image", "image", "/predict/image", _mp_text, 422, "invalid-image", headers=_mp_hdr),
    Case("empty-file", "image", "/predict/image", _mp_empty, 422, "invalid-image", headers=_mp_hdr),
    Case("truncated-jpeg", "image", "/predict/image", _mp_trunc_jpeg, 422, "invalid-image", headers=_mp_hdr),
    Case("truncated-png", "image", "/predict/image", _mp_trunc_png, 422, "invalid-image", headers=_mp_hdr),
    Case("tiff-not-accepted", "image", "/predict/image", _mp_tiff, 422, "invalid-image", headers=_mp_hdr),
    Case("decompression-bomb", "image", "/predict/image", _mp_bomb, 413, "image-too-large", headers=_mp_hdr),
    Case(
        "over-max-pixels", "image", "/predict/image", _mp_big_pixels, 413, "image-too-large", headers=_mp_hdr
    ),
    Case("wrong-field-name", "image", "/predict/image", _mp_other, 422, "missing-file", headers=_mp_hdr),
    Case("two-files", "image", "/predict/image", _mp_two, 422, "invalid-request", headers=_mp_hdr),
    Case(
        "no-boundary",
        "image",
        "/predict/image",
        _mp_ok,
        400,
        "invalid-multipart",
        headers={"Content-Type": "multipart/form-data"},
    ),
    Case(
        "garbage-multipart",
        "image",
        "/predict/image",
        b"garbage\r\n\r\n",
        400,
        "invalid-multipart",
        headers=_mp_hdr,
    ),
    Case(
        "unterminated-multipart",
        "image",
        "/predict/image",
        _mp_ok[:-30],
        400,
        "invalid-multipart",
        headers=_mp_hdr,
    ),
    Case("json-to-upload-route", "image", "/predict/image", b64_body("aGk="), 415, "unsupported-media-type"),
    Case(
        "raw-jpeg-upload",
        "image",
        "/predict/image",
        jpeg_bytes(),
        415,
        "unsupported-media-type",
        headers={"Content-Type": "image/jpeg"},
    ),
    Case(
        "iris-route-on-image", "image", "/predict", _json('{"features":[1,2,3,4]}'), 409, "wrong-model-kind"
    ),
    # -- images: Base64
    Case(
        "invalid-base64",
        "image",
        "/predict/image/base64",
        b64_body("!!!not base64!!!"),
        422,
        "invalid-base64",
    ),
    Case("bad-padding", "image", "/predict/image/base64", b64_body("aGVsbG8"), 422, "invalid-base64"),
    Case(
        "non-image-data-url",
        "image",
        "/predict/image/base64",
        b64_body("data:text/plain;base64," + base64.b64encode(b"hi").decode()),
        422,
        "invalid-base64",
    ),
    Case(
        "data-url-not-base64",
        "image",
        "/predict/image/base64",
        b64_body("data:image/png,abc"),
        422,
        "invalid-base64",
    ),
    Case(
        "base64-of-text",
        "image",
        "/predict/image/base64",
        b64_body(base64.b64encode(b"hello").decode()),
        422,
        "invalid-image",
    ),
    Case(
        "base64-bomb",
        "image",
        "/predict/image/base64",
        b64_body(base64.b64encode(png_bomb()).decode()),
        413,
        "image-too-large",
    ),
    Case("empty-image-string", "image", "/predict/image/base64", b64_body(""), 422, "invalid-image"),
    Case("image-not-string", "image", "/predict/image/base64", b64_body(123), 422, "invalid-request"),
    Case(
        "missing-image-key", "image", "/predict/image/base64", _json('{"img":"aGk="}'), 422, "invalid-request"
    ),
    Case(
        "extra-key-b64",
        "image",
        "/predict/image/base64",
        _json('{"image":"aGk=","x":1}'),
        422,
        "invalid-request",
    ),
    Case("b64-not-json", "image", "/predict/image/base64", b"image=abc", 400, "invalid-json"),
    Case("b64-nan", "image", "/predict/image/base64", _json('{"image":NaN}'), 400, "invalid-json"),
]


def send(client: httpx.Client, case: Case) -> httpx.Response:
    content = case.body
    if case.chunked and content is not None:
        data = content
        content = iter([data[i : i + 16384] for i in range(0, len(data), 16384)])  # no Content-Length
    return client.request(case.method, case.path, content=content, headers=case.headers)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(servers: dict[tuple[str, str], str], case: Case) -> None:
    bodies = {}
    for fw in FRAMEWORKS:
        with httpx.Client(base_url=servers[(fw, case.kind)], timeout=30) as client:
            r = send(client, case)
        assert r.status_code == case.status, f"{fw}: {r.status_code} {r.text[:300]}"
        assert r.headers["content-type"].startswith("application/json"), fw
        body = r.json()
        assert set(body) == {"error", "detail"}, body
        assert body["error"] == case.code, f"{fw}: {body}"
        assert isinstance(body["detail"], str) and len(body["detail"]) > 10
        if case.status == 405:
            assert r.headers.get("allow"), f"{fw}: a 405 names the allowed methods"
        bodies[fw] = (body, r.headers.get("allow"))
    assert bodies["flask"] == bodies["fastapi"], "both frameworks must answer identically"


def test_limits_are_named_in_the_detail(servers: dict[tuple[str, str], str]) -> None:
    for key, case_id, words in [
        (("flask", "image"), "over-max-pixels", ("max_pixels", "1200x1000", "1000000")),
        (("fastapi", "image"), "decompression-bomb", ("max_pixels",)),
        (("fastapi", "tabular"), "over-max-body", ("max_body_bytes", str(LIMITS.max_body_bytes))),
        (("flask", "tabular"), "batch-over-max", ("at most 8",)),
    ]:
        case = next(c for c in CASES if c.id == case_id)
        with httpx.Client(base_url=servers[key], timeout=30) as client:
            detail = send(client, case).json()["detail"]
        for word in words:
            assert word in detail, (case_id, detail)


def test_valid_requests_still_work_and_nothing_reached_the_catch_all(
    servers: dict[tuple[str, str], str],
) -> None:
    """Sends the whole bad-input matrix to every server itself (not relying on the matrix test having run),
    then: each server is alive, answers a good request, and its own count of requests that reached the
    catch-all handler is still 0."""
    for (fw, kind), url in servers.items():
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/health").json()["internal_errors"] == 0, f"{fw}/{kind} before the matrix"
            statuses: dict[str, int] = {}
            for case in (c for c in CASES if c.kind == kind):
                with httpx.Client(base_url=url, timeout=30) as one:  # a fresh connection, as in the matrix
                    statuses[case.id] = send(one, case).status_code
            assert statuses and all(400 <= code < 500 for code in statuses.values()), (fw, kind, statuses)
            if kind == "tabular":
                ok = client.post("/predict", json={"features": OK_ROW})
            else:
                ok = client.post("/predict/image", content=_mp_ok, headers=_mp_hdr)
            assert ok.status_code == 200, f"{fw}/{kind}: {ok.text[:200]}"
            health = client.get("/health").json()
            assert health["status"] == "ok", health
            assert health["internal_errors"] == 0, f"{fw}/{kind} reached the catch-all handler"


def test_image_at_the_pixel_limit_is_accepted(servers: dict[tuple[str, str], str]) -> None:
    body, headers = multipart([("file", png_bytes(1000, 1000, solid=True))])  # exactly max_pixels
    for fw in FRAMEWORKS:
        r = httpx.post(servers[(fw, "image")] + "/predict/image", content=body, headers=headers, timeout=60)
        assert r.status_code == 200, f"{fw}: {r.text[:200]}"
