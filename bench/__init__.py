"""In-process micro-benchmarks (pytest-benchmark) and the ``deploybench bench`` command that runs them."""
