"""Locust load tests with exact (HdrHistogram, µs) and coordinated-omission-corrected measurement.

Scenario files for ``locust -f``: ``tabular.py`` (iris JSON), ``image.py`` (multipart + Base64 images),
``health.py`` (GET /health: framework + harness overhead). ``runner.py`` is the headless runner behind
``deploybench load`` (its arguments: ``deploybench.commands.load``).
"""
