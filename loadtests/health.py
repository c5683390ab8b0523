"""Health-only scenario: GET /health, to measure framework + server + harness overhead without a model.

locust -f loadtests/health.py --host http://127.0.0.1:8000
"""

from __future__ import annotations

from locust import task

from deploybench.loadtests.common import DeployBenchUser, register

PLUGIN = register()  # deploybench's options and measurement hooks on Locust's events


class HealthUser(DeployBenchUser):
    scenario = "health"

    @task
    def health(self) -> None:
        self.send("GET", "/health", name="/health")
