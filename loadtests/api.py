"""Your own endpoint: one request (method + path + optional bodies) sent over and over, measured exactly.

    locust -f loadtests/api.py --host https://my-model.example --path /v1/predict \\
        --payload requests.jsonl --header 'Authorization: Bearer TOKEN' --headless -u 4 -t 30s --duration 20

``--payload`` is a JSON lines file (one request body per line, sent as application/json, cycled in order) or
a folder of images (each sent as a multipart upload in ``--multipart-field``, default ``file``, cycled in
name order). Without ``--payload`` the request has no body (and ``--method`` defaults to GET; with one, to
POST). Bad input (a line that is not JSON, an empty folder, a header without a colon) stops the run before
the first request, exit code 2, naming the file and line. ``deploybench load --url URL --path ...`` runs this
scenario headless and checks the URL answers first.

For several endpoints, custom logic or per-request payloads, write your own locustfile with a
``deploybench.loadtests.user.DeployBenchUser`` subclass (README, "Load-test your own API").
"""

from __future__ import annotations

import functools
import itertools
import sys
from typing import Any

from locust import events, task

from deploybench.errors import UsageError
from deploybench.loadtests.common import DeployBenchUser, register
from deploybench.loadtests.payloads import RequestSpec, request_spec

PLUGIN = register()  # deploybench's options and measurement hooks on Locust's events


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument("--path", default="/", help="request path appended to --host, e.g. /v1/predict?x=1")
    parser.add_argument("--method", default="", help="HTTP method (default: POST with --payload, else GET)")
    parser.add_argument(
        "--payload",
        default="",
        help="a JSON lines file (one request body per line) or a folder of images (multipart uploads); "
        "cycled in order",
    )
    parser.add_argument("--multipart-field", default="file", help="form field of the image uploads")


# Validated and read once per process: every user shares the bodies.
_request_spec = functools.lru_cache(maxsize=4)(request_spec)


def spec_from(parsed: Any) -> RequestSpec:
    g = lambda name, default: str(getattr(parsed, name, default) or default)  # noqa: E731
    return _request_spec(g("method", ""), g("path", "/"), g("payload", ""), g("multipart_field", "file"))


@events.init.add_listener
def _validate(environment: Any, **_kw: Any) -> None:
    parsed = environment.parsed_options
    if parsed is None or getattr(parsed, "worker", False):
        return
    try:
        spec_from(parsed)
    except UsageError as exc:
        print(f"deploybench: error: {exc}", file=sys.stderr)
        sys.exit(2)


_NEXT = itertools.count()  # one sequence per process: the bodies go out in order, whatever the user


class ApiUser(DeployBenchUser):
    scenario = "api"

    def on_start(self) -> None:
        self.spec = spec_from(self.environment.parsed_options)

    @task
    def call(self) -> None:
        spec = self.spec
        if spec.payloads is None:
            self.send(spec.method, spec.path, name=spec.path)
            return
        i = next(_NEXT) % len(spec.payloads.bodies)
        self.send(spec.method, spec.path, data=spec.payloads.bodies[i],
                  headers={"Content-Type": spec.payloads.content_types[i]}, name=spec.path)  # fmt: skip
