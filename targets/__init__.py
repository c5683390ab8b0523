"""Deployment targets: the model zoo (models, formats, predictors) and the servers that host them."""
