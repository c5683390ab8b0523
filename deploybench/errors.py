"""Errors shared by every command. A UsageError becomes a one-line message and exit code 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user (arguments, files, configs): message on stderr, exit code 2."""


class TargetError(RuntimeError):
    """A target server failed to start, became unhealthy or died."""
