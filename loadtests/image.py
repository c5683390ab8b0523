"""Image scenario: POST /predict/image (multipart field "file") and POST /predict/image/base64
(JSON data URL), mixed by weight.

    locust -f loadtests/image.py --host http://127.0.0.1:8000 [--payload-mix multipart=3,base64=1]
        [--image-size 640x480] [--image-format jpeg|png] [--image-count 4]

Images are generated at start-up (seeded smooth gradients + noise, so JPEG sizes are realistic); nothing is
downloaded.
"""

from __future__ import annotations

import sys
from typing import Any

from locust import events, task

from deploybench.errors import UsageError
from deploybench.loadtests.common import DeployBenchUser, register
from deploybench.loadtests.payloads import (
    BOUNDARY,
    KINDS,
    base64_body,
    make_images,
    multipart_body,
    parse_mix,
    parse_size,
    payload_rng,
)

PLUGIN = register()  # deploybench's options and measurement hooks on Locust's events


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    parser.add_argument(
        "--payload-mix",
        default="multipart=1,base64=1",
        help="weights of the two image endpoints, e.g. multipart=3,base64=1 or multipart=1",
    )
    parser.add_argument("--image-size", default="224x224", help="WIDTHxHEIGHT of the generated images")
    parser.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--image-count", type=int, default=4, help="distinct images to cycle through")


@events.init.add_listener
def _validate(environment: Any, **_kw: Any) -> None:
    parsed = environment.parsed_options
    if parsed is None or getattr(parsed, "worker", False):
        return
    try:
        parse_mix(getattr(parsed, "payload_mix", "multipart=1,base64=1"))
        parse_size(getattr(parsed, "image_size", "224x224"))
    except UsageError as exc:
        print(f"deploybench: error: {exc}", file=sys.stderr)
        sys.exit(2)


class ImageUser(DeployBenchUser):
    scenario = "image"

    def on_start(self) -> None:
        parsed = self.environment.parsed_options
        mix = parse_mix(getattr(parsed, "payload_mix", "multipart=1,base64=1"))
        size = parse_size(getattr(parsed, "image_size", "224x224"))
        fmt = getattr(parsed, "image_format", "jpeg") or "jpeg"
        count = max(1, int(getattr(parsed, "image_count", 4) or 4))
        seed = int(getattr(parsed, "seed", 0) or 0)
        images = make_images(size, fmt, count, seed)
        self.kinds = [k for k, w in mix.items() if w > 0]
        self.weights = [mix[k] for k in self.kinds]
        self.bodies = {
            "multipart": [multipart_body(b, fmt) for b in images],
            "base64": [base64_body(b, fmt) for b in images],
        }
        self.rng = payload_rng(seed, *PLUGIN.next_user_stream())
        self.i = 0

    @task
    def predict_image(self) -> None:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        body = self.bodies[kind][self.i % len(self.bodies[kind])]
        self.i += 1
        if kind == "multipart":
            headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        else:
            headers = {"Content-Type": "application/json"}
        self.send("POST", KINDS[kind], data=body, headers=headers, name=KINDS[kind])
