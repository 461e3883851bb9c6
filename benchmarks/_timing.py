"""The timing loop of all benchmark scripts: medians of synchronized runs (one callable, or two
alternated)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(
    fn: Callable[[], T], repeat: int, device: torch.device | None = None
) -> tuple[float, T]:
    """Median seconds of ``repeat`` runs of ``fn`` (no warm-up), and its last output."""
    times, out = [], None
    for _ in range(repeat):
        t, out = timed(fn, device)
        times.append(t)
    return statistics.median(times), out  # type: ignore[return-value]


def timed(fn: Callable[[], T], device: torch.device | None = None) -> tuple[float, T]:
    """Seconds of one synchronized run of ``fn``, and its output."""
    device = torch.device("cpu") if device is None else device
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def time_pair(
    fns: tuple[Callable[[], object], Callable[[], object]], repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median seconds of each of two callables, run alternately so drift hits both alike."""
    for fn in fns:  # warm-up (allocator, LAPACK workspaces, CUDA handles)
        fn()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, acc in zip(fns, times, strict=True):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            acc.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])
