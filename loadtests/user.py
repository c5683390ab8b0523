"""The base class for your own Locust scenario, with deploybench's exact measurement.

Subclass :class:`DeployBenchUser` in your locustfile and send every request with ``self.send(...)``::

    # my_api.py
    from locust import task

    from deploybench.loadtests.user import DeployBenchUser


    class MyApiUser(DeployBenchUser):
        scenario = "my-api"  # the record's scenario name

        @task(3)
        def predict(self) -> None:
            self.send("POST", "/v1/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}, name="/v1/predict")

        @task(1)
        def health(self) -> None:
            self.send("GET", "/health", name="/health")

Then ``deploybench load --url URL --locustfile my_api.py --duration 20`` (or ``locust -f my_api.py --host URL
--headless -u 8 -t 40s --duration 20``). What you get, as with the built-in scenarios: every request in an
HdrHistogram per endpoint (µs, the ``name=`` label), Server-Timing components when the server sends them,
``--load-model constant|poisson --rate R`` open-loop pacing with coordinated-omission correction (``send``
waits for the request's slot), warm-up/duration windows, ``--header`` on every request, generator CPU
warnings, master/worker merging, and one run record. ``self.send`` takes FastHttpUser's ``client.request``
keyword arguments (``json=``, ``data=``, ``headers=``, ``name=``, ``catch_response=``...).
"""

from __future__ import annotations

from deploybench.loadtests.common import DeployBenchUser, register

PLUGIN = register()  # deploybench's options and measurement hooks on Locust's events

__all__ = ["PLUGIN", "DeployBenchUser"]
