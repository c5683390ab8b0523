"""gunicorn settings module of a target serving ``/metrics`` (``gunicorn -c
python:deploybench.targets.gunicorn_conf``, added by ``deploybench.targets.serve.server_command`` with
``--metrics``). gunicorn reads every module-level name that is one of its settings, so this module holds
only the hook: keep other names out of it.

``child_exit`` runs in the gunicorn master when a worker has exited: it removes the dead worker's live gauges
(``deploybench_http_requests_in_flight``, multiprocess mode ``livesum``) from ``PROMETHEUS_MULTIPROC_DIR``,
so a worker killed mid-request does not leave its in-flight count behind."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
