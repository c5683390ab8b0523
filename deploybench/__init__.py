"""deploybench: which way to deploy a model, measured with real servers and real load."""

__version__ = "0.1.0"
