"""Argument types shared by the commands: the core's parsers, with argparse's error type."""

from __future__ import annotations

import argparse

from deploybench.io import parse_cpu_list, parse_csv, parse_host_port


def csv_list(text: str) -> list[str]:
    """A non-empty comma-separated list."""
    items = parse_csv(text)
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def csv_ints(text: str) -> list[int]:
    """A non-empty comma-separated list of integers."""
    try:
        return [int(t) for t in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def cpu_list(text: str) -> list[int]:
    """CPU ids like ``0,2-3`` (``deploybench.io.parse_cpu_list``)."""
    try:
        return parse_cpu_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5557`` for IPv6) -> (host, port); port 0 = any free one
    (``deploybench.io.parse_host_port``)."""
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
